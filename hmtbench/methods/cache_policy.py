"""Which memory HMT's full recall cache drops for a new one (``method.cache_policy``; docs/methods.md, "HMT",
departure 15).

* ``fifo``: the oldest (the paper's ring buffer): recall reaches back exactly N segments.
* ``recall``: the memory recall has weighted least. Every read raises each slot's score to the weight the read gave
  it (``RecallCache.noted``), so the score is the highest weight the memory has had; the lowest score goes, and of
  equal scores the oldest. A memory that recall once picked stays however old it gets.
* ``distinct``: the memory most like the one written after it (cosine similarity of the memories; the newest cached
  one is compared with the incoming one): of two neighbours that say the same (filler), the older goes, and a memory
  unlike its neighbours (a fact among filler) stays. Of equal similarities the oldest goes.

Every choice is arithmetic on the device (min, sort, gather, argmax): no read-back to the host and no shape that
depends on the data, so a segment step stays capturable in a CUDA graph; ties are broken by age, so the eviction
sequence is a function of the memories and weights alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from hmtbench.errors import HmtbenchError
from hmtbench.methods.state import RecallCache

CACHE_POLICIES = ("fifo", "recall", "distinct")


def check_cache_policy(policy: str) -> None:
    if policy not in CACHE_POLICIES:
        raise HmtbenchError(f"method.cache_policy must be one of {', '.join(CACHE_POLICIES)}, got '{policy}'")


def empty_cache(batch_size: int, capacity: int, value_size: int, key_size: int, policy: str, *,
                value_like: Tensor, key_like: Tensor) -> RecallCache:
    """An empty cache of ``capacity`` slots, with the bookkeeping ``policy`` needs (none for fifo)."""
    values = value_like.new_zeros(batch_size, capacity, value_size)
    keys = key_like.new_zeros(batch_size, capacity, key_size).to(values.device)
    count = torch.zeros(batch_size, dtype=torch.long, device=values.device)
    if policy == "fifo":
        return RecallCache(values=values, keys=keys, count=count)
    written_at = torch.full((batch_size, capacity), -1, dtype=torch.long, device=values.device)
    scores = torch.zeros(batch_size, capacity, device=values.device) if policy == "recall" else None
    return RecallCache(values=values, keys=keys, count=count, written_at=written_at, scores=scores)


def slot_to_write(cache: RecallCache, policy: str, value: Tensor) -> Tensor:
    """(B,) the slot each row stores its new memory ``value`` (B, D) in: the next empty one while the row's cache
    fills, then the one ``policy`` evicts."""
    if policy == "fifo":
        return cache.count % cache.capacity
    evicted = least_recalled(cache) if policy == "recall" else most_like_the_next(cache, value)
    return torch.where(cache.count < cache.capacity, cache.count, evicted)


def least_recalled(cache: RecallCache) -> Tensor:
    """(B,) the slot of the lowest score, the oldest of equal ones."""
    lowest = cache.scores == cache.scores.min(-1, keepdim=True).values  # (B, N)
    age = torch.where(lowest, cache.written_at, torch.iinfo(torch.long).max)
    return age.argmin(-1)


def most_like_the_next(cache: RecallCache, value: Tensor) -> Tensor:
    """(B,) the slot whose memory is most like the memory written after it (``value`` after the newest), the
    oldest of equal ones."""
    order = cache.written_at.argsort(-1)  # (B, N) slots, oldest first (a full cache: every write number differs)
    values = cache.values.gather(1, order[..., None].expand_as(cache.values)).float()  # (B, N, D) in write order
    after = torch.cat([values[:, 1:], value[:, None].float()], dim=1)
    similarity = F.cosine_similarity(values, after, dim=-1)  # (B, N)
    return order.gather(1, similarity.argmax(-1, keepdim=True))[:, 0]  # argmax: the first (oldest) of ties
