"""Greedy decoding through any memory method: read the context segment by segment, then decode.

One loop for plain, full, RMT and HMT (one sample at a time). The prompt's segments follow QA's answer layout
(``prompt_layout``: the first segment is the short one, so the prompt ends ``ANSWER_ROOM`` positions before its
segment ends and the answer opens beside the question, as teacher-forced scoring and answer training lay it out).

1. Segments that end before the prompt's last token are read exactly as the engine reads them
   (``summarize`` once, then ``method(state, segment, ...)``), which leaves the memory state
   (or the caller hands that state over, ``context=``, from a pass it already made).
2. The segment holding the prompt's last token is *opened*: the backbone runs with a KV cache
   on ``[read memory | sensory | tokens so far]`` (``SegmentMethod.segment_prefix``), and each
   new token extends the cache. Token t is predicted by the logits at t - 1, as the engine scores.
3. When the open segment holds S text tokens and another token is due, the segment is *closed*:
   the read memory is fed through the cache at the write slot (right after the last text token,
   as ``forward`` places it), the last hidden state there (the output head's input, as
   ``_run_backbone`` reads it) is the written memory, ``state = method.next_state(...)``, and the
   next segment opens holding the new token. So the recurrence continues across boundaries.

Summaries (HMT): a summary reads the first j tokens of its segment, which at decoding time may
not exist yet. A segment's summary is computed once, from the tokens known when it opens (the
prompt's tokens for the first open segment, the single new token for a segment opened while
decoding), and kept while the segment fills, so the KV cache stays valid and nothing reads
tokens from the future. Teacher-forced scoring (the engine, answer perplexity) summarises the
whole head of each segment, as training does; the two agree whenever the open segment already
holds j tokens. A summary depends only on its own segment's tokens (it never reads the memory),
so an open segment is summarised with the two-segment window [previous, known tokens].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hmtbench.engine import answer_first_segments, segment_batch
from hmtbench.methods.base import MemoryState, SegmentInput, SegmentMethod

StopRule = Callable[[list[int]], bool]  # generated ids so far -> stop now


@dataclass
class Generation:
    token_ids: list[int] = field(default_factory=list)  # generated ids (a stop id included)
    context_segments: int = 0  # segments read before the first open segment
    segments_opened: int = 0  # open segments decoded in (1 + boundaries crossed)
    logits: list[Tensor] = field(default_factory=list)  # (V,) logits behind each id, with keep_logits


def _forward_keywords(backbone: Any) -> tuple[str, bool]:
    """The KV-cache keyword of this transformers version ('cache' from 5.x, 'past_key_values' before),
    and whether the forward takes ``logits_to_keep``."""
    import inspect

    params = inspect.signature(backbone.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


class OpenSegment:
    """A segment being decoded into with a KV cache: [read memory | sensory | text so far]."""

    def __init__(self, method: SegmentMethod, state: MemoryState, summary: Tensor | None, text_ids: Tensor) -> None:
        self.method, self.state = method, state
        self.backbone = method.backbone
        self.cache_name, self.keeps_logits = _forward_keywords(self.backbone)
        self.text_ids = text_ids  # (1, t)
        self.prefix, self.memory = method.segment_prefix(state, summary)
        embeds = method.embed(text_ids)
        if self.prefix is not None:
            embeds = torch.cat([self.prefix, embeds], dim=1)
        self.cache = None
        self.text_states: list[Tensor] | None = [] if method.writes_from_text else None  # last hidden states
        self.logits = self._run(embeds)
        if self.text_states is not None:
            self.text_states[0] = self.text_states[0][:, embeds.shape[1] - text_ids.shape[1] :]

    @property
    def length(self) -> int:
        return self.text_ids.shape[1]

    def _run(self, embeds: Tensor, capture: list[Tensor] | None = None) -> Tensor:
        """Feed embeds (1, n, d) through the cache; the (1, V) logits at the last position.

        ``capture`` receives the last hidden states of the n positions (``text_states`` when none is given).
        """
        if capture is None:
            capture = self.text_states
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "use_cache": True, self.cache_name: self.cache}
        if self.keeps_logits:  # the output head then sees only the kept positions: all of them when capturing
            kwargs["logits_to_keep"] = embeds.shape[1] if capture is not None else 1
        hook = None
        if capture is not None:
            head = self.backbone.get_output_embeddings()
            hook = head.register_forward_pre_hook(lambda module, args: capture.append(args[0]))
        try:
            out = self.backbone(**kwargs)
        finally:
            if hook is not None:
                hook.remove()
        self.cache = out[self.cache_name]
        return out.logits[:, -1]

    def step(self, token: Tensor) -> Tensor:
        """Append one token (1,) and return the logits that predict the next."""
        self.text_ids = torch.cat([self.text_ids, token[:, None]], dim=1)
        self.logits = self._run(self.method.embed(token[:, None]))
        return self.logits

    def close(self) -> MemoryState:
        """Write through the memory slot after the text and return the state for the next segment."""
        written = None
        if self.memory is not None:
            captured: list[Tensor] = []
            self._run(self.memory, capture=captured)
            written = captured[0][:, -self.memory.shape[1] :]  # (1, m, d) last hidden at the write slot
            if self.text_states is not None:  # the method reads every text position's state (engine's layout)
                written = self._written_from_text(written)
        return self.method.next_state(self.state, written, self.text_ids)

    def _written_from_text(self, write_states: Tensor) -> Tensor:
        """``write_memory`` on the closed segment laid out as ``forward`` lays it out: [prefix | text | write]."""
        parts = [self.method.embed(self.text_ids), self.memory]
        text_start = 0 if self.prefix is None else self.prefix.shape[1]
        embeds = torch.cat(([self.prefix] if self.prefix is not None else []) + parts, dim=1)
        m, length = self.memory.shape[1], self.length
        write_at = text_start + length + torch.arange(m, device=embeds.device)[None]
        read = SegmentInput(embeds, write_at, text_start, self.memory, None)
        return self.method.write_memory(read, torch.cat([*self.text_states, write_states], dim=1))


@dataclass(frozen=True)
class ReadContext:
    """The memory after the segments that precede the open one, and where the open one starts."""

    state: MemoryState
    start: int  # index in the prompt of the open segment's first token (0, or the first segment's size + k S)


@dataclass(frozen=True)
class PromptLayout:
    """Where a prompt's segments fall: QA's answer layout (``engine.answer_first_segments``)."""

    first: int  # tokens in the first segment
    start: int  # index of the first token of the segment holding the prompt's last token (decoding opens there)
    index: int  # that segment's index


def prompt_layout(method: SegmentMethod, prompt_length: int) -> PromptLayout:
    """The layout of a prompt of ``prompt_length`` tokens: it ends ``ANSWER_ROOM`` positions before a segment does."""
    size = method.segment_tokens
    first = int(answer_first_segments(torch.tensor([prompt_length]), size, method.sensory_tokens)[0])
    if prompt_length <= first:
        return PromptLayout(first, 0, 0)
    index = 1 + (prompt_length - 1 - first) // size
    return PromptLayout(first, first + (index - 1) * size, index)


def read_context(method: SegmentMethod, prompt_ids: Tensor) -> ReadContext:
    """Read every segment before the open one exactly as the engine does (summaries in one pass)."""
    size, layout = method.segment_tokens, prompt_layout(method, prompt_ids.shape[1])
    start, state = layout.start, method.initial_state(1)
    if start == 0:
        return ReadContext(state, 0)
    device = prompt_ids.device
    batch = segment_batch(prompt_ids[:, :start], torch.tensor([start], device=device), size,
                          first_lengths=torch.tensor([layout.first], device=device))
    summaries = method.summarize(batch.segments, batch.lengths)
    for i in range(batch.segments.shape[1]):
        summary = None if summaries is None else summaries[:, i]
        state = method(state, batch.segments[:, i], batch.lengths[:, i], summary).state
    return ReadContext(state, start)


def window_summary(method: SegmentMethod, previous: Tensor | None, known: Tensor) -> Tensor | None:
    """Summary of a segment whose known tokens are ``known`` (1, t), preceded by ``previous`` (1, S) or None.

    A summary reads only its own segment's tokens, so the two-segment window [previous, known]
    gives the summary the segment has at index 1 of any document; with no previous segment it
    is the first segment's (which reads the initial memory, not a summary).
    """
    size, rows = method.segment_tokens, [known[0]]
    lengths = [known.shape[1]]
    if previous is not None:
        rows, lengths = [previous[0], known[0]], [previous.shape[1], known.shape[1]]
    window = torch.zeros(1, len(rows), size, dtype=known.dtype, device=known.device)
    for i, row in enumerate(rows):
        window[0, i, : row.shape[0]] = row
    lengths = torch.tensor([lengths], device=known.device)
    summaries = method.summarize(window, lengths)
    return None if summaries is None else summaries[:, -1]


@torch.inference_mode()
def greedy_generate(
    method: SegmentMethod,
    prompt_ids: Tensor | list[int],
    max_new_tokens: int,
    *,
    stop_ids: Iterable[int] = (),
    stop: StopRule | None = None,
    keep_logits: bool = False,
    context: ReadContext | None = None,
) -> Generation:
    """Greedy continuation of one prompt (T,) through ``method``, up to ``max_new_tokens`` ids.

    Decoding stops after an id in ``stop_ids`` (kept in the output, as ``generate`` does) or when
    ``stop(generated ids)`` says so. ``context``: the segments before the open one, already read
    by the caller (``read_context`` or an equivalent pass), so they are not read twice.
    """
    ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=method.device).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("greedy_generate needs a non-empty prompt")
    stops, size = set(stop_ids), method.segment_tokens
    context = context or read_context(method, ids)
    start = context.start
    previous = ids[:, max(0, start - size) : start] if start else None  # the first segment may be shorter
    segment = OpenSegment(method, context.state, window_summary(method, previous, ids[:, start:]), ids[:, start:])
    result = Generation(context_segments=prompt_layout(method, ids.shape[1]).index, segments_opened=1)
    logits = segment.logits
    while len(result.token_ids) < max_new_tokens:
        token = logits.argmax(-1)  # (1,)
        if keep_logits:
            result.logits.append(logits[0].float().cpu())
        result.token_ids.append(int(token))
        done = int(token) in stops or (stop is not None and stop(result.token_ids))
        if done or len(result.token_ids) == max_new_tokens:
            break
        if segment.length < size:
            logits = segment.step(token)
            continue
        state, previous = segment.close(), segment.text_ids
        segment = OpenSegment(method, state, window_summary(method, previous, token[:, None]), token[:, None])
        result.segments_opened += 1
        logits = segment.logits
    return result
