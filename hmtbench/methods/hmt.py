"""Hierarchical Memory Transformer (He et al., NAACL 2025, arXiv 2405.06067).

Three memories around one backbone step ``[P_n | sensory | segment | P_n]`` (docs/methods.md, "HMT"):

* sensory memory: the previous segment's last k token ids, embedded again;
* short-term memory: a summary of the segment, the last hidden state at the trailing prompt of
  ``[T | first round(S * sum_fraction) tokens | T]`` (T a learned prompt);
* long-term memory: a cache of the last N memory embeddings M_j; the summary recalls from it by
  cross-attention, and the recalled P_n is what the segment reads and writes through.

With ``write: span`` (a departure from the paper, ``hmtbench.methods.span_write``) a segment writes m
input embeddings (a span of its text, or the memory read) instead of one last-layer state; recall
keys a cached memory by its mean over the m slots and returns a mixture of whole cached memories.

Segment 0 reads a learned initial memory (an empty one with ``write: span``). Stage 1 of training
(``stage=1``) drops the summary and the recall: the memory is passed on directly as in RMT, with sensory tokens on.
The summaries do not depend on the memory, so ``summarize`` computes them for every segment
in batched passes before the recurrence (docs/methods.md, "Departures"); or, where a step is
launch-bound (small batches on a GPU), each segment's backbone call also runs the next segment's
summary prompt as extra batch rows (``summarizes_inline``): no backbone call of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MethodConfig, SegmentInput, SegmentMethod, setting, trained_field
from hmtbench.methods.cache_policy import check_cache_policy
from hmtbench.methods.choice import check_choice
from hmtbench.methods.memory import add_memory, check_write, init_memory, write_label
from hmtbench.methods.recall import MemoryRecall
from hmtbench.methods.state import MemoryState, RecallCache

SUMMARY_PASSES = ("auto", "ahead", "inline")
RECALL_QUERIES = ("paper", "question")
# auto: inline while a step's B x L x backbone weights is at most this; above it a step is compute-bound and
# ahead's shorter rows win (H200, results/h200-graphed-train/session12: SmolLM2 inline at B 1-2, Qwen2.5-0.5B even
# at B 1, 3B and 7B ahead by 20-33%; H100: SmolLM2 crossover at 512-1,024 positions, results/h100-bench)
INLINE_MAX_WORK = 1e11


@dataclass
class HMTConfig(MethodConfig):
    memory_tokens: int = trained_field(1, "m: one memory embedding per segment (more only with write: span)")
    write: str = trained_field("state", "What a segment writes: state (the paper's last hidden states) | span (a span "
                                        "of input embeddings)")
    span_choice: str = setting("soft", "write: span: soft (the mixture) | hard (its argmax outside training) | "
                                       "hard-st (also in training)")
    sensory_tokens: int = trained_field(0, "k: tokens of the previous segment seen again before each segment's text "
                                           "(HMT's recipes use 32)")
    recall_context: int = setting(100, "N: memory embeddings kept for recall")
    recall_hidden_dim: int | None = trained_field(None, "h: width of the recall query/key projections (default: the "
                                                        "backbone's width)")
    recall_choice: str = setting("soft", "soft (the mixture) | hard (the heaviest cached memory outside training) | "
                                         "hard-st (also in training, straight-through: methods/choice.py)")
    sum_fraction: float = setting(0.5, "Share of a segment the summary prompt reads")
    recall_query: str = setting("paper", "What the summary reads: paper (the segment's first j tokens) | question (the "
                                         "last j tokens known when the segment opens: in QA's answer layout the "
                                         "question's end; docs/methods.md, departure 14)")
    cache_policy: str = setting("fifo", "Which memory a full cache drops: fifo (the paper's) | recall | distinct "
                                        "(hmtbench.methods.cache_policy; docs/methods.md, departure 15)")
    stage: int = trained_field(2, "1 = memory + sensory only (training stage 1); 2 = full HMT")
    summary_batch_tokens: int = setting(65536, "At most this many tokens per forward of the batched summary pass")
    summary_segments: int = setting(8, "Segments of every document summarised per forward (bounds its memory)")
    summary_pass: str = setting("auto", "When evaluation computes the summaries: ahead (batched passes), inline (in "
                                        "the previous segment's backbone call; pays on a GPU at small batches) or auto")

    def __post_init__(self) -> None:
        checks = [
            (self.memory_tokens == 1 or (self.write == "span" and self.memory_tokens > 1),
             f"HMT uses one memory token (more with method.write=span): got --memory-tokens {self.memory_tokens}"),
            (self.sensory_tokens >= 0, f"--sensory-tokens must be 0 or more, got {self.sensory_tokens}"),
            (self.recall_context >= 1, f"--recall-context must be at least 1, got {self.recall_context}"),
            (self.recall_hidden_dim is None or self.recall_hidden_dim >= 1,
             f"--recall-hidden-dim must be positive, got {self.recall_hidden_dim}"),
            (0 < self.sum_fraction <= 1, f"--sum-fraction must be in (0, 1], got {self.sum_fraction}"),
            (self.stage in (1, 2), f"--stage must be 1 or 2, got {self.stage}"),
            (self.summary_segments >= 1, f"summary_segments must be at least 1, got {self.summary_segments}"),
            (self.summary_pass in SUMMARY_PASSES,
             f"--summary-pass must be one of {', '.join(SUMMARY_PASSES)}, got '{self.summary_pass}'"),
        ]
        check_write(self.write, self.span_choice)
        check_cache_policy(self.cache_policy)
        if self.recall_query not in RECALL_QUERIES:
            raise HmtbenchError(f"method.recall_query must be one of {', '.join(RECALL_QUERIES)}, "
                                f"got '{self.recall_query}'")
        check_choice("recall_choice", self.recall_choice)
        for ok, message in checks:
            if not ok:
                raise HmtbenchError(message)

    def resolved(self, hidden_size: int) -> HMTConfig:
        """h defaults to the backbone's width d (the reference's 4096 for every model adds 2 x 4096 x d parameters)."""
        return self if self.recall_hidden_dim is not None else replace(self, recall_hidden_dim=hidden_size)


@dataclass(frozen=True)
class HMTState(MemoryState):
    memory: Tensor | None = None  # (B, m, d) stage 1 (and segment 0): the memory passed on directly
    sensory_ids: Tensor | None = None  # (B, k) last k token ids of the previous segment
    cache: RecallCache | None = None  # stage 2: the memories recall searches
    summary: Tensor | None = None  # (B, d) the next segment's summary, when this step's backbone call made it


class HMT(SegmentMethod):
    """Sensory, short-term (summary) and long-term (recalled) memory around each segment."""

    name = "hmt"
    label = "HMT"
    compared_with = ("rmt", "armt")  # the paper's "HMT vs RMT, %"; ARMT, the RMT family's strongest
    config_class = HMTConfig
    training_stages = (1, 2)

    def __init__(self, backbone: nn.Module, config: HMTConfig, segment_length: int) -> None:
        config = config.resolved(backbone.get_input_embeddings().weight.shape[1])
        super().__init__(backbone, config, segment_length)
        if config.sensory_tokens > self.segment_tokens:
            raise HmtbenchError(
                f"--sensory-tokens {config.sensory_tokens} exceeds the {self.segment_tokens} text tokens of a "
                f"segment; lower it or raise --segment-length"
            )
        add_memory(self, config.memory_tokens, config.write, config.span_choice)
        self.summary_prompt: nn.Parameter | None = None
        self.recall: MemoryRecall | None = None
        if config.stage == 2:
            self.summary_prompt = init_memory(backbone, 1)
            self.recall = MemoryRecall(self.hidden_size, config.recall_hidden_dim, dtype=self.dtype, device=self.device,
                                       choice=config.recall_choice, policy=config.cache_policy)

    @property
    def memory_tokens(self) -> int:
        return self.config.memory_tokens

    @property
    def sensory_tokens(self) -> int:
        return self.config.sensory_tokens

    @property
    def summary_tokens(self) -> int:
        """j: text tokens the summary prompt reads (the first round(S * sum_fraction))."""
        return max(1, round(self.segment_tokens * self.config.sum_fraction))

    def summarize(self, segment_ids: Tensor, lengths: Tensor, checkpointed: int = 0) -> Tensor | None:
        """(B, n, d) summaries of every segment from [T | first j tokens | T], in batched forwards.

        Segment 0 recalls nothing, so its row is left as zeros and not computed. A forward reads
        ``summary_segments`` segments of every document (at most ``summary_batch_tokens`` tokens), so
        its memory is that of a few segment steps, whatever the document's length. With gradients, the summaries of
        the ``checkpointed`` earliest segments run under activation checkpointing, as those segments' steps do: a
        summary keeps about half of a segment step's activations otherwise.
        """
        if self.recall is None:
            return None
        batch, n, _ = segment_ids.shape
        first = torch.zeros(batch, 1, self.hidden_size, dtype=self.dtype, device=segment_ids.device)
        if n == 1:
            return first
        rows = min(batch * self.config.summary_segments, self.config.summary_batch_tokens // (self.summary_tokens + 2))
        ids = segment_ids[:, 1:].transpose(0, 1).reshape((n - 1) * batch, -1)  # segment-major rows
        checkpointed_rows = max(0, min(checkpointed, n) - 1) * batch if torch.is_grad_enabled() else 0
        later = self._summaries(ids, lengths[:, 1:].transpose(0, 1).reshape(-1), rows, checkpointed_rows)
        return torch.cat([first, later.view(n - 1, batch, -1).transpose(0, 1)], dim=1)

    def _summaries(self, segment_ids: Tensor, lengths: Tensor, rows_per_pass: int | None = None,
                   checkpointed_rows: int = 0) -> Tensor:
        """(R, d) last hidden state at the trailing prompt of [T | first j tokens | T], in chunks of rows; the first
        ``checkpointed_rows`` rows under activation checkpointing (no chunk straddles that boundary)."""
        if rows_per_pass is None:
            rows_per_pass = self.config.summary_batch_tokens // (min(segment_ids.shape[1], self.summary_tokens) + 2)
        rows, total = max(1, rows_per_pass), segment_ids.shape[0]
        starts = [*range(0, checkpointed_rows, rows), *range(checkpointed_rows, total, rows)]
        recomputed = partial(checkpoint, self._summary_pass, use_reentrant=False)
        return torch.cat([(recomputed if start < checkpointed_rows else self._summary_pass)(
                              segment_ids[start:end], lengths[start:end])
                          for start, end in zip(starts, [*starts[1:], total], strict=True)])

    def _summary_pass(self, segment_ids: Tensor, lengths: Tensor) -> Tensor:
        """(R, d): one forward of [T | head | T] for R segments (R, S) of ``lengths`` (R,) tokens."""
        embeds, at = self._summary_rows(segment_ids, lengths)
        at = at[:, None, None].expand(-1, 1, embeds.shape[-1])
        return self.base_hidden_states(embeds).gather(1, at)[:, 0]

    def _summary_rows(self, segment_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(R, j + 2, d) embeddings [T | j tokens | T] of R segments, and the (R,) positions of the trailing T.

        The j tokens: the first of each segment (the paper's), or with ``recall_query: question`` the last j of the
        ``lengths`` tokens known when it opens (all when fewer): in QA's answer layout they end with the question.
        """
        j = min(self.summary_tokens, segment_ids.shape[1])
        heads = segment_ids[:, :j]
        if self.config.recall_query == "question":
            start = (lengths - j).clamp(min=0)  # (R,)
            heads = segment_ids.gather(1, start[:, None] + torch.arange(j, device=segment_ids.device))
        lengths = lengths.clamp(max=j)
        prompt = self.summary_prompt.to(self.dtype).expand(heads.shape[0], -1, -1)  # (R, 1, d)
        embeds = torch.cat([prompt, self.embed(heads), torch.zeros_like(prompt)], dim=1)
        at = lengths + 1  # right after each head
        embeds = embeds.scatter(1, at[:, None, None].expand(-1, 1, embeds.shape[-1]), prompt)
        return embeds, at

    def summarizes_inline(self, batch_size: int) -> bool:
        """Compute the next segment's summary in this segment's backbone call (as extra batch rows)?

        Ahead (batched passes before the recurrence) does the least arithmetic; inline costs no
        extra backbone call, which is what counts while a step is launch-bound: a small batch of a
        small backbone on a GPU (``INLINE_MAX_WORK``). ``auto`` picks inline there, and ahead in training
        (gradients keep the reference's order), on a CPU and for larger steps, where arithmetic is the
        cost. Both give the same summaries.
        """
        mode = self.config.summary_pass
        if self.recall is None or mode == "ahead" or torch.is_grad_enabled():
            return False
        if mode == "inline":
            return True
        work = batch_size * self.segment_length * self.backbone_weights
        return self.device.type == "cuda" and work <= INLINE_MAX_WORK

    @cached_property
    def backbone_weights(self) -> int:
        """The backbone's parameter count: a step's arithmetic per position, to the auto summary rule."""
        return sum(p.numel() for p in self.backbone.parameters())

    def positions_per_segment(self, batch_size: int, training: bool = False) -> int:
        """The step's L positions and its summary's: [T | j tokens | T] ahead, or a side row of L inline."""
        if self.recall is None:
            return self.segment_length
        inline = not training and self.summary_schedule(batch_size) == "inline"
        return self.segment_length + (self.segment_length if inline else self.summary_tokens + 2)

    def side_rows(self, segment_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor] | None:
        """The next segment's summary prompt, run alongside this segment (``summarizes_inline``)."""
        return None if self.recall is None else self._summary_rows(segment_ids, lengths)

    def summary_schedule(self, batch_size: int) -> str | None:
        if self.recall is None:
            return None
        with torch.no_grad():
            return "inline" if self.summarizes_inline(batch_size) else "ahead"

    def record_columns(self) -> dict[str, Any]:
        config = self.config
        return {**super().record_columns(), "recall_context": config.recall_context,
                "recall_hidden_dim": config.recall_hidden_dim, "recall_choice": config.recall_choice,
                "sum_fraction": config.sum_fraction,
                "hmt_stage": config.stage, "memory_write": write_label(config.write, config.span_choice)}

    @classmethod
    def config_for_stage(cls, config: HMTConfig, stage: int) -> HMTConfig:
        return replace(config, stage=stage)

    @property
    def cache_slots(self) -> int:
        """The recall cache's slots: N, or as many as the longest document can write where ``most_tokens`` bounds
        it. A cache that never fills keeps every memory either way (no policy drops one before the cache is full),
        and a smaller one costs less to allocate, copy and score (docs/performance.md, "The recall cache")."""
        if self.most_tokens is None:
            return self.config.recall_context
        return min(self.config.recall_context, math.ceil(self.most_tokens / self.segment_tokens) + 2)

    def initial_state(self, batch_size: int) -> HMTState:
        """Segment 0 reads the learned memory: in the state from the start, as RMT's."""
        return HMTState(batch_size, memory=self.memory.expand(batch_size, -1, -1))

    def _read(self, state: HMTState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None) -> SegmentInput:
        if summary is None:
            summary = state.summary  # made in the previous segment's backbone call (inline)
        if summary is None and state.cache is not None:  # read segment by segment: summarise this one now
            summary = self._summaries(segment_ids, lengths)
        return super()._read(state, segment_ids, lengths, summary)

    def read_memory(self, state: HMTState, summary: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if state.cache is None:  # segment 0 (the learned memory), or stage 1 (passed on directly, as in RMT)
            return state.memory, None
        recalled, weights = self.recall(summary, state.cache)
        return recalled.view(recalled.shape[0], self.memory_tokens, -1), weights

    def read_sensory(self, state: HMTState) -> Tensor | None:
        return state.sensory_ids

    def after_read(self, state: HMTState, read: SegmentInput) -> HMTState:
        """The cache with this read's recall weights noted (``cache_policy: recall`` keeps the memories they favour)."""
        if state.cache is None or read.weights is None:
            return state
        return replace(state, cache=state.cache.noted(read.weights))

    def next_state(
        self, state: HMTState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> HMTState:
        sensory = segment_ids[:, segment_ids.shape[1] - self.sensory_tokens :] if self.sensory_tokens else None
        if self.recall is None:
            return HMTState(state.batch_size, memory=written, sensory_ids=sensory)
        cache = state.cache
        if cache is None:
            cache = self.recall.empty_cache(state.batch_size, self.cache_slots, written)
        return HMTState(state.batch_size, sensory_ids=sensory, cache=self.recall.remember(cache, written),
                        summary=side)
