"""The backbone alone: disjoint segments with no memory (``plain``), or one segment (``full``)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod


@dataclass
class PlainConfig(MethodConfig):
    pass


@dataclass
class FullConfig(MethodConfig):
    pass


class Plain(SegmentMethod):
    """The backbone run on disjoint segments of L tokens; nothing passes between segments."""

    name = "plain"
    label = "plain"
    config_class = PlainConfig
    state_reach = 0

    def initial_state(self, batch_size: int) -> MemoryState:
        return MemoryState(batch_size)

    def read_memory(self, state: MemoryState, summary: Tensor | None) -> tuple[None, None]:
        return None, None

    def next_state(
        self, state: MemoryState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> MemoryState:
        return state


class FullContext(Plain):
    """The backbone reading the whole document in one forward (segment length = the document's length)."""

    name = "full"
    label = "full"
    config_class = FullConfig
    reads_whole_document = True
    strong_baseline = True


__all__ = ["FullConfig", "FullContext", "Plain", "PlainConfig"]
