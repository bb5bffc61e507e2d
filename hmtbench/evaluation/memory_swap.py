"""Does the answer come from the memory? Each row reads another row's state where its answer's segment opens.

The causal diagnostic for a memory method on a retrieval task: the prompts and their question segments stay; only
what the earlier segments left (memory, cache, sensory ids: the whole ``MemoryState``) comes from a donor row (row
r reads row r + 1's, cyclically). A method whose answers come from its memory then gives the donor's answer, and
loses its own; one that answers without it (plain, a memory never read, a key in the question's own segment) does
not move. Scored teacher-forced, as eval-qa's ``teacher_forced_exact``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hmtbench.engine import SegmentedBatch
from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MemoryState, SegmentMethod
from hmtbench.methods.state import select_rows
from hmtbench.qa.answers import answer_pass, exact_rows, first_answer_segment, qa_batch


@dataclass
class MemorySwap:
    """Shares of rows answered exactly (teacher-forced): with their own state, then with the donor's state scored
    against their own answer and against the donor's."""

    own: float
    own_swapped: float
    donor_swapped: float
    samples: int

    def columns(self) -> dict[str, object]:
        """The result record's columns (hmtbench.results.schema)."""
        return {"swap_own_exact": self.own, "swap_own_exact_swapped": self.own_swapped,
                "swap_donor_exact_swapped": self.donor_swapped, "swap_samples": self.samples}

    def summary(self) -> str:
        return (f"memory swap over {self.samples} samples: own answer {self.own:.1%} with its own state, "
                f"{self.own_swapped:.1%} with another sample's; that sample's answer {self.donor_swapped:.1%}")


def _exact_from(method: SegmentMethod, batch: SegmentedBatch, state: MemoryState) -> Tensor:
    """(B,) bool: ``batch``'s answers reproduced teacher-forced, its first segment opening with ``state``."""
    _, predicted = answer_pass(method, method, batch, first_answer=0,
                               edit_state=lambda segment, current: state if segment == 0 else current)
    return exact_rows(batch, predicted)


def _from_segment(batch: SegmentedBatch, first: int) -> SegmentedBatch:
    """The batch's segments from ``first`` on (the prompts lay out alike whatever the answers: the answer starts in
    its question's segment, so another answer changes no segment before it)."""
    return SegmentedBatch(*(tensor[:, first:] for tensor in (batch.segments, batch.lengths, batch.targets,
                                                              batch.known)))


@torch.inference_mode()
def memory_swap(method: SegmentMethod, prompts: list[Tensor], answers: list[list[int]]) -> MemorySwap:
    """Row r answers with row r + 1's state (cyclically), in one batch: how often it still gives its own answer and
    how often the donor's. The context is read once: the swapped answers start from the state it left."""
    if len(prompts) < 2:
        raise HmtbenchError(f"memory swap needs at least 2 samples (one donates its state to another), got "
                            f"{len(prompts)}")
    donors = torch.roll(torch.arange(len(prompts)), -1)
    batch = qa_batch(prompts, answers, method.segment_tokens, method.device, method.sensory_tokens)
    first = first_answer_segment(batch)
    opening: dict[str, MemoryState] = {}

    def keep(segment: int, state: MemoryState, _summary: Tensor | None) -> None:
        if segment == first:
            opening["state"] = state

    _, predicted = answer_pass(method, method, batch, first_answer=first, on_segment=keep)
    swapped = select_rows(opening["state"], donors.to(method.device))
    donor_batch = qa_batch(prompts, [answers[int(d)] for d in donors], method.segment_tokens, method.device,
                           method.sensory_tokens)
    scores = (exact_rows(batch, predicted), _exact_from(method, _from_segment(batch, first), swapped),
              _exact_from(method, _from_segment(donor_batch, first), swapped))
    return MemorySwap(*(float(x.float().mean()) for x in scores), samples=len(prompts))


__all__ = ["MemorySwap", "memory_swap"]
