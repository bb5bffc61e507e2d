"""What a method carries from one segment to the next: the memory, the sensory ids, HMT's recall cache."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class RecallCache:
    """Ring buffer of the last N memory embeddings, on the model's device.

    Shapes are static (N slots) and ``count`` (memories written so far) is a 0-d tensor on the
    same device, so the segment loop never syncs with the host and a captured CUDA graph can
    advance it. Writes are out of place, so gradients flow through cached memories in training.
    """

    values: Tensor  # (B, N, d) memory embeddings M_j
    keys: Tensor  # (B, N, h) wk(M_j), projected once when written
    count: Tensor  # () int64: memories written so far

    @property
    def capacity(self) -> int:
        return self.values.shape[1]

    @property
    def valid(self) -> Tensor:
        """(N,) bool: slots that hold a memory."""
        return torch.arange(self.capacity, device=self.values.device) < self.count

    def write(self, value: Tensor, key: Tensor) -> RecallCache:
        """Store value (B, d) and key (B, h) in the oldest slot."""
        slot = (self.count % self.capacity).view(1)
        return RecallCache(
            values=self.values.index_copy(1, slot, value[:, None].to(self.values.dtype)),
            keys=self.keys.index_copy(1, slot, key[:, None].to(self.keys.dtype)),
            count=self.count + 1,
        )

    def detach(self) -> RecallCache:
        return RecallCache(self.values.detach(), self.keys.detach(), self.count)


@dataclass(frozen=True)
class MemoryState:
    """Everything a method carries from one segment to the next (all tensors on the model's device)."""

    batch_size: int
    memory: Tensor | None = None  # (B, m, d) memory written by the previous segment
    sensory_ids: Tensor | None = None  # (B, k) last k token ids of the previous segment
    cache: RecallCache | None = None
    summary: Tensor | None = None  # (B, d) HMT: the next segment's summary, when this step's backbone call made it
    segments_read: int = 0

    def detach(self) -> MemoryState:
        """The same state cut from the autograd graph (truncated BPTT)."""
        return replace(
            self,
            memory=None if self.memory is None else self.memory.detach(),
            cache=None if self.cache is None else self.cache.detach(),
            summary=None if self.summary is None else self.summary.detach(),
        )

    def tensors(self) -> tuple[Tensor | None, ...]:
        """(memory, sensory ids, cache values, keys and count, summary): the state's tensors, None where absent."""
        cache = self.cache
        stored = (None, None, None) if cache is None else (cache.values, cache.keys, cache.count)
        return (self.memory, self.sensory_ids, *stored, self.summary)

    @classmethod
    def from_tensors(cls, batch_size: int, tensors: tuple[Tensor | None, ...], segments_read: int = 0) -> MemoryState:
        """The state ``tensors()`` came from."""
        memory, sensory_ids, values, keys, count, summary = tensors
        cache = None if values is None else RecallCache(values, keys, count)
        return cls(batch_size, memory, sensory_ids, cache, summary, segments_read)
