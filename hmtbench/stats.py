"""Confidence intervals for the record's metrics (a bootstrap for perplexity, Wilson for proportions), the exact
McNemar test for two methods scored on the same samples, and the paired bootstrap for two methods' perplexity on the
same documents (over seeds too).

All are small and dependency-free at run time (numpy and the standard library), so every command
can report how far a number could move on another draw of the same data, and ``compare`` can tell a
difference from noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

NAN_INTERVAL = (math.nan, math.nan)
# Resamples drawn at once: bounds the (chunk, documents) index array to ~32 MiB whatever the document count.
_CHUNK_ELEMENTS = 1 << 22


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ppl_interval(
    doc_nll: Sequence[float], doc_tokens: Sequence[int], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ppl = exp(sum NLL / sum tokens), resampling whole documents.

    The unit is the document, not the token: tokens of one document share its topic, style and the
    memory built from its earlier segments, so their losses are correlated, and resampling tokens
    as if independent would give intervals far too narrow. Documents are (close to) independent
    draws from the corpus, so each resample draws ``len(doc_nll)`` documents with replacement and
    recomputes the ratio estimator from their summed NLL and tokens (long documents weigh more,
    exactly as in the reported ppl). The same seed gives the same interval.
    (nan, nan) when there are no documents or no scored tokens.
    """
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    nll = np.asarray(doc_nll, dtype=np.float64)
    tokens = np.asarray(doc_tokens, dtype=np.float64)
    if nll.shape != tokens.shape or nll.ndim != 1:
        raise ValueError(f"doc_nll and doc_tokens must be two lists of one length, got {nll.shape} and {tokens.shape}")
    if nll.size == 0 or tokens.sum() == 0:
        return NAN_INTERVAL
    ppls = _resampled_ppls(nll, tokens, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2
    low, high = np.nanquantile(ppls, [tail, 1.0 - tail])
    return float(low), float(high)


def _resampled_ppls(nll: np.ndarray, tokens: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """ppl of each bootstrap resample (nan for a resample of documents without scored tokens)."""
    with np.errstate(over="ignore"):
        return np.exp(_resampled_rates(nll[None], tokens, resamples, rng)[:, 0])


def _resampled_rates(nll: np.ndarray, tokens: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, k): sum NLL / sum tokens of each resample of the documents, for each of the k rows of ``nll``
    (k, n); every row is read at the same resampled documents. nan where a resample holds no scored tokens."""
    k, n = nll.shape
    chunk = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty((resamples, k))
    for start in range(0, resamples, chunk):
        picks = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + len(picks)] = (nll[:, picks].sum(-1) / tokens[picks].sum(1)).T
    return out


STATISTICS = ("ppl", "nll")  # what the document bootstraps estimate: exp(sum NLL / tokens), or the ratio itself


@dataclass(frozen=True)
class PairedBootstrap:
    """A against B on the same documents: the gain of A in % of B (positive = A better), its percentile interval
    over resamples and the two-sided bootstrap p of "no difference"."""

    gain: float
    low: float
    high: float
    p: float
    documents: int
    seeds: tuple[int, int]  # measurements (seeds) behind A and behind B
    resamples: int


def seeds_ppl_interval(doc_nll: np.ndarray, doc_tokens: Sequence[int], confidence: float = 0.95,
                       resamples: int = 2000, seed: int = 0, statistic: str = "ppl") -> tuple[float, float]:
    """Percentile interval of the mean over k seeds of ppl, from ``doc_nll`` (k, n): k runs scored on the same n
    documents (``doc_tokens`` scored tokens each).

    Two levels are resampled, as they were drawn: the documents (one draw shared by every seed, since every seed
    read the same documents) and the seeds (k of the k, with replacement). The spread over seeds thus adds to the
    documents' uncertainty, never replaces it. One seed gives ``bootstrap_ppl_interval`` exactly. With few seeds the
    seed level is optimistic: three values with replacement hold (k-1)/k of their variance.
    """
    _check_bootstrap(confidence, resamples, statistic)
    nll, tokens = _documents(doc_nll, doc_tokens)
    values = _seed_means(nll, tokens, resamples, seed, statistic, [nll.shape[0]])[0]
    return _quantiles(values, confidence)


def paired_ppl_bootstrap(first_nll: np.ndarray, second_nll: np.ndarray, doc_tokens: Sequence[int],
                         confidence: float = 0.95, resamples: int = 2000, seed: int = 0,
                         statistic: str = "ppl") -> PairedBootstrap:
    """Paired bootstrap of A (``first_nll``, (k_a, n)) against B (``second_nll``, (k_b, n)) on the same n documents.

    Each resample draws the documents once for both (the pairing: a document hard for one method is hard for the
    other, and that shared difficulty cancels in the difference), then each side's seeds with replacement, and
    computes the gain 100 (B - A) / B of the mean-over-seeds ppl (lower is better, so positive = A better). p is
    two-sided, (1 + resamples on the far side of 0) / (1 + resamples), doubled, at most 1: a difference is
    significant at 5% when p < 0.05, i.e. when 0 lies outside the gain's 95% percentile interval (up to one
    resample). With few documents the bootstrap is overconfident (every resample of 4 documents that all favour A
    favours A), so p is never below 2 / 2^n, the smallest p that n paired documents can give an exact test (the
    sign-flip test: all n on one side); under 6 documents no difference is significant. The same seed gives the
    same result.
    """
    _check_bootstrap(confidence, resamples, statistic)
    a, tokens = _documents(first_nll, doc_tokens)
    b, _ = _documents(second_nll, doc_tokens)
    means_a, means_b = _seed_means(np.vstack([a, b]), tokens, resamples, seed, statistic, [len(a), len(b)])
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = 100.0 * (means_b - means_a) / means_b
        gains = gains[np.isfinite(gains)]
    point_a, point_b = (_point(x, tokens, statistic) for x in (a, b))
    low, high = _quantiles(gains, confidence)
    far = min(int((gains <= 0).sum()), int((gains >= 0).sum()))
    p = min(1.0, max(2.0 * (1 + far) / (1 + gains.size), 2.0 ** (1 - tokens.size))) if gains.size else math.nan
    return PairedBootstrap(100.0 * (point_b - point_a) / point_b, low, high, p, tokens.size, (len(a), len(b)),
                           resamples)


def _check_bootstrap(confidence: float, resamples: int, statistic: str) -> None:
    _check_confidence(confidence)
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")


def _documents(doc_nll: np.ndarray, doc_tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    nll = np.atleast_2d(np.asarray(doc_nll, dtype=np.float64))
    tokens = np.asarray(doc_tokens, dtype=np.float64)
    if nll.ndim != 2 or tokens.ndim != 1 or nll.shape[1] != tokens.size or nll.shape[0] == 0 or tokens.size == 0:
        raise ValueError(f"need NLL of shape (seeds, documents) and tokens of (documents,), got {nll.shape} and "
                         f"{tokens.shape}")
    return nll, tokens


def _seed_means(nll: np.ndarray, tokens: np.ndarray, resamples: int, seed: int, statistic: str,
                sizes: list[int]) -> list[np.ndarray]:
    """Per resample, the mean over resampled seeds of each group of rows (``sizes``: rows per group, in order).

    The documents are drawn from ``seed``'s stream exactly as ``bootstrap_ppl_interval`` draws them; the seeds from a
    stream of their own, and a group of one row needs no draw, so one seed repeats the single-run interval."""
    rates = _resampled_rates(nll, tokens, resamples, np.random.default_rng(seed))
    with np.errstate(over="ignore"):
        values = np.exp(rates) if statistic == "ppl" else rates
    seeds = np.random.default_rng([seed, 1])
    out, start = [], 0
    for size in sizes:
        group = values[:, start : start + size]
        if size > 1:
            group = np.take_along_axis(group, seeds.integers(0, size, size=(resamples, size)), axis=1)
        out.append(group.mean(1))
        start += size
    return out


def _point(nll: np.ndarray, tokens: np.ndarray, statistic: str) -> float:
    """The mean over seeds of the full-data statistic (what the table shows)."""
    rates = nll.sum(1) / tokens.sum()
    return float((np.exp(rates) if statistic == "ppl" else rates).mean())


def _quantiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return NAN_INTERVAL
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def seed_spread_interval(values: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                         confidence: float = 0.95) -> tuple[float, float]:
    """Interval of the mean over seeds where only each seed's own interval is known (no per-sample data).

    Two independent errors add in quadrature: each run's measurement error (the mean of the runs' half-widths, side
    by side, as the runs scored samples of one size) and the seeds' (z x std / sqrt(k), the normal interval of a
    mean of k). The seed spread widens the runs' interval, never replaces it.
    """
    _check_confidence(confidence)
    values, lows, highs = (np.asarray(x, dtype=np.float64) for x in (values, lows, highs))
    if values.size < 2 or not (values.shape == lows.shape == highs.shape):
        raise ValueError("need two or more seeds, each with its value and interval")
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2)
    mean, seeds = float(values.mean()), z * float(values.std(ddof=1)) / math.sqrt(values.size)
    below, above = float((values - lows).mean()), float((highs - values).mean())
    return mean - math.hypot(below, seeds), mean + math.hypot(above, seeds)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion successes / n; (nan, nan) when n = 0.

    Wilson, not the normal (Wald) interval: QA runs score tens to hundreds of samples, often at
    accuracies of 0 or 1, where Wald collapses to a zero-width interval and Wilson stays honest.
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return NAN_INTERVAL
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2)
    p = successes / n
    shrink = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / shrink
    half = z / shrink * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exactly 0 and 1 at the ends, not 1e-17 off
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def proportion_interval(outcomes: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Wilson interval of the mean of per-sample 0/1 outcomes (accuracy, exact match); (nan, nan) if none."""
    if any(x not in (0, 1) for x in outcomes):
        raise ValueError("a Wilson interval needs 0/1 outcomes; a graded score (F1, ROUGE) has none")
    return wilson_interval(int(sum(outcomes)), len(outcomes), confidence)


def intervals_overlap(a: tuple[float | None, float | None], b: tuple[float | None, float | None]) -> bool:
    """Whether two closed intervals share a point; False if a bound is missing (None or nan: nothing to compare).

    Overlap is a conservative reading: two 95% intervals that do not overlap mark a clear
    difference, while overlapping ones do not prove there is none.
    """
    if any(x is None or math.isnan(x) for x in (*a, *b)):
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value of a paired comparison of 0/1 outcomes on the same samples.

    ``gained``: samples the first method gets right and the second wrong; ``lost``: the reverse. Samples both get
    right (or wrong) say nothing about which is better; under "no difference" each discordant sample goes either way
    with probability 1/2, so p = min(1, 2 P(X <= min(gained, lost))) for X ~ Binomial(gained + lost, 1/2).
    Paired, it sees differences that two overlapping Wilson intervals cannot (56 vs 99 of 100 with 43 gains, 0 losses:
    p ~ 2e-13; 90 vs 95 with 5 gains, 0 losses: p = 0.0625).
    """
    if gained < 0 or lost < 0:
        raise ValueError(f"need non-negative counts, got gained={gained}, lost={lost}")
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2.0 * tail)
