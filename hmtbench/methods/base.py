"""The interface every memory method implements, and the segment layout they all share.

A method wraps an *unmodified* Hugging Face causal LM (the way peft's prompt learning does):
it embeds token ids with the backbone's own input embeddings, concatenates its learned vectors,
and calls the backbone with ``inputs_embeds``. One backbone step sees at most ``segment_length``
(L) positions, laid out as::

    [ read memory (m) | sensory (k) | segment text (S) | write memory (m) | right padding ]
      position 0        m             m + k              m + k + len

* plain: m = k = 0, so S = L (the backbone on disjoint segments);
* RMT:   k = 0, read = write = the memory written by the previous segment;
* HMT:   m = 1; sensory = the previous segment's last k token ids; read = recall over a cache;
* ARMT:  no read slot (``read_slot = False``): ``[text | write]``; it reads and writes in every layer
  (``per_layer``): each block's input gains an associative read, each block's output at the write slot
  updates that layer's associative matrix.

The write slot sits right after each row's last real token, so a shorter (last) segment is
right-padded *after* everything that is scored or written: in a causal model padding never
changes a score, and no attention mask or position shift is needed for any architecture.
The memory a segment writes is the backbone's last hidden state (after the final norm, the
``hidden_states[-1]`` of HF) at the write slot; a per-layer method also receives every block's
output there (``next_state``'s ``layers``).

The driver (``hmtbench.engine``) runs every method the same way::

    summaries = method.summarize(segments, lengths)        # (B, n, d) or None, in batched passes
    state = method.initial_state(batch_size)
    for n in range(num_segments):
        nll, state = method.score(state, segments[:, n], lengths[:, n], targets[:, n], summaries[:, n] or None)

``score`` is ``forward`` (which returns the (B, S, V) logits) without the logits: the output head
runs on chunks of the scored positions only, or not at all where nothing is scored. A step reads
and writes nothing on the host, so a segment step can be replayed from a CUDA graph
(``hmtbench.fastpath``); the backbone calls themselves are in ``hmtbench.methods.backbone``, and every
one of them (scoring, training, the answer pass, generation, lm-eval) runs inside the method's
``backbone_hooks`` context.

What a new method must define (``abc`` abstract methods: a class that misses one cannot be built) is
``initial_state``, ``read_memory`` and ``next_state``, plus ``read_layer`` where it declares ``per_layer``;
docs/methods.md, "Adding a method", walks through the rest.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.backbone import (
    IGNORE,
    ChunkNll,
    causal_attention,
    head_is_plain,
    hidden_nll,
    last_hidden_states,
    token_nll,
)
from hmtbench.methods.config import TRAINED, MethodConfig, setting, trained_field
from hmtbench.methods.hooks import LayerCapture, layer_hooks, repeated_blocks
from hmtbench.methods.record import Column
from hmtbench.methods.state import MemoryState, RecallCache

__all__ = [
    "TRAINED", "BackboneOutput", "MemoryState", "MethodConfig", "RecallCache", "SegmentInput", "SegmentMethod",
    "SegmentOutput", "max_positions", "setting", "trained_field",
]


@dataclass
class SegmentOutput:
    logits: Tensor  # (B, S, V): logits at the segment's text positions; position i predicts token i+1
    state: MemoryState
    recall_weights: Tensor | None = None  # (B, N) HMT's attention over the cache, when it recalled


@dataclass
class SegmentInput:
    """One segment laid out for the backbone: what ``forward`` and ``score`` share."""

    embeds: Tensor  # (B, m + k + S + m, d) ((B, k + S + m, d) without a read slot), or (B, S, d) without memory
    write_at: Tensor | None  # (B, m) positions of the write slots in embeds
    text_start: int  # position of the first text token (m + k, or k without a read slot)
    memory: Tensor | None  # (B, m, d) memory read (without a read slot: what fills the write slot)
    weights: Tensor | None  # (B, N) recall weights, if the method recalled
    positions: Tensor | None = None  # (B, T) position ids, where a method places a slot elsewhere than 0..T-1


@dataclass
class BackboneOutput:
    """One causal-LM forward of a segment, from its first text position on (``_call_backbone``)."""

    logits: Tensor | None  # (B, tail, V), or None where the caller runs the head itself
    hidden: Tensor  # (B, tail, d) last hidden states (the output head's input)
    side: Tensor | None  # (B, d) hidden state of each side row at the position it names (``side_rows``)
    layers: Tensor | None  # (B, n_layers, m, d) every block's output at the write slots (``per_layer`` methods)


def max_positions(config: Any) -> int | None:
    """The longest input the backbone's position scheme allows, or None where it has no limit."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class SegmentMethod(nn.Module, metaclass=abc.ABCMeta):
    """Base of every method: the layout above, one backbone step per segment.

    Subclasses say how many memory (m) and sensory (k) positions they use, what they read before
    a segment (``read_memory``, ``read_sensory``), what they read inside it (``read_layer``, per-layer
    methods) and what they keep after it (``next_state``), in a state class of their own. Capabilities
    the commands need are class attributes and hooks here, so nothing outside ``hmtbench.methods`` asks
    which method it holds. The conformance suite (tests/test_conformance.py) checks the declared
    capabilities against what the method does.
    """

    name: ClassVar[str]  # the method's one name: the registry key, the config's name, the record's ``method``
    label: ClassVar[str]  # how tables and figures name it
    compared_with: ClassVar[str | None] = None  # the method the paper reports this one against
    config_class: ClassVar[type[MethodConfig]]
    reads_whole_document: ClassVar[bool] = False  # one backbone call per document (segment length = its length)
    # How many segments back a segment's tokens can still reach an output through the state: plain 0 (nothing
    # passes), overlap 1 (k token ids), None for a memory (unbounded). The answer pass skips what cannot reach.
    state_reach: ClassVar[int | None] = None
    training_stages: ClassVar[tuple[int, ...]] = ()  # stages `train` can run one after another (HMT: 1, 2)
    host_steps: ClassVar[bool] = False  # a step reads back to the host (retrieval ranks there): no CUDA graph holds it
    # Layout: True puts the memory read at the front of a segment and the write slot after its text (RMT, HMT);
    # False keeps the write slot only, [sensory | text | write], S = L - m - k (ARMT).
    read_slot: ClassVar[bool] = True
    # Per-layer state: every backbone call runs each block on ``read_layer`` of its input, and ``next_state``
    # receives every block's output at the write slots (``layers``). The method must define ``read_layer``.
    per_layer: ClassVar[bool] = False
    # Record columns this method's ``record_columns`` adds beyond the shared schema (hmtbench.results.schema).
    record_schema: ClassVar[tuple[Column, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A method's name is declared once, on its class: its config takes it from there."""
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("config_class")
        if config is not None and "name" in cls.__dict__:
            bound = config.__dict__.get("name")
            if bound is not None and bound != cls.name:
                raise TypeError(f"{config.__name__} already configures method '{bound}', not '{cls.name}'")
            config.name = cls.name
        if cls.per_layer and cls.read_layer is SegmentMethod.read_layer:
            raise TypeError(f"{cls.__name__} declares per_layer but does not define read_layer")

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
            memory = self.memory_slots * self.memory_tokens
            raise HmtbenchError(
                f"--segment-length {segment_length} leaves no room for text after "
                f"{memory} memory and {self.sensory_tokens} sensory positions; "
                f"use --segment-length {memory + self.sensory_tokens + 1} or more"
            )
        if self.per_layer and repeated_blocks(backbone) is None:
            raise HmtbenchError(f"--method {self.name} hooks every decoder layer, but this backbone has no list of "
                                "repeated blocks to hook; use another backbone or method")
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
        """m: memory positions at each end of a segment (at its end only, without a read slot)."""
        return 0

    @property
    def sensory_tokens(self) -> int:
        """k: token ids carried over from the previous segment."""
        return 0

    @abc.abstractmethod
    def initial_state(self, batch_size: int) -> MemoryState:
        """The state segment 0 reads.

        Args:
            batch_size: B, the rows the state holds.

        Returns:
            The method's own ``MemoryState`` subclass (``MemoryState(batch_size)`` for a method that carries
            nothing). Every tensor in it has the batch as its first dimension (``state.select_rows``).
        """

    @abc.abstractmethod
    def read_memory(self, state: MemoryState, summary: Tensor | None) -> tuple[Tensor | None, Tensor | None]:
        """What fills this segment's memory slots.

        Args:
            state: what the previous segment left (``initial_state`` for segment 0).
            summary: this segment's (B, d) row of ``summarize``, or None.

        Returns:
            The (B, m, d) memory read (it fills the read slot and the write slot; without a read slot, the write
            slot only), or None exactly when ``memory_tokens`` is 0; and the (B, N) recall weights, or None.
        """

    def read_sensory(self, state: MemoryState) -> Tensor | None:
        """The (B, k) token ids this segment sees before its text, or None (segment 0; a method with k = 0)."""
        return None

    def read_layer(self, state: MemoryState, layer: int, hidden: Tensor) -> Tensor:
        """The input block ``layer`` runs on, from its input ``hidden`` (B, T, d) (``per_layer`` methods only).

        Runs at every position of every backbone call made with a state (``backbone_hooks``), outside compiled
        regions. It must read nothing back to the host (CUDA graphs replay it).
        """
        raise NotImplementedError(f"{type(self).__name__} is not a per-layer method")

    @abc.abstractmethod
    def next_state(
        self, state: MemoryState, written: Tensor | None, segment_ids: Tensor, side: Tensor | None = None,
        layers: Tensor | None = None,
    ) -> MemoryState:
        """The state after a segment.

        Args:
            state: the state the segment read.
            written: (B, m) memory the segment wrote (``write_memory``), or None without memory.
            segment_ids: (B, S) the segment's ids, each row's real tokens moved to its end (``_tail_ids``).
            side: (B, d) what this step's ``side_rows`` yielded, or None.
            layers: (B, n_layers, m, d) every block's output at the write slots (``per_layer`` methods), or None.

        Returns:
            The state the next segment reads. It must not read anything back to the host.
        """

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

    def layout_positions(self, size: int, write_at: Tensor | None, lengths: Tensor) -> Tensor | None:
        """(B, size) position ids of a segment's layout, or None for 0..size-1 (HF's own; every paper method).

        RMT's ``write_after: padding`` gives its write slots the positions the official wrapper's take in a
        right-padded batch (``hmtbench.methods.rmt``).
        """
        return None

    def side_rows(self, segment_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor] | None:
        """Rows to run in the same backbone call as a segment, from the next segment's (B, S) ids and (B,) lengths.

        Returns their (B, P, d) embeddings and the (B,) position of each row's hidden state to keep, or None.
        Side rows read no state: per-layer hooks leave them as they are.
        """
        return None

    def record_columns(self) -> dict[str, Any]:
        """The result record's segment/memory columns, as this method runs them. A subclass adds its own: shared
        schema columns, or columns it declares in ``record_schema``."""
        return {
            "segment_length": self.segment_length,
            "text_tokens": self.segment_tokens,
            "memory_tokens": self.memory_tokens,
            "sensory_tokens": self.sensory_tokens,
        }

    # ----- shared mechanics -----------------------------------------------------------------
    @property
    def memory_slots(self) -> int:
        """Memory slots of m positions per segment: read and write (2), or write only (1, no read slot)."""
        return 2 if self.read_slot else 1

    @property
    def segment_tokens(self) -> int:
        """S: text tokens per segment (S = L - 2m - k; L - m - k without a read slot)."""
        return self.segment_length - self.memory_slots * self.memory_tokens - self.sensory_tokens

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

    @contextlib.contextmanager
    def backbone_hooks(self, state: MemoryState | None, write_at: Tensor | None = None) -> Iterator[LayerCapture]:
        """The one context every call into the backbone runs in: scoring, training, the answer pass, summaries,
        generation and lm-eval alike (peft's ``_enable_peft_forward_hooks``), so no path runs the backbone
        without the method's per-layer hooks.

        ``state``: what the hooks read (None: a call that reads no state, such as HMT's summary pass).
        ``write_at``: (B, m) positions in the call whose every-block output the hooks keep. Yields a
        ``LayerCapture`` whose ``layers`` hold, once the call is done, what ``next_state`` receives. For a
        method without ``per_layer`` it hooks nothing and keeps nothing.
        """
        if not self.per_layer or state is None:
            yield LayerCapture()
            return
        with layer_hooks(self._blocks, partial(self.read_layer, state), write_at, state.batch_size) as capture:
            yield capture

    @cached_property
    def _blocks(self) -> tuple[nn.Module, ...]:
        """The decoder blocks the per-layer hooks sit on (a tuple, so they are not registered twice as submodules)."""
        return tuple(repeated_blocks(self.backbone))

    def base_hidden_states(self, embeds: Tensor, state: MemoryState | None = None) -> Tensor:
        """(R, T, d) last hidden states of the base model for ``embeds`` (R, T, d), inside ``backbone_hooks``."""
        with self.backbone_hooks(state):
            return last_hidden_states(self.backbone, embeds)

    def forward(
        self,
        state: MemoryState,
        segment_ids: Tensor,
        lengths: Tensor,
        summary: Tensor | None = None,
    ) -> SegmentOutput:
        """Read one segment. segment_ids: (B, S) right-padded; lengths: (B,) real tokens per row."""
        read = self._read(state, segment_ids, lengths, summary)
        out = self._call_backbone(state, read, full_logits=True)
        after = self._next(state, read, out, segment_ids, lengths)
        return SegmentOutput(out.logits[:, : segment_ids.shape[1]], after, read.weights)

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
        out = self._call_backbone(state, read, full_logits=not self._head_is_plain, side=side)
        written = self._written(read, out.hidden)
        after = self.next_state(self.after_read(state, read), written, self._tail_ids(segment_ids, lengths), out.side,
                                out.layers)
        if targets is None:  # training: a 0 in the autograd graph, as an all-ignored cross-entropy gives
            nll = written.float().sum((1, 2)) * 0 if written is not None and written.requires_grad else None
        elif out.logits is not None:
            nll = token_nll(out.logits[:, :text_len], targets).sum(-1)
        else:
            nll = hidden_nll(self.backbone.get_output_embeddings(), out.hidden[:, :text_len], targets, self.chunk_nll)
        return nll, after

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
        out = self._call_backbone(state, read, full_logits=not self._head_is_plain)
        text_len = segment_ids.shape[1]
        wanted = targets != IGNORE
        if out.logits is None:
            rows = self.backbone.get_output_embeddings()(out.hidden[:, :text_len][wanted])  # (R, V)
        else:
            rows = out.logits[:, :text_len][wanted]
        predicted = torch.full_like(targets, -1)
        predicted[wanted] = rows.argmax(-1)
        per_position = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        per_position[wanted] = F.cross_entropy(rows.float(), targets[wanted], reduction="none")
        return per_position.sum(-1), predicted, self._next(state, read, out, segment_ids, lengths)

    def _read(self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None) -> SegmentInput:
        memory, weights = self.read_memory(state, summary)
        sensory = self.read_sensory(state)
        self._check_reads(memory, sensory)
        embeds, write_at = self._layout(memory, sensory, segment_ids, lengths)
        text_start = embeds.shape[1] - segment_ids.shape[1] - (0 if memory is None else memory.shape[1])
        positions = self.layout_positions(embeds.shape[1], write_at, lengths)
        return SegmentInput(embeds, write_at, text_start, memory, weights, positions)

    def _check_reads(self, memory: Tensor | None, sensory: Tensor | None) -> None:
        """What ``read_memory`` / ``read_sensory`` return must fit the m and k the method declares (shapes only)."""
        m, k = self.memory_tokens, self.sensory_tokens
        if (memory is None) != (m == 0) or (memory is not None and memory.shape[1] != m):
            shape = None if memory is None else tuple(memory.shape)
            raise HmtbenchError(f"{self.name}: read_memory returned {shape}, but the method declares m = {m}")
        if sensory is not None and sensory.shape[1] != k:
            raise HmtbenchError(f"{self.name}: read_sensory returned {tuple(sensory.shape)}, but k = {k}")

    def _next(self, state: MemoryState, read: SegmentInput, out: BackboneOutput, segment_ids: Tensor,
              lengths: Tensor) -> MemoryState:
        return self.next_state(self.after_read(state, read), self._written(read, out.hidden),
                               self._tail_ids(segment_ids, lengths), out.side, out.layers)

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
        parts = [] if memory is None or not self.read_slot else [memory.to(self.dtype)]
        if sensory_ids is not None:
            parts.append(self.embed(sensory_ids))
        return parts

    def _call_backbone(self, state: MemoryState, read: SegmentInput, full_logits: bool,
                       side: tuple[Tensor, Tensor] | None = None) -> BackboneOutput:
        """One causal-LM forward of a laid-out segment, inside ``backbone_hooks``, from its text on.

        The hidden states are read as the input of the output head (a pre-hook), which is HF's
        ``hidden_states[-1]`` for every architecture, without storing every layer's states. With
        ``full_logits=False`` the hook hands the head one position only and no logits come back:
        the caller runs the head itself, on the positions it scores (``hidden_nll``).
        ``side`` rows (``side_rows``) are right-padded to the segment's length and run as extra batch
        rows; ``BackboneOutput.side`` is their (B, d) hidden state at the positions they name.
        ``read.positions``: the layout's (B, T) position ids (``layout_positions``), which side rows cannot share.
        """
        captured: list[Tensor] = []

        def capture(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            captured.append(args[0])
            return None if full_logits else (args[0][:, -1:], *args[1:])

        embeds = read.embeds
        batch, tail = embeds.shape[0], embeds.shape[1] - read.text_start  # text and write positions
        if side is not None:  # causal: right padding changes nothing at the positions kept
            side_embeds = F.pad(side[0].to(embeds.dtype), (0, 0, 0, embeds.shape[1] - side[0].shape[1]))
            embeds = torch.cat([embeds, side_embeds])
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "use_cache": False}
        positions = read.positions
        if positions is not None:  # with a mask of ones: without one, HF reads a jump in the ids as a packed sequence
            if side is not None:
                raise ValueError("side rows run with the layout's own positions: give no position ids with them")
            kwargs.update(position_ids=positions, attention_mask=torch.ones_like(positions))
        if self._keeps_logits and side is None:  # side rows keep positions before the tail: the head sees them all
            kwargs["logits_to_keep"] = tail
        hook = self.backbone.get_output_embeddings().register_forward_pre_hook(capture)
        try:
            with self.backbone_hooks(state, read.write_at) as layers, causal_attention(self.backbone):
                logits = self.backbone(**kwargs).logits
        finally:
            hook.remove()
        states = captured[0]
        side_hidden = None
        if side is not None:
            at = side[1][:, None, None].expand(-1, 1, states.shape[-1])
            side_hidden = states[batch:].gather(1, at)[:, 0]
        return BackboneOutput(logits[:batch, -tail:] if full_logits else None, states[:batch, -tail:], side_hidden,
                              layers.layers)

    # ----- incremental decoding (used by hmtbench.generation; nothing above calls it) -------------
    def segment_prefix(
        self, state: MemoryState, summary: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """What precedes a segment's text, for decoding it token by token with a KV cache.

        Returns the (B, m + k, d) ``[read memory | sensory]`` embeddings ((B, k, d) without a read slot; None
        when there are none), the (B, m, d) memory read, which also fills the write slot that closes the
        segment (None for plain), and the read's recall weights (None where it did not recall).
        ``summary`` is this segment's row of ``summarize``. The same read and sensory memories as
        ``forward``, so the first positions match ``_layout``'s.
        """
        memory, weights = self.read_memory(state, summary)
        parts = self._prefix(memory, self.read_sensory(state))
        memory = None if memory is None else memory.to(self.dtype)
        return (torch.cat(parts, dim=1) if parts else None), memory, weights
