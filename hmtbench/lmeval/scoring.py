"""Batched scoring of token rows through a memory method: continuations after a context, and whole documents."""

from __future__ import annotations

import torch
from torch import Tensor

from hmtbench.answer_layout import answer_first_segments
from hmtbench.engine import SegmentedBatch, score_segments, segment_batch
from hmtbench.generation import pad_rows
from hmtbench.methods.base import SegmentMethod
from hmtbench.qa.answers import answer_pass, exact_rows


def cut(method: SegmentMethod, ids: Tensor, lengths: Tensor, scored: Tensor | None = None,
        prompt_lengths: Tensor | None = None, end_aligned: bool = False) -> SegmentedBatch:
    """``segment_batch`` with segments no wider than the longest row (``end_aligned``: QA's answer layout).

    Rows shorter than one segment (most lm-eval requests) then cost their own length, not S
    positions (for ``full``, a whole ``max_length`` window): padding sits after everything a
    segment scores or writes, so a narrower single segment gives the same scores.
    """
    size = method.segment_tokens
    if end_aligned:
        first = answer_first_segments(prompt_lengths, size, method.sensory_tokens)
        if not bool((first >= lengths).all()):  # a row spans segments: all in the answer layout, whole width
            return segment_batch(ids, lengths, size, scored, prompt_lengths, first)
    return segment_batch(ids, lengths, min(size, ids.shape[1]), scored, prompt_lengths)


@torch.inference_mode()
def rolling_nll(method: SegmentMethod, rows: list[list[int]]) -> list[float]:
    """Summed NLL of every token but each row's first: the stream protocol of ``eval-ppl``, by the same engine loop."""
    ids, lengths = pad_rows(rows, method.device)
    nll, _ = score_segments(method, cut(method, ids, lengths))
    return nll.double().sum(1).tolist()


@torch.inference_mode()
def continuation_scores(method: SegmentMethod, rows: list[list[int]], context_lengths: list[int]) -> list[
        tuple[float, bool]]:
    """(log-probability, greedy) of each row's tokens after its first ``context_lengths[i]``, the context in memory.

    eval-qa's answer pass (``qa.answers.answer_pass``): context segments read with no output head, the
    segments holding continuation tokens scored with their argmax, summaries reading only the context.
    """
    ids, lengths = pad_rows(rows, method.device)
    contexts = torch.tensor(context_lengths, device=ids.device)
    scored = torch.arange(ids.shape[1], device=ids.device)[None] >= contexts[:, None]
    batch = cut(method, ids, lengths, scored, contexts, end_aligned=True)  # the continuation beside its context's end
    nll, predicted = answer_pass(method, method, batch)
    return list(zip((-nll.double()).tolist(), exact_rows(batch, predicted).tolist(), strict=True))
