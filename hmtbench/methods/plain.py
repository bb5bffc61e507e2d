"""The backbone alone: disjoint segments with no memory (``plain``), or one segment (``full``)."""

from __future__ import annotations

from typing import Any

from torch import nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MethodConfig, SegmentMethod, max_positions


class Plain(SegmentMethod):
    """The backbone run on disjoint segments of L tokens; nothing passes between segments."""

    name = "plain"
    label = "plain"


class FullContext(Plain):
    """The backbone reading the whole document in one forward (``segment_length`` = test length)."""

    name = "full"
    label = "full"

    def __init__(self, backbone: nn.Module, config: MethodConfig) -> None:
        limit = max_positions(backbone.config)
        if limit is not None and config.segment_length > limit:  # the flag to change is --test-length here
            raise HmtbenchError(
                f"--method full reads each document in one forward, but --test-length {config.segment_length} "
                f"exceeds the backbone's maximum of {limit} positions; use --test-length {limit} or less"
            )
        super().__init__(backbone, config)

    @classmethod
    def settings_for(cls, settings: dict[str, Any], test_length: int) -> dict[str, Any]:
        return {**settings, "segment_length": test_length}


__all__ = ["FullContext", "MethodConfig", "Plain"]
