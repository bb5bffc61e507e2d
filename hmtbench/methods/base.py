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
runs on chunks of the scored positions only, or not at all where nothing is scored. Both are one segment
step (``hmtbench.methods.segment_step``, the base class's mechanics). A step reads and writes nothing on the
host, so it can be replayed from a CUDA graph (``hmtbench.fastpath``); the backbone calls themselves are in
``hmtbench.methods.hf_calls``, and every one of them (scoring, training, the answer pass, generation, lm-eval)
runs inside the method's ``backbone_hooks`` context.

What a new method must define (``abc`` abstract methods: a class that misses one cannot be built) is
``initial_state``, ``read_memory`` and ``next_state``, plus ``read_layer`` where it declares ``per_layer``;
docs/methods.md, "Adding a method", walks through the rest.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Iterator
from functools import cached_property, partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.config import TRAINED, MethodConfig, setting, trained_field
from hmtbench.methods.hf_calls import head_is_plain, last_hidden_states
from hmtbench.methods.hooks import LayerCapture, layer_hooks, repeated_blocks
from hmtbench.methods.loss import ChunkNll
from hmtbench.methods.record import Column
from hmtbench.methods.segment_step import BackboneOutput, SegmentInput, SegmentOutput, SegmentSteps
from hmtbench.methods.state import MemoryState, RecallCache

__all__ = [
    "TRAINED", "BackboneOutput", "MemoryState", "MethodConfig", "RecallCache", "SegmentInput", "SegmentMethod",
    "SegmentOutput", "max_positions", "setting", "trained_field",
]


def max_positions(config: Any) -> int | None:
    """The longest input the backbone's position scheme allows, or None where it has no limit."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class SegmentMethod(SegmentSteps, nn.Module, metaclass=abc.ABCMeta):
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
    compared_with: ClassVar[tuple[str, ...]] = ()  # the methods every table reports this one against (A vs B, %)
    # A baseline that sees the whole context without a learned memory (full context, retrieval): every memory
    # method is tested against it (``methods.baseline_pairs``).
    strong_baseline: ClassVar[bool] = False
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
    # Static methods of tensors only (no layer index, no self) that --compile compiles, once for every layer and
    # every instance (hmtbench.fastpath): a method's own arithmetic outside the backbone's compiled blocks.
    compiled_parts: ClassVar[tuple[str, ...]] = ()

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
        for part in cls.compiled_parts:
            if not isinstance(inspect.getattr_static(cls, part, None), staticmethod):
                raise TypeError(f"{cls.__name__}.compiled_parts names '{part}', which is not a static method of it")

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
        # The most tokens (prompt and answer) one document of this instance's run holds, where the command knows it
        # before reading (eval-qa, eval-ppl); a method may size per-document buffers to it. None: unknown, no bound.
        self.most_tokens: int | None = None

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
