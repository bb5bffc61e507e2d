"""The interface every memory method implements, and the segment layout they all share.

A method wraps an *unmodified* Hugging Face causal LM (the way peft's prompt learning does):
it embeds token ids with the backbone's own input embeddings, concatenates its learned vectors,
and calls the backbone with ``inputs_embeds``. One backbone step sees at most ``segment_length``
(L) positions, laid out as::

    [ read memory (m) | sensory (k) | segment text (S) | write memory (m) | right padding ]
      position 0        m             m + k              m + k + len

* plain: m = k = 0, so S = L (the backbone on disjoint segments);
* RMT:   k = 0, read = write = the memory written by the previous segment;
* HMT:   m = 1; sensory = the previous segment's last k token ids; read = recall over a cache.

The write slot sits right after each row's last real token, so a shorter (last) segment is
right-padded *after* everything that is scored or written: in a causal model padding never
changes a score, and no attention mask or position shift is needed for any architecture.
The memory a segment writes is the backbone's last hidden state (after the final norm, the
``hidden_states[-1]`` of HF) at the write slot.

The driver (``hmtbench.engine``) runs every method the same way::

    summaries = method.summarize(segments, lengths)        # (B, n, d) or None, in batched passes
    state = method.initial_state(batch_size)
    for n in range(num_segments):
        nll, state = method.score(state, segments[:, n], lengths[:, n], targets[:, n], summaries[:, n] or None)

``score`` is ``forward`` (which returns the (B, S, V) logits) without the logits: the output head
runs on chunks of the scored positions only, or not at all where nothing is scored. A step reads
and writes nothing on the host, so a segment step can be replayed from a CUDA graph
(``hmtbench.fastpath``); the backbone calls themselves are in ``hmtbench.methods.backbone``.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.backbone import IGNORE, ChunkNll, causal_attention, head_is_plain, hidden_nll, token_nll
from hmtbench.methods.state import MemoryState, RecallCache

__all__ = [
    "TRAINED", "MemoryState", "MethodConfig", "RecallCache", "SegmentInput", "SegmentMethod", "SegmentOutput",
    "max_positions", "trained_field",
]


@dataclass
class SegmentOutput:
    logits: Tensor  # (B, S, V): logits at the segment's text positions; position i predicts token i+1
    state: MemoryState
    recall_weights: Tensor | None = None  # (B, N) HMT's attention over the cache, when it recalled


@dataclass
class SegmentInput:
    """One segment laid out for the backbone: what ``forward`` and ``score`` share."""

    embeds: Tensor  # (B, m + k + S + m, d), or (B, S, d) without memory
    write_at: Tensor | None  # (B, m) positions of the write slots in embeds
    text_start: int  # position of the first text token (m + k)
    memory: Tensor | None  # (B, m, d) memory read
    weights: Tensor | None  # (B, N) recall weights, if the method recalled


TRAINED = "fixed_by_training"  # field metadata key: the trained tensors depend on this setting


def trained_field(default: Any, **kwargs: Any) -> Any:
    """A config field a checkpoint fixes: its tensors were trained with it (a shape, or what they learned)."""
    return field(default=default, metadata={TRAINED: True}, **kwargs)


@dataclass
class MethodConfig:
    """A method's own settings (the segment length L is shared by every method and given apart).

    Each method subclasses this with only its own fields, validated in ``__post_init__`` with
    errors that name the flag. Fields made with ``trained_field`` are fixed by a checkpoint.
    """

    name: ClassVar[str]  # the registry name of the method this configures

    def resolved(self, hidden_size: int) -> MethodConfig:
        """The settings as run on a backbone of width ``hidden_size`` (defaults that depend on it filled in)."""
        return self

    def settings(self) -> dict[str, Any]:
        """``{"name": ..., **fields}``: how the settings travel into recipes, records and checkpoints."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def fixed_by_training(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.metadata.get(TRAINED)}


