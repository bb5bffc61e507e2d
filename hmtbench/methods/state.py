"""What a method carries from one segment to the next, declared by the method as a frozen dataclass.

The engine, the fast path (CUDA graphs) and truncated BPTT never name a state's fields: they see
its tensors through ``flatten`` / ``unflatten`` (a layout spec plus the tensors in field order,
nested states included), so a new method adds fields to its own state class and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Layout = tuple  # hashable description of a state's structure, with a slot for each tensor


@dataclass(frozen=True)
class MemoryState:
    """The state of a method that carries nothing (plain). Subclasses add fields holding tensors
    (``Tensor | None``), nested states, or plain values (which are part of the layout)."""

    batch_size: int

    def detach(self) -> MemoryState:
        """The same state cut from the autograd graph (truncated BPTT)."""
        layout, tensors = flatten(self)
        return unflatten(layout, [t.detach() for t in tensors])


def select_rows(state: MemoryState, rows: Tensor) -> MemoryState:
    """The state of the batch rows ``rows`` (R,) alone: every tensor indexed on its batch dimension (a copy)."""
    layout, tensors = flatten(state)
    return _with_batch_size(unflatten(layout, [t[rows] for t in tensors]), len(rows))


def concat_rows(states: list[MemoryState]) -> MemoryState:
    """One state holding the rows of ``states`` in order; they must share a layout (the same fields set)."""
    layouts = [flatten(_with_batch_size(s, 0))[0] for s in states]
    if any(layout != layouts[0] for layout in layouts[1:]):
        raise ValueError("states with different layouts cannot share a batch")
    parts = [flatten(s)[1] for s in states]
    tensors = [torch.cat(column) for column in zip(*parts, strict=True)]
    return _with_batch_size(unflatten(flatten(states[0])[0], tensors), sum(s.batch_size for s in states))


def _with_batch_size(value: Any, batch_size: int) -> Any:
    """``value`` with every nested state's ``batch_size`` set (the field is part of a state's layout)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {f.name: _with_batch_size(getattr(value, f.name), batch_size) for f in dataclasses.fields(value)}
    if isinstance(value, MemoryState):
        changes["batch_size"] = batch_size
    return dataclasses.replace(value, **changes)


def flatten(value: Any) -> tuple[Layout, list[Tensor]]:
    """A (nested) state as (layout, tensors): ``unflatten`` of the two gives it back."""
    if isinstance(value, Tensor):
        return ("tensor",), [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts, tensors = [], []
        for field in dataclasses.fields(value):
            layout, inner = flatten(getattr(value, field.name))
            parts.append((field.name, layout))
            tensors += inner
        return ("state", type(value), tuple(parts)), tensors
    return ("value", value), []


def unflatten(layout: Layout, tensors: list[Tensor]) -> Any:
    """The state ``flatten`` described, with ``tensors`` in its slots (in order)."""
    rest = iter(tensors)
    value = _build(layout, rest)
    if next(rest, None) is not None:
        raise ValueError("more tensors than the layout has slots")
    return value


def _build(layout: Layout, tensors: Any) -> Any:
    kind = layout[0]
    if kind == "tensor":
        return next(tensors)
    if kind == "value":
        return layout[1]
    cls, parts = layout[1], layout[2]
    return cls(**{name: _build(part, tensors) for name, part in parts})


@dataclass(frozen=True)
class RecallCache:
    """Bounded store of N memory embeddings, on the model's device: the last N (a ring buffer, the paper's), or
    those a cache policy keeps (``hmtbench.methods.cache_policy``).

    Shapes are static (N slots) and ``count`` (memories written so far, per row) is a tensor on the
    same device, so the segment loop never syncs with the host and a captured CUDA graph can
    advance it. Each row counts its own memories, so rows that read different numbers of segments
    can share a batch (batched decoding gathers rows from different segment steps). Writes are out
    of place, so gradients flow through cached memories in training. Slots fill in order, so the
    first ``count`` slots hold memories until the cache is full, whatever the policy.
    """

    values: Tensor  # (B, N, d) memory embeddings M_j
    keys: Tensor  # (B, N, h) wk(M_j), projected once when written
    count: Tensor  # (B,) int64: memories written so far in each row
    written_at: Tensor | None = None  # (B, N) int64: the write number of each slot's memory, -1 empty (policies only)
    scores: Tensor | None = None  # (B, N) fp32: the highest recall weight each slot's memory has had (policy recall)

    @property
    def capacity(self) -> int:
        return self.values.shape[1]

    @property
    def valid(self) -> Tensor:
        """(B, N) bool: slots that hold a memory."""
        return torch.arange(self.capacity, device=self.values.device)[None] < self.count[:, None]

    def write(self, value: Tensor, key: Tensor, slot: Tensor | None = None) -> RecallCache:
        """Store value (B, d) and key (B, h) in each row's ``slot`` (B,); by default its oldest (first in first out)."""
        if slot is None:
            slot = self.count % self.capacity
        column = slot[:, None]  # (B, 1)

        def stored(slots: Tensor, new: Tensor) -> Tensor:
            return slots.scatter(1, column[..., None].expand(-1, 1, slots.shape[-1]), new[:, None].to(slots.dtype))

        written_at = None if self.written_at is None else self.written_at.scatter(1, column, self.count[:, None])
        scores = None if self.scores is None else self.scores.scatter(1, column, 0.0)
        return RecallCache(values=stored(self.values, value), keys=stored(self.keys, key), count=self.count + 1,
                           written_at=written_at, scores=scores)

    def noted(self, weights: Tensor) -> RecallCache:
        """The cache with each slot's score raised to the (B, N) recall weights a read just gave it (no-op without
        scores)."""
        if self.scores is None:
            return self
        return dataclasses.replace(self, scores=torch.maximum(self.scores, weights.detach().float()))
