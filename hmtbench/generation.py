"""Greedy decoding through any memory method, a batch of prompts at once.

Every prompt follows QA's answer layout (``prompt_layout``: the first segment is the short one, so a long prompt ends
``ANSWER_ROOM`` positions before its segment ends and the answer opens beside the question, as teacher-forced scoring
and answer training lay it out).

1. **Read** (``read_openings``, or QA's answer pass with an ``OpeningCollector``): the segments before each prompt's
   last segment are read for the whole batch by the engine's segment step (the fast path's graphs apply: nothing is
   scored there). Each row's state where its last segment opens is kept: an ``Opening``.
2. **Open** (``OpenSegments``): the backbone runs with a KV cache on ``[read memory | sensory | prompt tokens of the
   open segment]`` (``SegmentMethod.segment_prefix``) for a *cohort* of rows at once, and each new token extends every
   row's cache. Token t is predicted by the logits at t - 1, as the engine scores.
3. **Close**: when a cohort's open segment holds S text tokens and another token is due, the read memory is fed through
   the cache at the write slot (right after the last text token, as ``forward`` places it), the last hidden state
   there is the written memory, ``state = method.next_state(...)``, and the next segment opens holding the new token.

A cohort is the rows whose open segments hold the same number of tokens (and whose states have one layout), so they
fill, close and reopen at the same step with no padding and no attention mask. In the answer layout every prompt longer
than a segment opens with S - ``ANSWER_ROOM`` tokens, so long prompts of any lengths decode as one cohort; prompts
shorter than a segment form one cohort per length. Each row stops on its own (an end id, its stop rule,
``max_new_tokens``), and finished rows leave their cohort's batch.

Summaries (HMT): a summary reads the first j tokens of its segment, which at decoding time may not exist yet. A
segment's summary is computed once, from the tokens known when it opens (the prompt's tokens for the first open segment,
the single new token for a segment opened while decoding), and kept while the segment fills, so the KV cache stays
valid and nothing reads tokens from the future. A summary depends only on its own segment's tokens, so a segment opened
while decoding is summarised with the two-segment window [previous segment, new token].
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hmtbench.answer_layout import answer_first_segments, first_read_segment
from hmtbench.engine import segment_batch
from hmtbench.methods.base import MemoryState, SegmentInput, SegmentMethod
from hmtbench.methods.state import concat_rows, flatten, select_rows

StopRule = Callable[[list[int]], bool]  # generated ids so far -> stop now


@dataclass
class Generation:
    token_ids: list[int] = field(default_factory=list)  # generated ids (a stop id included)
    context_segments: int = 0  # segments read before the first open segment
    segments_opened: int = 0  # open segments decoded in (1 + boundaries crossed)
    logits: list[Tensor] = field(default_factory=list)  # (V,) logits behind each id, with keep_logits


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


@dataclass(frozen=True)
class Opening:
    """One prompt's memory where decoding opens: the state after the segments before its last one."""

    state: MemoryState  # one row
    summary: Tensor | None  # (1, d): the open segment's summary, from the prompt tokens in it (None without summaries)
    layout: PromptLayout


class OpeningCollector:
    """Called with (segment index, the batch's state before that segment, its (B, d) summaries or None) as a segment
    loop goes; keeps each row's ``Opening`` at the segment its prompt's last token falls in."""

    def __init__(self, layouts: Sequence[PromptLayout], device: torch.device) -> None:
        self.layouts, self.device = list(layouts), device
        self.openings: list[Opening | None] = [None] * len(layouts)
        self.rows_at: dict[int, list[int]] = {}
        for row, layout in enumerate(layouts):
            self.rows_at.setdefault(layout.index, []).append(row)

    def __call__(self, index: int, state: MemoryState, summaries: Tensor | None) -> None:
        for row in self.rows_at.get(index, ()):  # copies: a replayed step's state lives in buffers it overwrites
            chosen = torch.tensor([row], device=self.device)
            summary = None if summaries is None else summaries[row : row + 1].clone()
            self.openings[row] = Opening(select_rows(state, chosen), summary, self.layouts[row])

    def result(self) -> list[Opening]:
        missing = [row for row, opening in enumerate(self.openings) if opening is None]
        if missing:
            raise RuntimeError(f"the segment loop never reached the open segment of rows {missing}")
        return list(self.openings)  # type: ignore[arg-type]


