"""Where a question and its answer fall among the segments: QA, decoding, lm-eval and answer training all cut their
rows this way, so a greedy answer, its teacher-forced score and the answers a model trained on share one layout.

A prompt ends ``ANSWER_ROOM`` positions before a segment ends (``answer_first_segments``): the answer shares its
segment with the question and the context just before it at every prompt length. ``first_read_segment`` says which
leading segments can be skipped because nothing they hold reaches the answer (plain, overlap).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from hmtbench.methods.base import SegmentMethod

ANSWER_ROOM = 12  # positions left after a prompt, in its segment, for the answer (QA, lm-eval, answer training)


def answer_first_segments(prompt_lengths: Tensor, segment_tokens: int, least: int = 1) -> Tensor:
    """(B,) first-segment sizes that end every prompt ``ANSWER_ROOM`` positions before a segment ends.

    Teacher-forced answers, greedy decoding and lm-eval continuations all use this layout, so the answer
    shares its segment with the question and the context's end at every prompt length. A prompt that leaves
    the room inside one segment keeps a whole first segment (its layout is the start-aligned one).
    """
    room = prompt_lengths + ANSWER_ROOM
    return torch.where(room <= segment_tokens, segment_tokens, end_aligned_first(room, segment_tokens, least))


def answer_layout_segments(prompt_length: int, total_length: int, segment_tokens: int, least: int = 1) -> int:
    """Segments a row of ``total_length`` tokens (prompt first) spans in the answer layout."""
    first = int(answer_first_segments(torch.tensor([prompt_length]), segment_tokens, least)[0])
    return max(1, math.ceil((total_length + segment_tokens - first) / segment_tokens))


def first_read_segment(method: SegmentMethod, first_needed: int) -> int:
    """The first segment whose tokens can reach segment ``first_needed``'s outputs: 0 for a memory, ``first_needed``
    less the method's ``state_reach`` for plain (0 back) and overlap (1 back). Skipping the segments before it changes
    no score (they could only change a state that nothing later reads), so plain and overlap answer at 1M tokens
    for the price of 1k."""
    return 0 if method.state_reach is None else max(0, first_needed - method.state_reach)


def end_aligned_first(lengths: Tensor, segment_tokens: int, least: int = 1) -> Tensor:
    """(B,) first-segment sizes that make each row end exactly where a segment ends.

    A QA row (prompt + answer) cut from its start puts the answer alone in a fresh segment whenever the prompt
    fills its last segment (a 1,024-token prompt in 256-token segments), leaving the question to the memory;
    cut from its end, the last segment holds the answer, the question and the context just before them, at
    every context length. ``least``: the smallest first segment (a method's sensory tokens, which the next
    segment reads from it); a row then ends ``least - size`` tokens before its last segment does.
    """
    natural = (lengths - 1) % segment_tokens + 1
    return natural.clamp(min=min(max(least, 1), segment_tokens))
