"""Perplexity of a method over tokenized documents, under two protocols.

* ``stream``: each document is read once, segment after segment; every token but the
  document's first is scored exactly once with the memory of all earlier segments.
  ppl = exp(sum NLL / scored tokens); documents are batched longest first.
* ``paper``: the reference code's windows over the concatenated token stream: window k covers
  [max(0, (k-1)S), kS + test_length), read from fresh memory, and only its last S tokens are
  scored. Reported both token-weighted and as the reference's mean of per-batch exp(CE).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from hmtbench import distributed
from hmtbench.data.tokenize import TokenizedCorpus
from hmtbench.engine import score_segments, segment_batch
from hmtbench.methods.base import SegmentMethod
from hmtbench.oom import HalvingBatches
from hmtbench.stats import bootstrap_ppl_interval

OnBatch = Callable[[int, int], None]  # (segments done, tokens done) in the batch just finished


@dataclass
class PerplexityResult:
    docs: int = 0
    tokens: int = 0
    bytes: int = 0
    nll_sum: float = 0.0
    segment_nll: list[float] = field(default_factory=list)  # by segment index
    segment_tokens: list[int] = field(default_factory=list)
    batch_ppls: list[float] = field(default_factory=list)  # exp(CE) of each batch
    # per document (stream) or window (paper), in the order scored: the bootstrap's resampling units
    doc_nll: list[float] = field(default_factory=list)
    doc_tokens: list[int] = field(default_factory=list)

    @property
    def nll_mean(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else math.nan

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_mean) if self.tokens else math.nan

    @property
    def bpb(self) -> float:
        return self.nll_sum / math.log(2) / self.bytes if self.bytes else math.nan

    @property
    def paper_ppl(self) -> float:
        return sum(self.batch_ppls) / len(self.batch_ppls) if self.batch_ppls else math.nan

    def ppl_interval(self, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Bootstrap interval of ``ppl`` over the scored documents (windows for paper); see ``stats``."""
        return bootstrap_ppl_interval(self.doc_nll, self.doc_tokens, confidence, resamples, seed)

    def per_document(self, order: Sequence[int] | None = None) -> tuple[list[float], list[int]]:
        """(doc_nll, doc_tokens) in the corpus's order, the order ``tokens_sha256`` hashes the documents in:
        ``order[j]`` is the corpus index of the j-th unit scored (``stream_order``); None: scored in that order
        already (paper windows). Two runs on the same documents then pair unit by unit, however each batched."""
        if order is None:
            return list(self.doc_nll), list(self.doc_tokens)
        if sorted(order) != list(range(len(self.doc_nll))):
            raise ValueError(f"order must be a permutation of the {len(self.doc_nll)} units scored")
        nll, tokens = [0.0] * len(order), [0] * len(order)
        for scored, index in enumerate(order):
            nll[index], tokens[index] = self.doc_nll[scored], self.doc_tokens[scored]
        return nll, tokens

    def add(self, nll: torch.Tensor, tokens: torch.Tensor) -> None:
        """Accumulate one batch's (B, n) per-segment sums: by segment index and by document (row).

        The four reductions travel in one float64 tensor, so a batch costs one device-to-host copy;
        token counts are exact in float64 (below 2**53) and come back as ints.
        """
        batch_size, n = nll.shape
        nll = nll.double()
        counts = tokens.double()
        host = torch.cat([nll.sum(0), counts.sum(0), nll.sum(1), counts.sum(1)]).tolist()
        per_segment_nll, per_segment_tokens = host[:n], [int(c) for c in host[n : 2 * n]]
        self._add_segments(per_segment_nll, per_segment_tokens)
        self.doc_nll += host[2 * n : 2 * n + batch_size]
        self.doc_tokens += [int(c) for c in host[2 * n + batch_size :]]
        batch_nll, batch_tokens = sum(per_segment_nll), sum(per_segment_tokens)
        self.nll_sum += batch_nll
        self.tokens += batch_tokens
        if batch_tokens:
            self.batch_ppls.append(math.exp(batch_nll / batch_tokens))

    def _add_segments(self, segment_nll: list[float], segment_tokens: list[int]) -> None:
        """Add sums by segment index, growing the lists to the longer of the two (documents differ in length)."""
        grow = len(segment_nll) - len(self.segment_nll)
        if grow > 0:
            self.segment_nll += [0.0] * grow
            self.segment_tokens += [0] * grow
        for i, (value, count) in enumerate(zip(segment_nll, segment_tokens, strict=True)):
            self.segment_nll[i] += value
            self.segment_tokens[i] += count

    def merge(self, other: PerplexityResult) -> None:
        """Add ``other``'s counts after this one's: merging one-batch results in batch order repeats ``add`` exactly."""
        self._add_segments(other.segment_nll, other.segment_tokens)
        self.nll_sum += other.nll_sum
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.docs += other.docs
        self.batch_ppls += other.batch_ppls
        self.doc_nll += other.doc_nll
        self.doc_tokens += other.doc_tokens


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # ids (B, T), lengths (B,), scored (B, T) or None


