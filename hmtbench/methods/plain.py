"""The backbone alone: disjoint segments with no memory (``plain``), or one segment (``full``)."""

from __future__ import annotations

from typing import Any

from hmtbench.methods.base import MethodConfig, SegmentMethod


class Plain(SegmentMethod):
    """The backbone run on disjoint segments of L tokens; nothing passes between segments."""

    name = "plain"


class FullContext(Plain):
    """The backbone reading the whole document in one forward (``segment_length`` = test length)."""

    name = "full"

    @classmethod
    def settings_for(cls, settings: dict[str, Any], test_length: int) -> dict[str, Any]:
        return {**settings, "segment_length": test_length}


__all__ = ["FullContext", "MethodConfig", "Plain"]
