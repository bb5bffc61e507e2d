"""Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev; NeurIPS 2022, arXiv 2207.06881).

Each segment is read as ``[M | segment | M]``: the same memory tensor fills the read slot and
the write slot, and the last-layer hidden states at the write slot become the next segment's
memory. Segment 0 reads a learned memory initialised as ``randn * std(input embeddings)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod, trained_field


@dataclass
class RMTConfig(MethodConfig):
    name = "rmt"
    memory_tokens: int = trained_field(1)  # m: memory positions at each end of the segment

    def __post_init__(self) -> None:
        if self.memory_tokens < 1:
            raise HmtbenchError(f"--memory-tokens must be at least 1, got {self.memory_tokens}")


def init_memory(backbone: nn.Module, rows: int) -> nn.Parameter:
    """(rows, d) learned vectors scaled like the backbone's input embeddings (as both references do)."""
    weight = backbone.get_input_embeddings().weight
    values = torch.randn(rows, weight.shape[1], dtype=torch.float32)
    values = values * weight.detach().float().std().item()  # drawn on the CPU: same values on every device
    return nn.Parameter(values.to(device=weight.device, dtype=weight.dtype))


@dataclass(frozen=True)
class RMTState(MemoryState):
    memory: Tensor  # (B, m, d) what the next segment reads: the previous segment's write (learned at first)


class RMT(SegmentMethod):
    """Memory tokens read and written around each segment, passed on recurrently."""

    name = "rmt"
    label = "RMT"
    config_class = RMTConfig

    def __init__(self, backbone: nn.Module, config: RMTConfig, segment_length: int) -> None:
        super().__init__(backbone, config, segment_length)
        self.memory = init_memory(backbone, config.memory_tokens)

    @property
    def memory_tokens(self) -> int:
        return self.config.memory_tokens

    def initial_state(self, batch_size: int) -> RMTState:
        """Segment 0 reads the learned memory: in the state from the start, so every segment's step looks alike."""
        return RMTState(batch_size, memory=self.memory.expand(batch_size, -1, -1))

    def read_memory(self, state: RMTState, summary: Tensor | None) -> tuple[Tensor, None]:
        return state.memory, None

    def next_state(
        self, state: RMTState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None
    ) -> RMTState:
        return RMTState(state.batch_size, memory=written)
