"""BM25 retrieval over the context's segments: the retrieval-augmented baseline of BABILong (Kuratov et al.,
NeurIPS 2024 Datasets and Benchmarks, arXiv 2406.10149: "RAG"), with a lexical retriever (Robertson & Zaragoza, "The
Probabilistic Relevance Framework: BM25 and Beyond", 2009) from the ``bm25s`` package.

Each step reads ``[top-k retrieved segments | segment text]`` (docs/methods.md, "retrieval"):

* the context is cut into the engine's segments of S = L // (top_k + 1) text tokens; every segment read is kept
  in a store (token ids, on the model's device), and nothing else passes between segments;
* a segment that scores a token first ranks the stored segments against a query with BM25 (``bm25s``, over token
  ids), and reads the top_k of them, in document order, before its text. The query is the ``query_tokens`` tokens
  that end at the segment's first prediction that counts: in QA's answer layout the prompt's end, which holds the
  question; in language modelling the tokens just before the segment (so no segment chooses its context by the
  tokens it predicts); while decoding, the tokens known when the segment opens;
* a segment that scores nothing (a QA context segment) only joins the store: no backbone call.

The ranking runs on the host, so a step that scores reads the store back from the device and runs eagerly
(``host_steps``: the fast path does not capture it); the context segments before it cost a copy into the store.
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import MemoryState, MethodConfig, SegmentInput, SegmentMethod, setting
from hmtbench.methods.loss import IGNORE

PAD = 0  # the id that fills a room left short (fewer or shorter segments retrieved), as the engine pads segments
EMPTY = -1  # a position of a stored segment (or a query) that holds no token


@dataclass
class RetrievalConfig(MethodConfig):
    top_k: int = setting(3, "Segments retrieved before each segment that scores: L = (top_k + 1) x S")
    query_tokens: int = setting(8, "The tokens before a segment's first prediction that query the store (8: "
                                   "chosen on passkey's validation split; 32 lets the context before a question "
                                   "outvote it)")
    store_tokens: int = setting(2**21, "Context tokens one document may hold (the store is allocated once: 8 MiB a "
                                       "row)")

    def __post_init__(self) -> None:
        for flag, value in (("top_k", self.top_k), ("query_tokens", self.query_tokens),
                            ("store_tokens", self.store_tokens)):
            if value < 1:
                raise HmtbenchError(f"method.{flag} must be at least 1, got {value}")


@dataclass(frozen=True)
class SegmentStore:
    """Every segment read so far, in reading order: (B, N, S) ids, ``EMPTY`` where a segment had no token."""

    ids: Tensor  # (B, N, S) int32
    count: Tensor  # (B,) int64: segments stored in each row

    def add(self, segment_ids: Tensor) -> SegmentStore:
        """Store (B, s <= S) ids in each row's next slot (a slot past a row's capacity keeps the last, and ``rows``
        refuses to read it). Evaluating, in place: a state before holds fewer segments, so it never sees the write.
        Training, on a copy: activation checkpointing (``--grad-checkpoint``) recomputes a segment from the state it
        saved, which an in-place write would have changed."""
        width = self.ids.shape[-1]
        ids = F.pad(segment_ids, (0, width - segment_ids.shape[1]), value=EMPTY).to(self.ids.dtype)
        slot = self.count.clamp(max=self.ids.shape[1] - 1)
        stored = self.ids.clone() if torch.is_grad_enabled() else self.ids
        stored[torch.arange(ids.shape[0], device=ids.device), slot] = ids
        return SegmentStore(stored, self.count + 1)

    def rows(self) -> list[list[np.ndarray]]:
        """Each row's stored segments as arrays of their tokens, oldest first (one read-back from the device)."""
        counts = self.count.tolist()
        if max(counts, default=0) > self.ids.shape[1]:
            raise HmtbenchError(f"a document spans {max(counts)} segments, more than retrieval's store holds "
                                f"({self.ids.shape[1]} of {self.ids.shape[2]} tokens); raise method.store_tokens")
        ids = self.ids[:, : max(counts, default=0)].cpu().numpy()
        return [[segment[segment != EMPTY] for segment in ids[row, :count]] for row, count in enumerate(counts)]


@dataclass(frozen=True)
class RetrievalState(MemoryState):
    store: SegmentStore | None = None  # None before the first segment


