"""One segment step, as every method runs it: lay the segment out, call the backbone once, write, go on.

``SegmentSteps`` holds the mechanics ``SegmentMethod`` (``hmtbench.methods.base``) runs on the hooks a method
defines there: ``_read`` lays out ``[read memory | sensory | text | write | pad]`` from ``read_memory`` and
``read_sensory``; ``_call_backbone`` runs the causal LM on it inside ``backbone_hooks``; ``write_memory`` and
``next_state`` give the state the next segment reads. ``forward`` (logits), ``score`` (summed NLL) and ``predict``
(NLL and argmax) are that one step (``_step``) read three ways; ``segment_prefix`` is its first part for decoding
token by token (``hmtbench.generation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.hf_calls import causal_attention
from hmtbench.methods.loss import IGNORE, hidden_nll, token_nll
from hmtbench.methods.state import MemoryState


def layout_text_start(size: int, text_size: int, write_slots: int) -> int:
    """Position of a segment's first text token in a layout of ``size`` positions that ends with its ``text_size``
    text positions and ``write_slots`` write slots: [read | sensory | text | write]."""
    return size - text_size - write_slots


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


@dataclass
class Step:
    """One segment step's parts (``SegmentSteps._step``)."""

    read: SegmentInput
    out: BackboneOutput | None  # None: nothing to score, write or summarise, so no backbone call
    written: Tensor | None  # (B, m, d) memory the segment wrote, or None without memory
    state: MemoryState  # what the next segment reads


class SegmentSteps:
    """The segment step of ``SegmentMethod`` (its base class): everything here runs on the hooks a method defines."""

    def forward(
        self,
        state: MemoryState,
        segment_ids: Tensor,
        lengths: Tensor,
        summary: Tensor | None = None,
    ) -> SegmentOutput:
        """Read one segment. segment_ids: (B, S) right-padded; lengths: (B,) real tokens per row."""
        step = self._step(state, segment_ids, lengths, summary, full_logits=True)
        return SegmentOutput(step.out.logits[:, : segment_ids.shape[1]], step.state, step.read.weights)

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
        step = self._step(state, segment_ids, lengths, summary, not self._head_is_plain, upcoming, targets is None)
        out, written, text_len = step.out, step.written, segment_ids.shape[1]
        if targets is None:  # training: a 0 in the autograd graph, as an all-ignored cross-entropy gives
            nll = written.float().sum((1, 2)) * 0 if written is not None and written.requires_grad else None
        elif out.logits is not None:
            nll = token_nll(out.logits[:, :text_len], targets).sum(-1)
        else:
            nll = hidden_nll(self.backbone.get_output_embeddings(), out.hidden[:, :text_len], targets, self.chunk_nll)
        return nll, step.state

    def predict(
        self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, targets: Tensor, summary: Tensor | None = None
    ) -> tuple[Tensor, Tensor, MemoryState]:
        """``score`` plus the argmax at every scored position: teacher-forced greedy decoding, in one step.

        Returns the (B,) summed NLL of ``targets`` (B, S), the (B, S) predicted ids (-1 where nothing is
        scored) and the next state. Greedy decoding reproduces an answer exactly when every predicted id
        equals its target, so QA scores short answers for a whole batch in one pass (``qa/answers.py``).
        The head runs on the scored positions only.
        """
        step = self._step(state, segment_ids, lengths, summary, full_logits=not self._head_is_plain)
        out, text_len = step.out, segment_ids.shape[1]
        wanted = targets != IGNORE
        if out.logits is None:
            rows = self.backbone.get_output_embeddings()(out.hidden[:, :text_len][wanted])  # (R, V)
        else:
            rows = out.logits[:, :text_len][wanted]
        predicted = torch.full_like(targets, -1)
        predicted[wanted] = rows.argmax(-1)
        per_position = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
        per_position[wanted] = F.cross_entropy(rows.float(), targets[wanted], reduction="none")
        return per_position.sum(-1), predicted, step.state

    def _step(self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None,
              full_logits: bool, upcoming: tuple[Tensor, Tensor] | None = None, unscored: bool = False) -> Step:
        """The step ``forward``, ``score`` and ``predict`` share: read, one backbone call, write, the next state.

        ``unscored``: nothing in the segment is scored, so without memory to write or side rows to run the backbone
        is not called at all (``Step.out`` None).
        """
        read = self._read(state, segment_ids, lengths, summary)
        side = None if upcoming is None else self.side_rows(*upcoming)
        tail_ids = self._tail_ids(segment_ids, lengths)
        if unscored and read.memory is None and side is None:
            return Step(read, None, None, self.next_state(state, None, tail_ids))
        out = self._call_backbone(state, read, full_logits, side)
        written = self._written(read, out.hidden)
        after = self.next_state(self.after_read(state, read), written, tail_ids, out.side, out.layers)
        return Step(read, out, written, after)

    def _read(self, state: MemoryState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None) -> SegmentInput:
        memory, weights = self.read_memory(state, summary)
        sensory = self.read_sensory(state)
        self._check_reads(memory, sensory)
        embeds, write_at = self._layout(memory, sensory, segment_ids, lengths)
        text_start = layout_text_start(embeds.shape[1], segment_ids.shape[1], 0 if memory is None else memory.shape[1])
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

    def _tail_ids(self, segment_ids: Tensor, lengths: Tensor) -> Tensor:
        """``segment_ids`` with each row's real tokens moved to its end (whole rows unchanged), so ``next_state``'s
        last k ids are the row's last k tokens also after a short segment (``answer_layout.end_aligned_first``)."""
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
        text_start = layout_text_start(embeds.shape[1], segment_ids.shape[1], m)
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

    # ----- incremental decoding (used by hmtbench.generation) --------------------------------------
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
