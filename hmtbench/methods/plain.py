"""The backbone alone: disjoint segments with no memory (``plain``), or one segment (``full``)."""

from __future__ import annotations

from dataclasses import dataclass

from hmtbench.methods.base import MethodConfig, SegmentMethod


@dataclass
class PlainConfig(MethodConfig):
    name = "plain"


@dataclass
class FullConfig(MethodConfig):
    name = "full"


class Plain(SegmentMethod):
    """The backbone run on disjoint segments of L tokens; nothing passes between segments."""

    name = "plain"
    label = "plain"
    config_class = PlainConfig
    state_reach = 0


class FullContext(Plain):
    """The backbone reading the whole document in one forward (segment length = the document's length)."""

    name = "full"
    label = "full"
    config_class = FullConfig
    reads_whole_document = True


__all__ = ["FullConfig", "FullContext", "Plain", "PlainConfig"]
