"""HMT's long-term memory recall: one cross-attention over the cache of past memory embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from hmtbench.methods.cache_policy import empty_cache, slot_to_write
from hmtbench.methods.choice import chosen
from hmtbench.methods.state import RecallCache


class MemoryRecall(nn.Module):
    """softmax(wq(summary) . wk(M_j) / sqrt(h)) over the cached M_j; the values are the raw M_j.

    No value or output projection, no heads, no residual: the recalled memory is a convex
    combination of cached memories (docs/methods.md, "HMT"). Scores in the parameters' dtype, softmax in fp32,
    and the same 1/sqrt(h) scale in training and generation (docs/methods.md, "Departures", 4 and 5).
    ``choice: hard`` recalls, outside training (no gradients), the heaviest cached memory alone.
    """

    def __init__(self, hidden_size: int, recall_dim: int, *, dtype: torch.dtype, device: torch.device,
                 choice: str = "soft", policy: str = "fifo") -> None:
        super().__init__()
        self.recall_dim = recall_dim
        self.choice = choice
        self.policy = policy  # which memory a full cache drops (hmtbench.methods.cache_policy)
        self.wq = nn.Linear(hidden_size, recall_dim, bias=False, dtype=dtype, device=device)
        self.wk = nn.Linear(hidden_size, recall_dim, bias=False, dtype=dtype, device=device)

    def empty_cache(self, batch_size: int, capacity: int, memory_like: Tensor) -> RecallCache:
        """An empty cache of ``capacity`` slots for (B, m, d) memories, on the memory's device."""
        return empty_cache(batch_size, capacity, memory_like[0].numel(), self.recall_dim, self.policy,
                           value_like=memory_like, key_like=self.wk.weight)

    def remember(self, cache: RecallCache, memory: Tensor) -> RecallCache:
        """Store one memory (B, m, d); a full cache drops the memory its policy picks (the oldest by default).

        Its key is wk of its mean over the m slots (the paper's wk(M_j) for its one slot).
        """
        value = memory.flatten(1)
        slot = None if self.policy == "fifo" else slot_to_write(cache, self.policy, value)
        return cache.write(value, self.wk(memory.mean(1).to(self.wk.weight.dtype)), slot)

    def forward(self, summary: Tensor, cache: RecallCache) -> tuple[Tensor, Tensor]:
        """Recall for a (B, d) summary: the (B, m * d) recalled memory and the (B, N) weights (sum 1)."""
        weights = chosen(self.scores(summary, cache).softmax(dim=-1), self.choice)  # (B, N), fp32
        return self.read(weights, cache), weights

    def scores(self, summary: Tensor, cache: RecallCache) -> Tensor:
        """(B, N) fp32 recall scores of a (B, d) summary over the cache slots; -inf at empty slots."""
        query = self.wq(summary.to(self.wq.weight.dtype))  # (B, h)
        scores = torch.einsum("bh,bnh->bn", query, cache.keys).float() / math.sqrt(self.recall_dim)
        return scores.masked_fill(~cache.valid, float("-inf"))

    @staticmethod
    def read(weights: Tensor, cache: RecallCache) -> Tensor:
        """The (B, m * d) memory that (B, N) weights over the cache slots recall."""
        return torch.einsum("bn,bnd->bd", weights.to(cache.values.dtype), cache.values)
