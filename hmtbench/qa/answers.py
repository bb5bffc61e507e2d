"""Short answers scored for a whole batch of samples in one pass: answer NLL and greedy exactness.

Each row is a prompt followed by its gold answer, right-padded; the context segments are read with
``score`` (the fast path's graphs apply: nothing is scored there, so no output head runs) and the
segments that hold answer tokens with ``predict``, which gives the NLL of each answer token and the
argmax at its position. Greedy decoding reproduces the answer exactly iff every argmax equals its
answer token (each is predicted from the gold prefix, which greedy decoding would have produced),
and a summary reads only the tokens known when its segment opens (``segment_batch``'s
``prompt_lengths``), so ``exact`` is what greedy decoding gives, for every sample of the batch at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hmtbench.answer_layout import answer_first_segments, first_read_segment
from hmtbench.engine import IGNORE, SegmentedBatch, detached_before, recomputed_segments, segment_batch, segment_step
from hmtbench.generation import Opening, OpeningCollector, prompt_layout
from hmtbench.methods.base import MemoryState, SegmentMethod


@dataclass
class AnswerScore:
    nll: float  # summed NLL of the answer tokens (nats)
    tokens: int  # answer tokens scored
    predicted: list[int]  # the argmax at each answer position (teacher-forced)
    tokens_skipped: int = 0  # prompt tokens never read: no state carries them to an answer (``first_read_segment``)

    def exact(self, answer_ids: list[int]) -> bool:
        return self.predicted == list(answer_ids)


def qa_rows(prompts: list[Tensor], answers: list[list[int]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Prompt + answer rows, right-padded: ids (B, T), lengths (B,), the answer tokens (B, T), prompt lengths (B,)."""
    lengths = [len(p) + len(a) for p, a in zip(prompts, answers, strict=True)]
    ids = torch.zeros(len(prompts), max(lengths), dtype=torch.long)
    scored = torch.zeros_like(ids, dtype=torch.bool)
    for row, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        ids[row, : len(prompt)] = torch.as_tensor(prompt, dtype=torch.long)
        ids[row, len(prompt) : lengths[row]] = torch.tensor(answer, dtype=torch.long)
        scored[row, len(prompt) : lengths[row]] = True
    return ids, torch.tensor(lengths), scored, torch.tensor([len(p) for p in prompts])


def qa_batch(prompts: list[Tensor], answers: list[list[int]], segment_tokens: int, device: torch.device,
             sensory_tokens: int = 0) -> SegmentedBatch:
    """Prompt + answer rows cut into segments, exactly the answer tokens scored.

    Each prompt ends ``ANSWER_ROOM`` positions before its segment does (``engine.answer_first_segments``; a first
    segment holds at least the method's sensory tokens), as greedy decoding lays it out: the answer shares its
    segment with the question at every prompt length.
    """
    ids, lengths, scored, prompt_lengths = (t.to(device) for t in qa_rows(prompts, answers))
    return answer_segments(ids, lengths, scored, prompt_lengths, segment_tokens, sensory_tokens)


def answer_segments(ids: Tensor, lengths: Tensor, scored: Tensor, prompt_lengths: Tensor, segment_tokens: int,
                    sensory_tokens: int = 0, layout: str = "answer") -> SegmentedBatch:
    """Right-padded prompt + answer rows (``qa_rows``) cut in the answer layout (``engine.answer_first_segments``):
    what eval-qa scores, greedy decoding reads, answer training learns from and lm-eval continuations use.
    ``layout="start"``: cut from each row's start instead, as the official RMT wrapper cuts (answer training's
    ``curriculum.layout``)."""
    if layout == "start":
        return segment_batch(ids, lengths, segment_tokens, scored, prompt_lengths)
    first = answer_first_segments(prompt_lengths, segment_tokens, sensory_tokens)
    return segment_batch(ids, lengths, segment_tokens, scored, prompt_lengths, first)


def first_answer_segment(batch: SegmentedBatch) -> int:
    """The first segment that predicts an answer token in any row (read back from the device)."""
    return int((batch.targets != IGNORE).any(-1).any(0).nonzero()[0])


