"""Overlapping segments: the control that isolates what HMT's sensory memory alone buys.

Each segment also sees the previous segment's last k tokens as context, ``[sensory k | segment S]``
with S = L - k, exactly as HMT's sensory memory places them, but nothing else passes between
segments: no memory token, no summary, no recall, no added parameters. The sensory positions are
context only (never scored twice). Against HMT at the same k and L, the difference is what the
memory adds; against plain, what the k overlapping tokens add.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MethodConfig, SegmentMethod, trained_field
from hmtbench.methods.state import MemoryState


@dataclass
class OverlapConfig(MethodConfig):
    sensory_tokens: int = trained_field(32, "k: tokens of the previous segment seen again before each segment's "
                                        "text (HMT's recipes use 32)")

    def __post_init__(self) -> None:
        if self.sensory_tokens < 1:
            raise HmtbenchError(f"--sensory-tokens must be at least 1 for overlap, got {self.sensory_tokens}")


@dataclass(frozen=True)
class OverlapState(MemoryState):
    sensory_ids: Tensor | None = None  # (B, k) last k token ids of the previous segment


class Overlap(SegmentMethod):
    """The backbone on segments that overlap by k tokens of context; no memory."""

    name = "overlap"
    label = "overlap"
    config_class = OverlapConfig
    state_reach = 1

    @property
    def sensory_tokens(self) -> int:
        return self.config.sensory_tokens

    def initial_state(self, batch_size: int) -> OverlapState:
        return OverlapState(batch_size)

    def read_memory(self, state: OverlapState, summary: Tensor | None) -> tuple[None, None]:
        return None, None

    def read_sensory(self, state: OverlapState) -> Tensor | None:
        return state.sensory_ids

    def next_state(
        self, state: OverlapState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> OverlapState:
        return OverlapState(state.batch_size, sensory_ids=segment_ids[:, segment_ids.shape[1] - self.sensory_tokens :])
