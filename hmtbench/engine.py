"""The one segment loop that evaluation, training and QA all drive.

Scoring rule (every protocol and method): position t of a document is predicted by the logits
at position t-1, so a segment's first token is predicted by the previous segment's last logits
and every token but the document's first can be scored exactly once. ``targets`` marks which
tokens count; the loop returns summed NLL and token counts per segment, and the caller divides
once: ppl = exp(sum NLL / scored tokens).

Inside the loop nothing is read back to the host: which segments score anything is read once
per batch, before it, and a segment that scores nothing skips the output head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from hmtbench.methods.base import SegmentMethod
from hmtbench.methods.loss import IGNORE, token_nll
from hmtbench.methods.state import flatten, unflatten

__all__ = ["IGNORE", "SegmentedBatch", "detached_before", "score_segments", "segment_batch", "token_nll"]


@dataclass
class SegmentedBatch:
    segments: Tensor  # (B, n, S) token ids, right-padded with 0
    lengths: Tensor  # (B, n) real tokens in each segment
    targets: Tensor  # (B, n, S) token each position must predict, IGNORE where nothing is scored
    known: Tensor  # (B, n) tokens of each segment a summary may read: those known when the segment opens


def segment_batch(
    input_ids: Tensor, lengths: Tensor, segment_tokens: int, scored: Tensor | None = None,
    prompt_lengths: Tensor | None = None, first_lengths: Tensor | None = None,
) -> SegmentedBatch:
    """Cut right-padded documents (B, T) into left-aligned segments of S tokens.

    ``scored`` (B, T) bool marks the tokens whose prediction counts (default: all real tokens
    but the first of each document). ``prompt_lengths`` (B,): where the given text ends and an
    answer to be generated begins (QA). Decoding opens a segment knowing only the prompt's tokens
    in it, or the one new token for a segment opened while decoding, so a segment's summary
    (HMT) reads those alone (``known``): teacher-forced scores then equal greedy decoding's.
    Default: the whole document is given. ``first_lengths`` (B,): tokens in each row's first segment (1 to S;
    ``hmtbench.answer_layout``), the rest of the row in whole segments after it.
    """
    batch, length = input_ids.shape
    size = segment_tokens
    positions = torch.arange(length, device=input_ids.device)[None]  # (1, T)
    real = positions < lengths[:, None]  # (B, T)
    wanted = real if scored is None else scored & real
    next_ids = F.pad(input_ids[:, 1:], (0, 1))
    next_wanted = F.pad(wanted[:, 1:], (0, 1), value=False)
    targets = torch.where(next_wanted, next_ids, torch.full_like(next_ids, IGNORE))  # (B, T)
    known = real if prompt_lengths is None else real & (positions < prompt_lengths[:, None])
    if first_lengths is None:  # whole segments from each row's start: the (B, T) values padded, then cut
        n = max(1, math.ceil(length / size))

        def place(values: Tensor, fill: int) -> Tensor:
            return F.pad(values, (0, n * size - length), value=fill).view(batch, n, size)
    else:  # each row's first segment first_lengths long: its later tokens move right by the gap after it
        gap = (size - first_lengths).clamp(min=0)
        n = max(1, math.ceil(int((lengths + gap).max()) / size))
        moved = positions + gap[:, None] * (positions >= first_lengths[:, None])  # (B, T) place in the new layout
        moved = torch.where(real, moved, n * size)  # padding goes to one spare column, dropped below

        def place(values: Tensor, fill: int) -> Tensor:
            out = torch.full((batch, n * size + 1), fill, dtype=values.dtype, device=values.device)
            return out.scatter(1, moved, values)[:, :-1].view(batch, n, size)

    seg_lengths = place(real.long(), 0).sum(-1)
    return SegmentedBatch(
        segments=place(torch.where(real, input_ids, torch.zeros_like(input_ids)), 0),
        lengths=seg_lengths,
        targets=place(targets, IGNORE),
        known=torch.minimum(place(known.long(), 0).sum(-1).clamp(min=1), seg_lengths),
    )


def detached_before(segment: int, segments: int, grad_segments: int | None = None, k2: int | None = None) -> bool:
    """Whether the state a window of ``segments`` segments hands to ``segment`` leaves the autograd graph.

    ``grad_segments=K``: once, before the last K segments. ``k2`` (the official RMT code's rule, in booydar's
    babilong branches; docs/methods.md): after every segment i with i >= 1 and i + k2 <= n, so the state entering
    segment i + 1 is cut; the memory segment 0 writes always keeps its gradient.
    """
    if grad_segments is not None and segment == segments - grad_segments and segment > 0:
        return True
    return k2 is not None and segment >= 2 and segment - 1 + k2 <= segments


def score_segments(
    method: SegmentMethod, batch: SegmentedBatch, *, grad_segments: int | None = None, recompute: float = 0.0,
    scored_segments: list[bool] | None = None, k2: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the method over every segment; return (nll, tokens), both (B, n), summed per segment.

    ``grad_segments=K`` cuts the memory from the autograd graph before the last K segments, so
    gradients reach at most K segments back (truncated BPTT); ``k2`` cuts it by the official RMT rule
    (``detached_before``); None for both keeps the whole window.
    ``recompute`` (training): the share of the segments, earliest first, that keep only their inputs and state
    for the backward pass and run again there (activation checkpointing per segment; True: all of them), so
    memory grows with the state, not with the activations, over a deep BPTT window; the other segments keep
    their activations and cost no second forward.
    ``scored_segments`` (n,): which segments score any token, where the caller knows it without the device
    (a training window); otherwise it is read back from the device once, before the loop.
    ``method`` may also be a ``hmtbench.fastpath.GraphedMethod`` (the same calls, replayed).
    """
    if (grad_segments is not None and grad_segments < 1) or (k2 is not None and k2 < 1):  # 0 is not full BPTT
        raise ValueError(f"grad_segments and k2 must be at least 1, or None for full BPTT, got {grad_segments}, {k2}")
    batch_size, n = batch.segments.shape[:2]
    scored = batch.targets != IGNORE
    any_scored = scored_segments
    if any_scored is None:
        any_scored = scored.any(-1).any(0).tolist()  # (n,) on the host: the batch's one read-back, before the loop
    inline = method.summarizes_inline(batch_size)  # summaries made one segment ahead, in the step before
    checkpointed = recomputed_segments(recompute, n)
    summaries = None if inline else method.summarize(batch.segments, batch.known, checkpointed)
    state = method.initial_state(batch_size)
    nothing = torch.zeros(batch_size, device=batch.segments.device)
    nll = []
    for i in range(n):
        if detached_before(i, n, grad_segments, k2):
            state = state.detach()
        summary = None if summaries is None else summaries[:, i]
        targets = batch.targets[:, i] if any_scored[i] else None
        upcoming = (batch.segments[:, i + 1], batch.known[:, i + 1]) if inline and i + 1 < n else None
        step = segment_step(i < checkpointed)
        segment_nll, state = step(method, state, batch.segments[:, i], batch.lengths[:, i], targets, summary, upcoming)
        nll.append(nothing if segment_nll is None else segment_nll)
    return torch.stack(nll, dim=1), scored.sum(-1)


def recomputed_segments(recompute: float, segments: int) -> int:
    """How many of ``segments`` (the earliest) run under activation checkpointing for a recompute share (a bool:
    all or none)."""
    return round(float(recompute) * segments)


def segment_step(recompute: bool):
    """How a segment is scored: ``method.score``, or under activation checkpointing when training with ``recompute``."""
    return recomputed_score if recompute and torch.is_grad_enabled() else call_score


def call_score(method: SegmentMethod, state, *args):
    return method.score(state, *args)


def recomputed_score(method: SegmentMethod, state, *args):
    """``method.score`` under activation checkpointing: the state passes in and out as tensors (its layout aside)."""
    from torch.utils.checkpoint import checkpoint

    layout, tensors = flatten(state)
    after_layout: list = []

    def run(*inputs: Tensor):
        nll, after = method.score(unflatten(layout, list(inputs)), *args)
        shape, outputs = flatten(after)
        after_layout[:] = [shape]
        return nll, *outputs

    nll, *outputs = checkpoint(run, *tensors, use_reentrant=False)
    return nll, unflatten(after_layout[0], outputs)