@torch.inference_mode()
def read_openings(method: SegmentMethod, runner: Any, prompts: Sequence[Tensor | list[int]]) -> list[Opening]:
    """Each prompt's ``Opening``: the segments before its last one read for the whole batch, in the answer layout.

    ``runner`` steps the context segments (the method itself, or ``fastpath.accelerate``'s); segments that no state
    carries to the open one (plain, overlap: ``state_reach``) are not read.
    """
    ids, lengths = pad_rows(prompts, method.device)
    size = method.segment_tokens
    layouts = [prompt_layout(method, int(n)) for n in lengths.tolist()]
    batch = segment_batch(ids, lengths, size, prompt_lengths=lengths,
                          first_lengths=answer_first_segments(lengths, size, method.sensory_tokens))
    collect = OpeningCollector(layouts, method.device)
    last = max(layout.index for layout in layouts)
    summaries = runner.summarize(batch.segments, batch.known)
    state = runner.initial_state(len(layouts))
    for i in range(first_read_segment(method, min(layout.index for layout in layouts)), last + 1):
        summary = None if summaries is None else summaries[:, i]
        collect(i, state, summary)
        if i < last:
            _, state = runner.score(state, batch.segments[:, i], batch.lengths[:, i], None, summary)
    return collect.result()


def pad_rows(rows: Sequence[Tensor | list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and their (B,) lengths."""
    rows = [torch.as_tensor(row, dtype=torch.long).reshape(-1) for row in rows]
    ids = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


def _forward_keywords(backbone: Any) -> tuple[str, bool]:
    """The KV-cache keyword of this transformers version ('cache' from 5.x, 'past_key_values' before),
    and whether the forward takes ``logits_to_keep``."""
    params = inspect.signature(backbone.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


class OpenSegments:
    """A cohort's open segments, decoded into with a KV cache: [read memory | sensory | text so far], (G, ...)."""

    def __init__(self, method: SegmentMethod, state: MemoryState, summary: Tensor | None, text_ids: Tensor) -> None:
        self.method, self.state = method, state
        self.backbone = method.backbone
        self.cache_name, self.keeps_logits = _forward_keywords(self.backbone)
        self.text_ids = text_ids  # (G, t)
        self.prefix, self.memory, self.weights = method.segment_prefix(state, summary)
        embeds = method.embed(text_ids)
        if self.prefix is not None:
            embeds = torch.cat([self.prefix, embeds], dim=1)
        self.cache = None
        self.layers: Tensor | None = None  # (G, n_layers, m, d) the last call's block outputs at its write slot
        self.text_states: list[Tensor] | None = [] if method.writes_from_text else None  # last hidden states
        self.logits = self._run(embeds)
        if self.text_states is not None:
            self.text_states[0] = self.text_states[0][:, embeds.shape[1] - text_ids.shape[1] :]

    @property
    def length(self) -> int:
        return self.text_ids.shape[1]

    def _run(self, embeds: Tensor, capture: list[Tensor] | None = None, write_at: Tensor | None = None) -> Tensor:
        """Feed embeds (G, n, d) through the cache, inside the method's ``backbone_hooks``; the (G, V) logits at the
        last position.

        ``capture`` receives the last hidden states of the n positions (``text_states`` when none is given);
        ``write_at`` (G, m): positions of the write slot in ``embeds``, whose every-block outputs ``layers`` keeps.
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
            with self.method.backbone_hooks(self.state, write_at) as layers:
                out = self.backbone(**kwargs)
            self.layers = layers.layers
        finally:
            if hook is not None:
                hook.remove()
        self.cache = out[self.cache_name]
        return out.logits[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Append one token per row (G,) and return the (G, V) logits that predict the next."""
        self.text_ids = torch.cat([self.text_ids, tokens[:, None]], dim=1)
        self.logits = self._run(self.method.embed(tokens[:, None]))
        return self.logits

    def keep(self, rows: Tensor) -> None:
        """Keep only the cohort rows ``rows`` (R,): their cache, text, memory and state."""
        self.cache.batch_select_indices(rows)
        self.text_ids, self.logits = self.text_ids[rows], self.logits[rows]
        self.state = select_rows(self.state, rows)
        self.prefix = None if self.prefix is None else self.prefix[rows]
        self.memory = None if self.memory is None else self.memory[rows]
        self.weights = None if self.weights is None else self.weights[rows]
        if self.text_states is not None:
            self.text_states = [states[rows] for states in self.text_states]

    def close(self) -> MemoryState:
        """Write through the memory slot after the text and return the state for the next segment."""
        read, written, layers = self._laid_out(), None, None
        if self.memory is not None:
            captured: list[Tensor] = []
            rows, m = self.memory.shape[:2]
            write_at = torch.arange(m, device=self.memory.device).expand(rows, m)  # the m positions of this call
            self._run(self.memory, capture=captured, write_at=write_at)
            written, layers = captured[0][:, -m:], self.layers  # (G, m, d) last hidden at the write slot
            if self.text_states is not None:  # the method reads every text position's state (engine's layout)
                written = self.method.write_memory(read, torch.cat([*self.text_states, written], dim=1))
        return self.method.next_state(self.method.after_read(self.state, read), written, self.text_ids, layers=layers)

    def _laid_out(self) -> SegmentInput:
        """The closed segments laid out as ``forward`` lays them out: [prefix | text | write]."""
        rows, text_start = self.text_ids.shape[0], 0 if self.prefix is None else self.prefix.shape[1]
        parts = ([self.prefix] if self.prefix is not None else []) + [self.method.embed(self.text_ids)]
        if self.memory is None:
            return SegmentInput(torch.cat(parts, dim=1), None, text_start, None, self.weights)
        m = self.memory.shape[1]
        write_at = (text_start + self.length + torch.arange(m, device=self.memory.device))[None].expand(rows, -1)
        return SegmentInput(torch.cat([*parts, self.memory], dim=1), write_at, text_start, self.memory, self.weights)


def window_summaries(method: SegmentMethod, previous: Tensor, known: Tensor) -> Tensor | None:
    """(G, d) summaries of segments whose known tokens are ``known`` (G, t), each after a whole segment ``previous``
    (G, S): the two-segment window [previous, known] gives the summary a segment has at index 1 of any document."""
    size, rows, t = method.segment_tokens, known.shape[0], known.shape[1]
    window = torch.zeros(rows, 2, size, dtype=known.dtype, device=known.device)
    window[:, 0], window[:, 1, :t] = previous, known
    lengths = torch.tensor([[size, t]], device=known.device).expand(rows, -1)
    summaries = method.summarize(window, lengths)
    return None if summaries is None else summaries[:, -1]


@torch.inference_mode()
def decode(
    method: SegmentMethod,
    openings: Sequence[Opening],
    prompts: Sequence[Tensor | list[int]],
    max_new_tokens: int,
    *,
    stop_ids: Iterable[int] = (),
    stop: StopRule | Sequence[StopRule | None] | None = None,
    keep_logits: bool = False,
) -> list[Generation]:
    """Greedy continuations of ``prompts`` from their ``openings``, up to ``max_new_tokens`` ids each.

    A row stops after an id in ``stop_ids`` (kept in the output, as ``generate`` does) or when its stop rule
    (``stop``: one for every row, or one per row) says so on the ids generated so far.
    """
    rules = list(stop) if isinstance(stop, Sequence) else [stop] * len(openings)
    results = [Generation(context_segments=o.layout.index, segments_opened=1) for o in openings]
    cohorts: dict[tuple, list[int]] = {}
    for row, opening in enumerate(openings):
        key = (len(prompts[row]) - opening.layout.start, flatten(opening.state)[0], opening.summary is None)
        cohorts.setdefault(key, []).append(row)
    for rows in cohorts.values():
        _decode_cohort(method, rows, openings, prompts, results, max_new_tokens, set(stop_ids), rules, keep_logits)
    return results


def _decode_cohort(method: SegmentMethod, rows: list[int], openings: Sequence[Opening], prompts: Sequence[Any],
                   results: list[Generation], max_new_tokens: int, stops: set[int], rules: list[StopRule | None],
                   keep_logits: bool) -> None:
    """Decode ``rows`` (their open segments hold as many tokens) in lockstep, dropping each as it stops."""
    device = method.device
    chosen = [openings[r] for r in rows]
    summary = None if chosen[0].summary is None else torch.cat([o.summary for o in chosen])
    text = torch.stack([torch.as_tensor(prompts[r])[o.layout.start :].long()
                        for r, o in zip(rows, chosen, strict=True)]).to(device)
    segment = OpenSegments(method, concat_rows([o.state for o in chosen]), summary, text)
    active = list(rows)  # the cohort's rows still decoding, in batch order
    logits = segment.logits
    while active and max_new_tokens > 0:
        tokens = logits.argmax(-1)  # (G,)
        keep = []
        for position, (row, token) in enumerate(zip(active, tokens.tolist(), strict=True)):
            result = results[row]
            if keep_logits:
                result.logits.append(logits[position].float().cpu())
            result.token_ids.append(token)
            rule = rules[row]
            done = token in stops or (rule is not None and rule(result.token_ids))
            if not done and len(result.token_ids) < max_new_tokens:
                keep.append(position)
        if not keep:
            return
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            segment.keep(index)
            tokens, active = tokens[index], [active[p] for p in keep]
        if segment.length < method.segment_tokens:
            logits = segment.step(tokens)
            continue
        state, previous = segment.close(), segment.text_ids
        segment = OpenSegments(method, state, window_summaries(method, previous, tokens[:, None]), tokens[:, None])
        for row in active:
            results[row].segments_opened += 1
        logits = segment.logits


def greedy_generate(
    method: SegmentMethod,
    prompt_ids: Tensor | list[int],
    max_new_tokens: int,
    *,
    stop_ids: Iterable[int] = (),
    stop: StopRule | None = None,
    keep_logits: bool = False,
) -> Generation:
    """Greedy continuation of one prompt (T,) through ``method``: ``decode`` with a batch of one."""
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).reshape(-1)
    if prompt.numel() == 0:
        raise ValueError("greedy_generate needs a non-empty prompt")
    openings = read_openings(method, method, [prompt])
    return decode(method, openings, [prompt], max_new_tokens, stop_ids=stop_ids, stop=stop,
                  keep_logits=keep_logits)[0]
