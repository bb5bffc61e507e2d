"""Batched scoring of token rows through a memory method: continuations after a context, and whole documents."""

from __future__ import annotations

import torch
from torch import Tensor

from hmtbench.engine import IGNORE, SegmentedBatch, score_segments, segment_batch, token_nll
from hmtbench.methods.base import SegmentMethod


def pad_rows(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and their (B,) lengths."""
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


def cut(method: SegmentMethod, ids: Tensor, lengths: Tensor, scored: Tensor | None = None) -> SegmentedBatch:
    """``segment_batch`` with segments no wider than the longest row.

    Rows shorter than one segment (most lm-eval requests) then cost their own length, not S
    positions (for ``full``, a whole ``max_length`` window): padding sits after everything a
    segment scores or writes, so a narrower single segment gives the same scores.
    """
    return segment_batch(ids, lengths, min(method.segment_tokens, ids.shape[1]), scored)


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

    One pass, the engine's order: the summaries ahead, then segment after segment. A segment that
    holds no continuation token is the engine's step with no output head (``score`` without
    targets); one that does is ``forward``, whose logits give both the NLL (``token_nll``, as
    ``score`` computes it) and whether every continuation token is the argmax of its prediction.
    """
    ids, lengths = pad_rows(rows, method.device)
    positions = torch.arange(ids.shape[1], device=ids.device)
    scored = positions[None] >= torch.tensor(context_lengths, device=ids.device)[:, None]
    batch = cut(method, ids, lengths, scored)
    wanted = batch.targets != IGNORE
    summaries = method.summarize(batch.segments, batch.lengths)
    state = method.initial_state(len(rows))
    nll = torch.zeros(len(rows), dtype=torch.float64, device=ids.device)
    greedy = torch.ones(len(rows), dtype=torch.bool, device=ids.device)
    for i, any_scored in enumerate(wanted.any(-1).any(0).tolist()):
        summary = None if summaries is None else summaries[:, i]
        segment, segment_lengths, targets = batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i]
        if not any_scored:  # context only: read into memory
            _, state = method.score(state, segment, segment_lengths, None, summary)
            continue
        out = method(state, segment, segment_lengths, summary)
        state = out.state
        nll += token_nll(out.logits, targets).double().sum(-1)
        greedy &= ((out.logits.argmax(-1) == targets) | ~wanted[:, i]).all(-1)
    return list(zip((-nll).tolist(), greedy.tolist(), strict=True))
