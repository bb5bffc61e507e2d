"""Out of device memory: halve the batch and go on, rather than lose the run.

``HalvingBatches`` keeps the batch size that fits. ``run`` scores one batch in pieces of that size and
returns them in order, so the caller joins them into exactly what one call over the whole batch returns;
``retry`` repeats work that cannot be split (a timed case) at the smaller size. On
``torch.OutOfMemoryError`` the memory the failed call held is given back, the size is halved, and the
work goes on; the record says the size it ran at and how often it was halved (``batch_size``,
``oom_retries``). At one row there is nothing left to halve: one error that says so.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TypeVar

import torch

from hmtbench.errors import HmtbenchError

R = TypeVar("R")
_OUT_OF_MEMORY = object()


class OutOfMemoryAtOne(HmtbenchError):
    """Out of device memory with a batch of one: halving cannot help."""


class HalvingBatches:
    """The largest batch that fitted so far, halved on each out-of-memory error."""

    def __init__(self, batch_size: int, hint: str = "") -> None:
        self.size, self.retries, self.hint = batch_size, 0, hint

    def run(self, score: Callable[[slice], R], rows: int) -> list[R]:
        """``score`` over rows [0, rows) in consecutive pieces of at most ``size`` rows, in order."""
        pieces, start = [], 0
        while start < rows:
            stop = min(rows, start + self.size)
            piece = _attempt(score, slice(start, stop))
            if piece is _OUT_OF_MEMORY:
                self._halve(stop - start)
                continue
            pieces.append(piece)
            start = stop
        return pieces

    def retry(self, work: Callable[[int], R]) -> R:
        """``work(size)``, again at half the size while it runs out of memory."""
        while (result := _attempt(work, self.size)) is _OUT_OF_MEMORY:
            self._halve(self.size)
        return result

    def _halve(self, failed: int) -> None:
        release_memory()
        if failed <= 1:
            hint = f"; {self.hint}" if self.hint else ""
            raise OutOfMemoryAtOne(f"out of device memory with a batch of 1 (after {self.retries} halvings){hint}")
        self.size = (failed + 1) // 2
        self.retries += 1


def _attempt(call: Callable, argument: object) -> object:
    """``call(argument)``, or ``_OUT_OF_MEMORY``: returning (not raising) drops the failed call's frames, and the
    tensors they hold, before the memory is released."""
    try:
        return call(argument)
    except torch.OutOfMemoryError:
        return _OUT_OF_MEMORY


def release_memory() -> None:
    """Give the memory of dropped tensors back to the device, so the next, smaller try can have it."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
