"""The backbone alone: disjoint segments with no memory (``plain``), or one segment (``full``)."""

from __future__ import annotations

from hmtbench.methods.base import MethodConfig, SegmentMethod


class Plain(SegmentMethod):
    """The backbone run on disjoint segments of L tokens; nothing passes between segments."""

    name = "plain"


class FullContext(Plain):
    """The backbone reading the whole document in one forward (``segment_length`` = test length)."""

    name = "full"


__all__ = ["FullContext", "MethodConfig", "Plain"]