def answer_pass(method: SegmentMethod, runner: Any, batch: SegmentedBatch, grad_segments: int | None = None,
                recompute: float = 0.0, first_answer: int | None = None,
                on_segment: Callable[[int, MemoryState, Tensor | None], None] | None = None, k2: int | None = None,
                edit_state: Callable[[int, MemoryState], MemoryState] | None = None) -> tuple[Tensor, Tensor]:
    """(B,) summed answer NLL and (B, n, S) predicted ids (-1 where nothing is scored) of a QA batch.

    ``runner`` reads the context segments (nothing scored there: the output head is skipped), ``method``
    the segments holding answer tokens (``predict``). ``grad_segments=K`` (training) cuts the state
    from the autograd graph before the last K segments, ``k2`` by the official RMT rule (``engine.detached_before``),
    and ``recompute`` checkpoints that share of the segments' activations (the earliest context segments), as
    ``score_segments`` does. ``first_answer``: the batch's ``first_answer_segment`` where the caller has it (else it
    is read back here). ``on_segment(i, state, summaries)`` is called before each segment read, with the state that
    segment reads (``OpeningCollector``); ``edit_state(i, state)``, before that, gives the state segment i reads
    instead (``evaluation.memory_swap``).
    """
    rows, n = batch.segments.shape[:2]
    first = first_answer_segment(batch) if first_answer is None else first_answer
    checkpointed = recomputed_segments(recompute, n)
    summaries = runner.summarize(batch.segments, batch.known, checkpointed)  # ahead: as inline, and batched
    state = runner.initial_state(rows)
    nll = torch.zeros(rows, device=batch.segments.device)
    predicted = torch.full_like(batch.targets, -1)
    for i in range(first_read_segment(method, first), n):
        if detached_before(i, n, grad_segments, k2):
            state = state.detach()
        if edit_state is not None:
            state = edit_state(i, state)
        summary = None if summaries is None else summaries[:, i]
        if on_segment is not None:
            on_segment(i, state, summary)
        if i < first:
            step = segment_step(i < checkpointed)
            _, state = step(runner, state, batch.segments[:, i], batch.lengths[:, i], None, summary)
            continue
        segment_nll, predicted[:, i], state = method.predict(state, batch.segments[:, i], batch.lengths[:, i],
                                                             batch.targets[:, i], summary)
        nll = nll + segment_nll
    return nll, predicted


def exact_rows(batch: SegmentedBatch, predicted: Tensor) -> Tensor:
    """(B,) bool: every answer token of the row predicted (greedy decoding reproduces the answer)."""
    scored = batch.targets != IGNORE
    return ((predicted == batch.targets) | ~scored).flatten(1).all(-1)


@torch.inference_mode()
def read_answers(method: SegmentMethod, runner: Any, prompts: list[Tensor], answers: list[list[int]],
                 openings: bool = False) -> tuple[list[AnswerScore], list[Opening] | None]:
    """Answer NLL and teacher-forced greedy ids of each (prompt, answer) pair, all rows at once; with ``openings``,
    also each prompt's ``Opening`` (its memory where decoding opens), from the same single read of the context.

    ``runner``: the method as the fast path runs it (``fastpath.accelerate``), used for the context
    segments; the answer segments run on ``method`` itself (a few eager steps per batch).
    """
    batch = qa_batch(prompts, answers, method.segment_tokens, method.device, method.sensory_tokens)
    first = first_answer_segment(batch)  # the batch's one read-back before its answers
    collect = None
    if openings:
        collect = OpeningCollector([prompt_layout(method, len(p)) for p in prompts], method.device)
    nll, predicted = answer_pass(method, runner, batch, first_answer=first, on_segment=collect)
    predicted, wanted = predicted.flatten(1), batch.targets.flatten(1) != IGNORE
    skipped = batch.lengths[:, :first_read_segment(method, first)].sum(-1)
    scores = [AnswerScore(float(nll[row]), int(wanted[row].sum()), predicted[row][wanted[row]].tolist(),
                          int(skipped[row])) for row in range(len(prompts))]
    return scores, (None if collect is None else collect.result())


def score_answers(method: SegmentMethod, runner: Any, prompts: list[Tensor], answers: list[list[int]]
                  ) -> list[AnswerScore]:
    """``read_answers`` without the openings: what teacher forcing alone gives."""
    return read_answers(method, runner, prompts, answers)[0]