class Retrieval(SegmentMethod):
    """The backbone reading the top_k stored segments most like the question (BM25) before each scored segment."""

    name = "retrieval"
    label = "BM25"
    config_class = RetrievalConfig
    host_steps = True
    strong_baseline = True

    def __init__(self, backbone: nn.Module, config: RetrievalConfig, segment_length: int) -> None:
        if segment_length // (config.top_k + 1) < 1:
            raise HmtbenchError(f"--segment-length {segment_length} leaves no text beside top_k {config.top_k} "
                                f"retrieved segments; use --segment-length {config.top_k + 1} or more")
        super().__init__(backbone, config, segment_length)

    @property
    def segment_tokens(self) -> int:
        """S: text tokens per segment, as many as each retrieved segment holds: L // (top_k + 1)."""
        return self.segment_length // (self.config.top_k + 1)

    def record_columns(self) -> dict[str, Any]:
        return {**super().record_columns(), "retrieved_segments": self.config.top_k}

    def initial_state(self, batch_size: int) -> RetrievalState:
        return RetrievalState(batch_size)

    def read_memory(self, state: RetrievalState, summary: Tensor | None) -> tuple[None, None]:
        """No memory slots: what a segment reads before its text is the retrieved segments (``_read``)."""
        return None, None

    def summarize(self, segment_ids: Tensor, lengths: Tensor, checkpointed: int = 0) -> Tensor:
        """(B, n, S) each segment's ids known when it opens (``lengths``), ``EMPTY`` after: what may query the store."""
        return known_ids(segment_ids, lengths)

    def score(self, state: RetrievalState, segment_ids: Tensor, lengths: Tensor, targets: Tensor | None,
              summary: Tensor | None = None, upcoming: tuple[Tensor, Tensor] | None = None
              ) -> tuple[Tensor | None, RetrievalState]:
        """A segment that scores nothing joins the store, with no backbone call; one that scores retrieves first."""
        if targets is None:
            return None, self.next_state(state, None, self._tail_ids(segment_ids, lengths))
        query = until_first_target(segment_ids, lengths, targets, summary)
        return super().score(state, segment_ids, lengths, targets, query, upcoming)

    def predict(self, state: RetrievalState, segment_ids: Tensor, lengths: Tensor, targets: Tensor,
                summary: Tensor | None = None) -> tuple[Tensor, Tensor, RetrievalState]:
        query = until_first_target(segment_ids, lengths, targets, summary)
        return super().predict(state, segment_ids, lengths, targets, query)

    def _read(self, state: RetrievalState, segment_ids: Tensor, lengths: Tensor, summary: Tensor | None
              ) -> SegmentInput:
        """``summary``: the (B, S) ids that may query (``summarize``'s row, cut by ``score``); None: all of them."""
        known = known_ids(segment_ids, lengths) if summary is None else summary
        room = self.retrieve(state, known)
        embeds = self.embed(segment_ids)
        if room is None:
            return SegmentInput(embeds, None, 0, None, None)
        return SegmentInput(torch.cat([self.embed(room), embeds], dim=1), None, room.shape[1], None, None)

    def segment_prefix(self, state: RetrievalState, summary: Tensor | None = None
                       ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Decoding: the retrieved segments before an open segment, queried by its known tokens (``summary``)."""
        room = self.retrieve(state, summary)
        return (None if room is None else self.embed(room)), None, None

    def _tail_ids(self, segment_ids: Tensor, lengths: Tensor) -> Tensor:
        """The segment's ids with ``EMPTY`` past its length: what the store keeps."""
        return known_ids(segment_ids, lengths)

    def next_state(self, state: RetrievalState, written: Tensor | None, segment_ids: Tensor,
                   side: Tensor | None = None, layers: Tensor | None = None) -> RetrievalState:
        store = state.store
        if store is None:
            slots = -(-self.config.store_tokens // self.segment_tokens)
            size = (state.batch_size, slots, self.segment_tokens)
            store = SegmentStore(torch.full(size, EMPTY, dtype=torch.int32, device=segment_ids.device),
                                 torch.zeros(state.batch_size, dtype=torch.long, device=segment_ids.device))
        return RetrievalState(state.batch_size, store=store.add(segment_ids))

    def retrieve(self, state: RetrievalState, known: Tensor | None) -> Tensor | None:
        """(B, R) ids of the top_k stored segments most like each row's query, in document order, left-padded to
        R = top_k x S whatever a row holds (a row's read never depends on its batch); None before any segment is
        stored."""
        if state.store is None:
            return None
        rows = state.store.rows()
        width = self.segment_tokens * self.config.top_k
        asked = [np.empty(0, dtype=np.int64)] * len(rows) if known is None else [
            row[row != EMPTY] for row in known.cpu().numpy()]
        room = np.full((len(rows), width), PAD, dtype=np.int64)
        for row, (segments, tokens) in enumerate(zip(rows, asked, strict=True)):
            picked = top_segments(segments, query_ids(segments, tokens, self.config.query_tokens), self.config.top_k)
            chosen = np.concatenate([segments[i] for i in picked] or [np.empty(0, dtype=np.int64)])
            room[row, width - len(chosen):] = chosen
        return torch.from_numpy(room).to(self.device)


def known_ids(segment_ids: Tensor, lengths: Tensor) -> Tensor:
    """``segment_ids`` (..., S) with ``EMPTY`` from each row's ``lengths`` (...) on."""
    positions = torch.arange(segment_ids.shape[-1], device=segment_ids.device)
    return torch.where(positions < lengths[..., None], segment_ids, EMPTY)


def until_first_target(segment_ids: Tensor, lengths: Tensor, targets: Tensor, known: Tensor | None) -> Tensor:
    """(B, S) the ids a scoring segment may query with: known ones up to its first scored position (which predicts
    the first target, from the tokens up to it), ``EMPTY`` after."""
    first = (targets != IGNORE).int().argmax(-1)  # (B,) 0 where nothing is scored
    ids = known_ids(segment_ids, torch.minimum(first + 1, lengths))
    return ids if known is None else torch.where(known == EMPTY, EMPTY, ids)


def query_ids(segments: list[np.ndarray], known: np.ndarray, size: int) -> np.ndarray:
    """The last ``size`` tokens of the stored segments followed by the segment's own ``known`` ones."""
    parts = [known]
    held = len(known)
    for segment in reversed(segments):
        if held >= size:
            break
        parts.insert(0, segment)
        held += len(segment)
    return np.concatenate(parts)[-size:]


def top_segments(segments: list[np.ndarray], query: np.ndarray, top_k: int) -> list[int]:
    """Indices of the ``top_k`` segments BM25 ranks highest for ``query``, returned in document order."""
    return sorted(ranking(bm25_scores(segments, query))[:top_k].tolist())


def ranking(scores: np.ndarray) -> np.ndarray:
    """Segment indices, best first: by BM25 score, the newest first among equal scores."""
    return np.lexsort((-np.arange(len(scores)), -scores))


@functools.cache
def _bm25s() -> Any:
    """``bm25s`` (an optional dependency, imported when first used), its logger at WARNING: bm25s sets DEBUG, which
    prints a line per index built once anything gives the root logger a handler.

    It is imported with JAX hidden (unless JAX is already loaded): where JAX is installed, importing bm25s runs a JAX
    op, which claims three quarters of a GPU's memory (JAX's preallocation) for a top-k that hmtbench never calls (it
    ranks with ``ranking``), so two processes on one GPU ran out of memory."""
    hide_jax = "jax" not in sys.modules
    if hide_jax:
        sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` raises ImportError; bm25s takes numpy
    try:
        import bm25s
    finally:
        if hide_jax:
            del sys.modules["jax"]
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


def bm25_scores(segments: list[np.ndarray], query: np.ndarray) -> np.ndarray:
    """BM25 (``bm25s``' Lucene variant, k1 1.5, b 0.75) of each segment for a query, all as token ids."""
    bm25s = _bm25s()
    scores = np.zeros(len(segments), dtype=np.float32)
    tokens = np.concatenate(segments) if segments else np.empty(0, dtype=np.int64)
    vocabulary, inverse = np.unique(tokens, return_inverse=True)
    asked = np.searchsorted(vocabulary, query).clip(max=max(len(vocabulary) - 1, 0))
    asked = asked[vocabulary[asked] == query] if len(vocabulary) else asked[:0]
    if not len(asked):
        return scores  # no query token occurs in any segment: every score is 0
    bounds = np.cumsum([0, *map(len, segments)])
    corpus = [inverse[start:end].tolist() for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    retriever = bm25s.BM25()
    retriever.index((corpus, {int(token): i for i, token in enumerate(vocabulary)}), show_progress=False)
    return retriever.get_scores(asked.tolist())


__all__ = ["Retrieval", "RetrievalConfig", "RetrievalState", "SegmentStore", "bm25_scores", "ranking", "top_segments"]
