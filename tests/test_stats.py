"""The intervals of hmtbench.stats against hand computations and, where installed, scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hmtbench.stats import bootstrap_ppl_interval, intervals_overlap, mcnemar_exact, wilson_interval

# Wilson at 95%: z = NormalDist().inv_cdf(0.975) = 1.959963984540054, z^2 = 3.841458820694124;
# shrink = 1 + z^2/n, center = (p + z^2/2n) / shrink, half = z / shrink * sqrt(p(1-p)/n + z^2/4n^2).
#   0/10:   shrink 1.384145882, center 0.138766400, half 0.138766400 -> [0, 0.277532800]
#   5/10:   center 0.5, half 1.959963985/1.384145882 * sqrt(0.025 + 0.009603647) = 0.263406909
#           -> [0.236593091, 0.763406909]
#   10/10:  center 1 - 0.138766400 = 0.861233600, half 0.138766400 -> [0.722467200, 1]
#   81/263: p 0.307984791, shrink 1.014606307, center 0.310749048, half 0.055460529 -> [0.255288520, 0.366209577]
#           (Newcombe 1998, Stat. Med. 17:857, table II: 0.2553 to 0.3662)
WILSON_95 = {
    (0, 10): (0.0, 0.2775328),
    (5, 10): (0.2365931, 0.7634069),
    (10, 10): (0.7224672, 1.0),
    (81, 263): (0.2552885, 0.3662096),
}


@pytest.mark.parametrize(("counts", "expected"), WILSON_95.items())
def test_wilson_matches_the_closed_form_by_hand(counts: tuple[int, int], expected: tuple[float, float]) -> None:
    assert wilson_interval(*counts) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("counts", [*WILSON_95, (1, 1), (3, 7), (0, 1)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy(counts: tuple[int, int], confidence: float) -> None:
    stats = pytest.importorskip("scipy.stats")
    reference = stats.binomtest(*counts).proportion_ci(confidence, method="wilson")
    assert wilson_interval(*counts, confidence) == pytest.approx((reference.low, reference.high), abs=1e-12)


def test_wilson_edges() -> None:
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0  # exact ends, not 2.8e-17 off
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_bootstrap_on_three_documents_by_hand() -> None:
    """Three documents: each of the 27 equally likely resamples repeats one document all three times with
    probability 1/27 = 3.7% > 2.5%, so the 95% percentile interval is exactly [exp(min ratio), exp(max ratio)]
    (2000 resamples hold ~74 of each such resample; the 2.5% quantile reads the 50th and 51st values)."""
    nll, tokens = [10.0, 30.0, 12.0], [10, 20, 4]  # ratios 1.0, 1.5, 3.0
    assert bootstrap_ppl_interval(nll, tokens) == pytest.approx((math.e, math.exp(3.0)), rel=1e-12)


def test_bootstrap_on_one_document_is_the_point() -> None:
    assert bootstrap_ppl_interval([6.0], [3]) == pytest.approx((math.exp(2.0), math.exp(2.0)))


def documents(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Documents of 50..500 tokens, each with its own mean loss around 3 nats (correlated within a document)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(50, 500, size=count)
    return rng.normal(3.0, 0.3, size=count) * tokens, tokens


def test_bootstrap_matches_scipy_percentile_bootstrap() -> None:
    stats = pytest.importorskip("scipy.stats")
    nll, tokens = documents(40, seed=1)

    def ppl(n: np.ndarray, t: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.exp(n.sum(axis) / t.sum(axis))

    reference = stats.bootstrap((nll, tokens), ppl, paired=True, vectorized=True, n_resamples=20000,
                                method="percentile", rng=np.random.default_rng(7)).confidence_interval
    low, high = bootstrap_ppl_interval(nll, tokens, resamples=20000)
    width = reference.high - reference.low
    # two independent Monte Carlo runs of 20000: their 2.5% / 97.5% quantiles agree to a few % of the width
    assert abs(low - reference.low) < 0.05 * width and abs(high - reference.high) < 0.05 * width


def test_bootstrap_contains_the_point_and_shrinks_with_more_documents() -> None:
    widths = []
    for count in (20, 2000):
        nll, tokens = documents(count, seed=2)
        low, high = bootstrap_ppl_interval(nll, tokens)
        assert low < math.exp(nll.sum() / tokens.sum()) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 5  # ~ 1/sqrt(100) = 1/10


def test_bootstrap_is_deterministic_under_its_seed() -> None:
    nll, tokens = documents(30, seed=3)
    assert bootstrap_ppl_interval(nll, tokens, seed=5) == bootstrap_ppl_interval(nll, tokens, seed=5)
    assert bootstrap_ppl_interval(nll, tokens, seed=5) != bootstrap_ppl_interval(nll, tokens, seed=6)
    # drawn in chunks for memory: the chunk size never changes what a seed gives
    assert bootstrap_ppl_interval(nll, tokens, resamples=3) == bootstrap_ppl_interval(nll, tokens, resamples=3)


def test_bootstrap_wider_at_higher_confidence_and_edges() -> None:
    nll, tokens = documents(30, seed=4)
    narrow, wide = bootstrap_ppl_interval(nll, tokens, 0.8), bootstrap_ppl_interval(nll, tokens, 0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert all(math.isnan(x) for x in bootstrap_ppl_interval([], []))
    assert all(math.isnan(x) for x in bootstrap_ppl_interval([0.0], [0]))
    with pytest.raises(ValueError):
        bootstrap_ppl_interval([1.0], [1, 2])


def test_intervals_overlap() -> None:
    assert intervals_overlap((1.0, 2.0), (2.0, 3.0)) and intervals_overlap((1.0, 5.0), (2.0, 3.0))
    assert not intervals_overlap((1.0, 2.0), (2.5, 3.0)) and not intervals_overlap((2.5, 3.0), (1.0, 2.0))
    assert not intervals_overlap((math.nan, math.nan), (1.0, 2.0))
    assert not intervals_overlap((1.0, 2.0), (math.nan, math.nan)) and not intervals_overlap((1.0, 2.0), (None, None))


@pytest.mark.parametrize("gained, lost, expected", [
    (5, 0, 2 / 32),  # every discordant sample one way: 2 * 0.5**5
    (6, 1, 2 * (1 + 7) / 128),  # 2 * P(X <= 1), X ~ Bin(7, 1/2)
    (3, 3, 1.0), (0, 0, 1.0), (2, 0, 0.5),
])
def test_mcnemar_exact_by_hand(gained: int, lost: int, expected: float) -> None:
    assert mcnemar_exact(gained, lost) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(lost, gained) == pytest.approx(expected, rel=1e-12)  # two-sided: symmetric


@pytest.mark.parametrize("gained, lost", [(43, 0), (41, 1), (3, 7), (120, 80), (500, 460)])
def test_mcnemar_exact_matches_scipy_binomial_test(gained: int, lost: int) -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    expected = scipy_stats.binomtest(gained, gained + lost, 0.5).pvalue
    assert mcnemar_exact(gained, lost) == pytest.approx(expected, rel=1e-9)


def test_mcnemar_exact_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        mcnemar_exact(-1, 3)


# --- the paired bootstrap over documents (and seeds) behind compare's n.s. marks

def test_paired_bootstrap_matches_scipy_on_paired_documents() -> None:
    """One run a side: scipy's percentile bootstrap resampling the (A, B, tokens) triples together gives the same
    interval of the gain (both Monte Carlo: 20000 resamples, agreement to 3% of the width)."""
    stats = pytest.importorskip("scipy.stats")
    from hmtbench.stats import paired_ppl_bootstrap

    rng = np.random.default_rng(7)
    tokens = rng.integers(200, 2000, size=40).astype(float)
    rate = rng.normal(2.0, 0.3, size=40)  # documents differ in difficulty, for both methods alike
    a, b = tokens * (rate - 0.03 + rng.normal(0, 0.05, 40)), tokens * rate

    def gain(x, y, t, axis=-1):
        ppl_a, ppl_b = np.exp(x.sum(axis) / t.sum(axis)), np.exp(y.sum(axis) / t.sum(axis))
        return 100 * (ppl_b - ppl_a) / ppl_b

    reference = stats.bootstrap((a, b, tokens), gain, paired=True, vectorized=True, method="percentile",
                                n_resamples=20000, random_state=np.random.default_rng(1)).confidence_interval
    found = paired_ppl_bootstrap(a[None], b[None], tokens, resamples=20000)
    width = reference.high - reference.low
    assert found.gain == pytest.approx(gain(a, b, tokens), rel=1e-12)
    assert found.low == pytest.approx(reference.low, abs=0.03 * width)
    assert found.high == pytest.approx(reference.high, abs=0.03 * width)
    assert (found.documents, found.seeds, found.p < 0.05) == (40, (1, 1), reference.low > 0)


def exact_paired(a: list[float], b: list[float], tokens: list[float]) -> np.ndarray:
    """The gain of every one of the n^n equally likely resamples of n documents, enumerated."""
    import itertools

    a, b, tokens = map(np.asarray, (a, b, tokens))
    picks = np.array(list(itertools.product(range(len(a)), repeat=len(a))))
    ppl_a, ppl_b = (np.exp(x[picks].sum(1) / tokens[picks].sum(1)) for x in (a, b))
    return 100 * (ppl_b - ppl_a) / ppl_b


def test_paired_bootstrap_on_three_documents_by_enumeration() -> None:
    """Three documents: 27 equally likely resamples, each 3.7% > 2.5% likely, so the 95% interval is exactly the
    smallest and largest gain; p = 2 min(P(gain <= 0), P(gain >= 0)) of the enumeration (19 and 11 of 27 here: 0.815),
    to Monte Carlo error."""
    from hmtbench.stats import paired_ppl_bootstrap

    a, b, tokens = [10.0, 30.0, 12.0], [12.0, 26.0, 13.5], [10, 20, 4]
    gains = exact_paired(a, b, tokens)
    found = paired_ppl_bootstrap(np.array([a]), np.array([b]), tokens, resamples=100_000)
    assert (found.low, found.high) == pytest.approx((gains.min(), gains.max()), rel=1e-12)
    assert ((gains <= 0).sum(), (gains >= 0).sum()) == (19, 11)
    assert found.p == pytest.approx(2 * 11 / 27, abs=0.01) and not found.p < 0.05


def test_paired_bootstrap_of_one_method_better_on_every_document_has_the_smallest_p() -> None:
    """Twelve documents all better for A: every resample agrees, p = (1 + 0) / (1 + 999) doubled. Three such
    documents: the bootstrap would say the same, but no exact test of 3 pairs goes below 2 / 2^3 = 0.25."""
    from hmtbench.stats import paired_ppl_bootstrap

    tokens = np.arange(10, 22)
    found = paired_ppl_bootstrap(np.array([tokens * 1.8]), np.array([tokens * 2.0]), tokens, resamples=999)
    assert found.p == pytest.approx(2 / 1000) and found.low > 0
    few = paired_ppl_bootstrap(np.array([[9.0, 18.0, 4.0]]), np.array([[10.0, 20.0, 5.0]]), [10, 20, 4],
                               resamples=999)
    assert few.low > 0 and few.p == 0.25 and not few.p < 0.05
    same = paired_ppl_bootstrap(np.array([[9.0, 18.0]]), np.array([[9.0, 18.0]]), [10, 20])
    assert (same.gain, same.low, same.high, same.p) == (0.0, 0.0, 0.0, 1.0)


def test_seed_level_of_the_bootstrap_by_enumeration() -> None:
    """Documents of one difficulty (NLL proportional to tokens) leave only the seeds to resample: two seeds of ppl
    e^1 and e^2 draw means e^1 (1/4), (e^1 + e^2) / 2 (1/2), e^2 (1/4), so the 95% interval is [e^1, e^2]. Against a
    method at e^1, the gain is 0 in a quarter of the resamples and negative otherwise: p = 2 x 1/4."""
    from hmtbench.stats import paired_ppl_bootstrap, seeds_ppl_interval

    tokens = np.array([5.0, 8.0, 3.0])
    seeds = np.vstack([1.0 * tokens, 2.0 * tokens])
    assert seeds_ppl_interval(seeds, tokens, resamples=4000) == pytest.approx((math.e, math.exp(2)), rel=1e-12)
    found = paired_ppl_bootstrap(seeds, tokens[None] * 1.0, tokens, resamples=20_000)
    assert found.seeds == (2, 1)
    assert found.gain == pytest.approx(100 * (math.e - (math.e + math.exp(2)) / 2) / math.e)
    assert found.p == pytest.approx(0.5, abs=0.02)


def test_one_seed_repeats_the_single_run_interval_exactly() -> None:
    from hmtbench.stats import seeds_ppl_interval

    rng = np.random.default_rng(3)
    nll, tokens = rng.gamma(5, 40, size=300), rng.integers(50, 200, size=300)
    assert seeds_ppl_interval(nll[None], tokens) == bootstrap_ppl_interval(nll, tokens)


def test_seed_spread_adds_to_each_runs_interval_in_quadrature() -> None:
    """values 6.0, 6.4, 6.2 (std 0.2), intervals 0.1 below and 0.3 above each: the seeds' part is
    1.959964 x 0.2 / sqrt(3) = 0.226317; below sqrt(0.1^2 + 0.226317^2) = 0.247426, above 0.375791."""
    from hmtbench.stats import seed_spread_interval

    values = [6.0, 6.4, 6.2]
    low, high = seed_spread_interval(values, [v - 0.1 for v in values], [v + 0.3 for v in values])
    assert (low, high) == pytest.approx((6.2 - 0.247426, 6.2 + 0.375791), abs=1e-6)
    with pytest.raises(ValueError):
        seed_spread_interval([6.0], [5.9], [6.1])