def _pad(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids.to(device), torch.tensor([len(r) for r in rows], device=device)


def stream_order(documents: Sequence[Sequence[int]]) -> list[int]:
    """Corpus indices of the documents, longest first (ties in corpus order): the order ``stream_batches`` scores."""
    return sorted(range(len(documents)), key=lambda i: -len(documents[i]))


def stream_batches(corpus: TokenizedCorpus, batch_size: int, device: torch.device) -> Iterator[tuple[Batch, int]]:
    """Whole documents, longest first, ``batch_size`` at a time; yields (batch, scored bytes)."""
    order = stream_order(corpus.documents)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        ids, lengths = _pad([corpus.documents[i] for i in chosen], device)
        yield (ids, lengths, None), sum(corpus.scored_bytes[i] for i in chosen)


def paper_windows(
    corpus: TokenizedCorpus, segment_tokens: int, test_length: int, max_windows: int | None
) -> list[tuple[int, int]]:
    """[start, end) of the reference's test windows over the joined stream (docs/methods.md, "Scoring rule...")."""
    total = sum(len(d) for d in corpus.documents)
    windows = []
    k = 0
    while k * segment_tokens + test_length <= total and (max_windows is None or len(windows) < max_windows):
        windows.append((max(0, (k - 1) * segment_tokens), k * segment_tokens + test_length))
        k += 1
    return windows


def paper_batches(
    corpus: TokenizedCorpus, segment_tokens: int, test_length: int, batch_size: int,
    max_windows: int | None, tokenizer, device: torch.device,
) -> Iterator[tuple[Batch, int]]:
    stream = [t for d in corpus.documents for t in d]
    windows = paper_windows(corpus, segment_tokens, test_length, max_windows)
    for start in range(0, len(windows), batch_size):
        rows = [stream[a:b] for a, b in windows[start : start + batch_size]]
        ids, lengths = _pad(rows, device)
        positions = torch.arange(ids.shape[1], device=device)
        scored = (positions[None] >= (lengths - segment_tokens)[:, None]) & (positions[None] < lengths[:, None])
        scored_bytes = sum(len(tokenizer.decode(r[-segment_tokens:], skip_special_tokens=True).encode()) for r in rows)
        yield (ids, lengths, scored), scored_bytes


@torch.inference_mode()
def evaluate(
    method: SegmentMethod, batches: Iterator[tuple[Batch, int]], on_batch: OnBatch | None = None,
    halving: HalvingBatches | None = None,
) -> PerplexityResult:
    """Score every batch with the shared segment loop and accumulate exact token counts.

    With ``halving``, a batch that runs out of device memory is scored in pieces of fewer rows (``hmtbench.oom``)
    joined back into the batch: the same documents, counts and per-batch exp(CE) (the paper's) as one call, the
    scores to float rounding."""
    result = PerplexityResult()
    for batch, scored_bytes in batches:
        ids, lengths, _ = batch
        score = functools.partial(_score_rows, method, batch)
        pieces = halving.run(score, ids.shape[0]) if halving is not None else [score(slice(None))]
        result.add(torch.cat([nll for nll, _ in pieces]), torch.cat([tokens for _, tokens in pieces]))
        result.docs += ids.shape[0]
        result.bytes += scored_bytes
        if on_batch is not None:
            on_batch(math.ceil(ids.shape[1] / method.segment_tokens) * ids.shape[0], int(lengths.sum()))
    return result


def _score_rows(method: SegmentMethod, batch: Batch, rows: slice) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll, tokens), each (rows, n): ``n`` follows the batch's padded length, so pieces of one batch join."""
    ids, lengths, scored = batch
    piece = segment_batch(ids[rows], lengths[rows], method.segment_tokens, None if scored is None else scored[rows])
    return score_segments(method, piece)


def evaluate_sharded(
    method: SegmentMethod, mine: list[tuple[int, tuple[Batch, int]]], on_batch: OnBatch | None = None,
    halving: HalvingBatches | None = None,
) -> PerplexityResult:
    """``evaluate`` over several processes: each scores its (index, batch) pairs, then all merge every batch.

    Whole batches are dealt (``distributed.deal``), so each batch is scored exactly as the single
    process scores it, and merging the one-batch results in batch order repeats its float64 sums:
    the counts, ppl and the paper's per-batch exp(CE) come out equal.
    """
    scored = [(k, evaluate(method, iter([batch]), on_batch, halving)) for k, batch in mine]
    result = PerplexityResult()
    for _, piece in sorted((p for pieces in distributed.gather_objects(scored) for p in pieces), key=lambda p: p[0]):
        result.merge(piece)
    return result