def max_positions(config: Any) -> int | None:
    """The longest input the backbone's position scheme allows, or None where it has no limit."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class SegmentMethod(nn.Module):
    """Base of every method: the layout above, one backbone step per segment.

    Subclasses say how many memory (m) and sensory (k) positions they use, what they read before
    a segment (``read_memory``, ``read_sensory``) and what they keep after it (``next_state``), in a
    state class of their own. Capabilities the commands need are class attributes and hooks here,
    so nothing outside ``hmtbench.methods`` asks which method it holds.
    """

    name: ClassVar[str]
    label: ClassVar[str]  # how tables and figures name it
    compared_with: ClassVar[str | None] = None  # the method the paper reports this one against
    config_class: ClassVar[type[MethodConfig]]
    reads_whole_document: ClassVar[bool] = False  # one backbone call per document (segment length = its length)
    # How many segments back a segment's tokens can still reach an output through the state: plain 0 (nothing
    # passes), overlap 1 (k token ids), None for a memory (unbounded). The answer pass skips what cannot reach.
    state_reach: ClassVar[int | None] = None
    training_stages: ClassVar[tuple[int, ...]] = ()  # stages `train` can run one after another (HMT: 1, 2)
    host_steps: ClassVar[bool] = False  # a step reads back to the host (retrieval ranks there): no CUDA graph holds it

    def __init__(self, backbone: nn.Module, config: MethodConfig, segment_length: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.segment_length = segment_length
        self.hidden_size = backbone.get_input_embeddings().weight.shape[1]
        limit = max_positions(backbone.config)
        if limit is not None and segment_length > limit:
            if self.reads_whole_document:
                raise HmtbenchError(
                    f"--method {self.name} reads each document in one forward, but they need {segment_length} "
                    f"positions, over the backbone's maximum of {limit}; use shorter documents (--test-length, "
                    "--context-length) or a segmented method"
                )
            raise HmtbenchError(
                f"--segment-length {segment_length} exceeds the backbone's maximum of {limit} positions; "
                f"use --segment-length {limit} or less"
            )
        if self.segment_tokens < 1:
            raise HmtbenchError(
                f"--segment-length {segment_length} leaves no room for text after "
                f"{2 * self.memory_tokens} memory and {self.sensory_tokens} sensory positions; "
                f"use --segment-length {2 * self.memory_tokens + self.sensory_tokens + 1} or more"
            )
        forward_params = inspect.signature(backbone.forward).parameters
        self._keeps_logits = "logits_to_keep" in forward_params
        self._head_is_plain = head_is_plain(backbone)  # score: run the output head ourselves, in chunks
        self.chunk_nll: ChunkNll | None = None  # the loss of a chunk of positions; hmtbench.fastpath compiles one
        self.span_write: nn.Module | None = None  # set by methods that write spans (``add_memory``)

    @classmethod
    def segment_length_for(cls, segment_length: int, document_length: int) -> int:
        """The positions per backbone step for documents of ``document_length`` tokens."""
        return document_length if cls.reads_whole_document else segment_length

    @classmethod
    def config_for_stage(cls, config: MethodConfig, stage: int) -> MethodConfig:
        """The settings of training stage ``stage`` (one of ``training_stages``)."""
        return config

    # ----- what subclasses define -------------------------------------------------------------
    @property
    def memory_tokens(self) -> int:
        """m: memory positions at each end of a segment."""
        return 0

    @property
    def sensory_tokens(self) -> int:
        """k: token ids carried over from the previous segment."""
        return 0

    def initial_state(self, batch_size: int) -> MemoryState:
        return MemoryState(batch_size)

    def read_memory(self, state: MemoryState, summary: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """The (B, m, d) memory this segment reads (and writes through), plus recall weights if any."""
        return None, None

    def read_sensory(self, state: MemoryState) -> Tensor | None:
        """The (B, k) token ids this segment sees before its text, or None."""
        return None

    def next_state(
        self, state: MemoryState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None
    ) -> MemoryState:
        """State after a segment, given the (B, m, d) memory it wrote and what its ``side_rows`` yielded."""
        return state

    def after_read(self, state: MemoryState, read: SegmentInput) -> MemoryState:
        """The state as this segment's read leaves it, before ``next_state``: HMT's cache policy notes the recall
        weights there. The state itself by default."""
        return state

    def write_memory(self, read: SegmentInput, hidden: Tensor) -> Tensor:
        """(B, m, d) memory a segment writes, from its layout and its last hidden states from the text on.

        Both papers': the last hidden states at the write slot. With a ``span_write`` (``write: span``,
        ``hmtbench.methods.span_write``): a span of the segment's input embeddings, or the memory read.
        """
        if self.span_write is not None:
            lengths = read.write_at[:, 0] - read.text_start
            return self.span_write(read.embeds, hidden, read.memory, read.text_start, lengths)
        at = (read.write_at - read.text_start)[..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, at)

    @property
    def writes_from_text(self) -> bool:
        """Whether ``write_memory`` reads every text position's state (decoding then keeps them all)."""
        return self.span_write is not None

    def summarize(self, segment_ids: Tensor, lengths: Tensor, checkpointed: int = 0) -> Tensor | None:
        """Per-segment summaries (B, n, d) computed ahead of the recurrence, or None. ``checkpointed`` (training
        with activation checkpointing): the summaries of that many segments, the earliest, keep only their inputs for
        the backward pass and are computed again there, as those segments' steps are."""
        return None

    def summarizes_inline(self, batch_size: int) -> bool:
        """Whether the engine should pass ``score`` the next segment (``upcoming``) instead of calling ``summarize``."""
        return False

    def summary_schedule(self, batch_size: int) -> str | None:
        """How evaluation computes this method's summaries at ``batch_size``: ahead | inline, None without any."""
        return None

    def positions_per_segment(self, batch_size: int, training: bool = False) -> int:
        """Backbone positions one row's segment step runs, summaries included: what S text tokens cost."""
        return self.segment_length

    def side_rows(self, segment_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor] | None:
        """Rows to run in the same backbone call as a segment, from the next segment's (B, S) ids and (B,) lengths.

        Returns their (B, P, d) embeddings and the (B,) position of each row's hidden state to keep, or None.
        """
        return None

    def record_columns(self) -> dict[str, Any]:
        """The result record's segment/memory columns, as this method runs them (a subclass adds its own)."""
        return {
            "segment_length": self.segment_length,
            "text_tokens": self.segment_tokens,
            "memory_tokens": self.memory_tokens,
            "sensory_tokens": self.sensory_tokens,
        }

    # ----- shared mechanics -----------------------------------------------------------------
    @property
    def segment_tokens(self) -> int:
        """S: text tokens per segment (S = L - 2m - k)."""
        return self.segment_length - 2 * self.memory_tokens - self.sensory_tokens

    @property
    def device(self) -> torch.device:
        return self.backbone.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.get_input_embeddings().weight.dtype

    def added_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters the method adds to the backbone, by name."""
        return {n: p for n, p in self.named_parameters() if not n.startswith("backbone.")}

    def embed(self, token_ids: Tensor) -> Tensor:
        return self.backbone.get_input_embeddings()(token_ids)

    def forward(
        self,
        state: MemoryState,
        segment_ids: Tensor,
        lengths: Tensor,
        summary: Tensor | None = None,
    ) -> SegmentOutput:
        """Read one segment. segment_ids: (B, S) right-padded; lengths: (B,) real tokens per row."""
        read = self._read(state, segment_ids, lengths, summary)
        logits, hidden = self._run_backbone(read.embeds, read.text_start, segment_ids.shape[1], read.memory is not None)
        after = self.next_state(self.after_read(state, read), self._written(read, hidden),
                                self._tail_ids(segment_ids, lengths))
        return SegmentOutput(logits, after, read.weights)

    def score(
        self,
        state: MemoryState,
        segment_ids: Tensor,
        lengths: Tensor,
        targets: Tensor | None,
        summary: Tensor | None = None,
        upcoming: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor | None, MemoryState]:
        """``forward`` scored instead of returning logits: the (B,) summed NLL of ``targets`` (B, S) and the next state.

        ``targets`` None means nothing in the segment is scored: the output head is skipped (and a
        method that writes no memory skips the backbone). NLL as ``token_nll(forward(...).logits)``.
        ``upcoming`` (the next segment's ids and lengths, passed where ``summarizes_inline``) lets a
        method add rows of its own to this backbone call (``side_rows``); what they yield is the next
        state's ``summary``.
        """
        read = self._read(state, segment_ids, lengths, summary)
        side = None if upcoming is None else self.side_rows(*upcoming)
        if targets is None and read.memory is None and side is None:  # nothing to score, write or summarise
            return None, self.next_state(state, None, self._tail_ids(segment_ids, lengths))
        text_len = segment_ids.shape[1]
        logits, hidden, side_hidden = self._call_backbone(
            read.embeds, read.text_start, full_logits=not self._head_is_plain, side=side
        )
        written = self._written(read, hidden)
        if targets is None:  # in training its 0 stays in the autograd graph, as an all-ignored loss always was
            nll = written.float().sum((1, 2)) * 0 if written is not None and written.requires_grad else None
        elif logits is not None:
            nll = token_nll(logits[:, :text_len], targets).sum(-1)
        else:
            nll = hidden_nll(self.backbone.get_output_embeddings(), hidden[:, :text_len], targets, self.chunk_nll)
        return nll, self.next_state(self.after_read(state, read), written, self._tail_ids(segment_ids, lengths),
                                    side_hidden)

    def predict(
        self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, targets: Tensor, summary: Tensor | None = None
    ) -> tuple[Tensor, Tensor, MemoryState]:
        """``score`` plus the argmax at every scored position: teacher-forced greedy decoding, in one step.

        Returns the (B,) summed NLL of ``targets`` (B, S), the (B, S) predicted ids (-1 where nothing is
        scored) and the next state. Greedy decoding reproduces an answer exactly when every predicted id
        equals its target, so QA scores short answers for a whole batch in one pass (``qa/answers.py``).
        The head runs on the scored positions only.
        """
        read = self._read(state, segment_ids, lengths, summary)
        logits, hidden, _ = self._call_backbone(read.embeds, read.text_start, full_logits=not self._head_is_plain)
        text_len = segment_ids.shape[1]
        wanted = targets != IGNORE
        if logits is None:
            rows = self.backbone.get_output_embeddings()(hidden[:, :text_len][wanted])  # (R, V)
        else:
            rows = logits[:, :text_len][wanted]
        predicted = torch.full_like(targets, -1)
        predicted[wanted] = rows.argmax(-1)
        per_position = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        per_position[wanted] = F.cross_entropy(rows.float(), targets[wanted], reduction="none")
        after = self.next_state(self.after_read(state, read), self._written(read, hidden),
                                self._tail_ids(segment_ids, lengths))
        return per_position.sum(-1), predicted, after

    def _read(self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None) -> SegmentInput:
        memory, weights = self.read_memory(state, summary)
        sensory = self.read_sensory(state)
        embeds, write_at = self._layout(memory, sensory, segment_ids, lengths)
        text_start = (0 if memory is None else memory.shape[1]) + (0 if sensory is None else sensory.shape[1])
        return SegmentInput(embeds, write_at, text_start, memory, weights)

    def _tail_ids(self, segment_ids: Tensor, lengths: Tensor) -> Tensor:
        """``segment_ids`` with each row's real tokens moved to its end (whole rows unchanged), so ``next_state``'s
        last k ids are the row's last k tokens also after a short segment (``engine.end_aligned_first``)."""
        if not self.sensory_tokens:
            return segment_ids
        size = segment_ids.shape[1]
        index = (torch.arange(size, device=segment_ids.device)[None] + lengths[:, None] - size) % size
        return segment_ids.gather(1, index)

    def _written(self, read: SegmentInput, hidden: Tensor | None) -> Tensor | None:
        return None if read.memory is None else self.write_memory(read, hidden)

    def _layout(
        self, memory: Tensor | None, sensory_ids: Tensor | None, segment_ids: Tensor, lengths: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Assemble [read | sensory | text | write | pad] embeddings; return them and the write positions (B, m)."""
        parts = [*self._prefix(memory, sensory_ids), self.embed(segment_ids)]
        if memory is None:
            return torch.cat(parts, dim=1), None
        memory = memory.to(self.dtype)
        m = memory.shape[1]
        parts.append(torch.zeros_like(memory))  # placeholder slots, overwritten below
        embeds = torch.cat(parts, dim=1)  # (B, m + k + S + m, d)
        text_start = embeds.shape[1] - segment_ids.shape[1] - m
        write_at = text_start + lengths[:, None] + torch.arange(m, device=lengths.device)  # (B, m)
        embeds = embeds.scatter(1, write_at[..., None].expand(-1, -1, embeds.shape[-1]), memory)
        return embeds, write_at

    def _prefix(self, memory: Tensor | None, sensory_ids: Tensor | None) -> list[Tensor]:
        """The [read memory | sensory] embeddings that precede a segment's text, in the backbone's dtype."""
        parts = [] if memory is None else [memory.to(self.dtype)]
        if sensory_ids is not None:
            parts.append(self.embed(sensory_ids))
        return parts

    def _run_backbone(
        self, embeds: Tensor, text_start: int, text_len: int, want_hidden: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Logits at the text positions (B, S, V) and, if asked, the last hidden states from text_start on."""
        logits, hidden, _ = self._call_backbone(embeds, text_start, full_logits=True)
        return logits[:, :text_len], hidden if want_hidden else None

    def _call_backbone(
        self, embeds: Tensor, text_start: int, full_logits: bool, side: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor | None, Tensor, Tensor | None]:
        """One causal-LM forward: (logits, last hidden states), both from text_start on: (B, tail, V), (B, tail, d).

        The hidden states are read as the input of the output head (a pre-hook), which is HF's
        ``hidden_states[-1]`` for every architecture, without storing every layer's states. With
        ``full_logits=False`` the hook hands the head one position only and no logits come back:
        the caller runs the head itself, on the positions it scores (``hidden_nll``).
        ``side`` rows (``side_rows``) are right-padded to the segment's length and run as extra batch
        rows; the third result is their (B, d) hidden state at the positions they name (else None).
        """
        captured: list[Tensor] = []

        def capture(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            captured.append(args[0])
            return None if full_logits else (args[0][:, -1:], *args[1:])

        batch, tail = embeds.shape[0], embeds.shape[1] - text_start  # text and write positions
        if side is not None:  # causal: right padding changes nothing at the positions kept
            side_embeds = F.pad(side[0].to(embeds.dtype), (0, 0, 0, embeds.shape[1] - side[0].shape[1]))
            embeds = torch.cat([embeds, side_embeds])
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "use_cache": False}
        if self._keeps_logits and side is None:  # side rows keep positions before the tail: the head sees them all
            kwargs["logits_to_keep"] = tail
        hook = self.backbone.get_output_embeddings().register_forward_pre_hook(capture)
        try:
            with causal_attention(self.backbone):
                logits = self.backbone(**kwargs).logits
        finally:
            hook.remove()
        states = captured[0]
        hidden = states[:batch, -tail:]  # (B, tail, d)
        side_hidden = None
        if side is not None:
            at = side[1][:, None, None].expand(-1, 1, states.shape[-1])
            side_hidden = states[batch:].gather(1, at)[:, 0]
        return (logits[:batch, -tail:] if full_logits else None), hidden, side_hidden

    # ----- incremental decoding (used by hmtbench.generation; nothing above calls it) -------------
    def segment_prefix(
        self, state: MemoryState, summary: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """What precedes a segment's text, for decoding it token by token with a KV cache.

        Returns the (B, m + k, d) ``[read memory | sensory]`` embeddings (None when the method has
        neither), the (B, m, d) memory read, which also fills the write slot that closes the
        segment (None for plain), and the read's recall weights (None where it did not recall).
        ``summary`` is this segment's row of ``summarize``. The same read and sensory memories as
        ``forward``, so the first positions match ``_layout``'s.
        """
        memory, weights = self.read_memory(state, summary)
        parts = self._prefix(memory, self.read_sensory(state))
        return (torch.cat(parts, dim=1) if parts else None), (None if memory is None else parts[0]), weights
