"""Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev; NeurIPS 2022, arXiv 2207.06881).

Each segment is read as ``[M | segment | M]``: the same memory tensor fills the read slot and
the write slot, and the last-layer hidden states at the write slot become the next segment's
memory. Segment 0 reads a learned memory initialised as ``randn * std(input embeddings)``.
With ``write: span`` (a departure from the paper, ``hmtbench.methods.span_write``) the memory written
is instead a span of the segment's input embeddings chosen by attention, or the memory read kept, and
segment 0 reads an empty (zero) memory.

Two settings reproduce choices of the official code (docs/methods.md, "The official RMT code"):
``write_after: padding`` positions a short row's write slot where the official wrapper's sits in a
right-padded batch, and ``memory_dtype: fp32`` keeps the learned memory in fp32 as the official parameter is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod, setting, trained_field
from hmtbench.methods.memory import add_memory, check_write, write_label


@dataclass
class RMTConfig(MethodConfig):
    memory_tokens: int = trained_field(1, "m: memory positions at each end of the segment")
    write: str = trained_field("state", "What a segment writes: state (the paper's last hidden states) | span (a span "
                                        "of input embeddings)")
    span_choice: str = setting("soft", "write: span: soft (the mixture) | hard (its argmax outside training) | "
                                       "hard-st (also in training)")
    write_after: str = setting("text", "text: each row's write slot right after its last real token | padding: placed "
                                       "after the batch's padded width of the segment, as the official wrapper does")
    memory_dtype: str = setting("backbone", "The learned memory's dtype: backbone | fp32 (the official parameter's; "
                                            "read in the backbone's dtype)")

    def __post_init__(self) -> None:
        if self.memory_tokens < 1:
            raise HmtbenchError(f"--memory-tokens must be at least 1, got {self.memory_tokens}")
        check_write(self.write, self.span_choice)
        if self.write_after not in ("text", "padding"):
            raise HmtbenchError(f"method.write_after must be text or padding, got '{self.write_after}'")
        if self.memory_dtype not in ("backbone", "fp32"):
            raise HmtbenchError(f"method.memory_dtype must be backbone or fp32, got '{self.memory_dtype}'")


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
        dtype = torch.float32 if config.memory_dtype == "fp32" else None
        add_memory(self, config.memory_tokens, config.write, config.span_choice, dtype)

    @property
    def memory_tokens(self) -> int:
        return self.config.memory_tokens

    def record_columns(self) -> dict[str, Any]:
        return {**super().record_columns(), "memory_write": write_label(self.config.write, self.config.span_choice)}

    def initial_state(self, batch_size: int) -> RMTState:
        """Segment 0 reads the learned memory: in the state from the start, so every segment's step looks alike
        (in the backbone's dtype, as every later state)."""
        return RMTState(batch_size, memory=self.memory.to(self.dtype).expand(batch_size, -1, -1))

    def read_memory(self, state: RMTState, summary: Tensor | None) -> tuple[Tensor, None]:
        return state.memory, None

    def layout_positions(self, size: int, write_at: Tensor | None, lengths: Tensor) -> Tensor | None:
        """``write_after: padding``: the write slots, and what follows them, as far on as the batch's padded width
        of this segment (its longest row) puts them: the official wrapper's positions, without its mask (the slots
        sit right after the text either way, so they attend to the same tokens at the same distances)."""
        if self.config.write_after != "padding" or write_at is None:
            return None
        shift = lengths.amax() - lengths  # (B,) this row's padding before the official write slot
        index = torch.arange(size, device=lengths.device)[None]  # (1, size)
        return index + shift[:, None] * (index >= write_at[:, :1])

    def next_state(
        self, state: RMTState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> RMTState:
        return RMTState(state.batch_size, memory=written)
