"""compare under a review's protocol: paired bootstrap marks, seeds aggregated, identical repeats counted once, the
split and the choice's split named, tables whose numbers never break."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hmtbench.analysis.budgets import SeedTokens
from hmtbench.analysis.compare import build
from hmtbench.analysis.documents import RESAMPLES
from hmtbench.analysis.formats import render
from hmtbench.analysis.load import load_results
from hmtbench.analysis.report import run_compare
from hmtbench.analysis.report_tables import run_labels
from hmtbench.analysis.table_text import bound, number
from hmtbench.analysis.terminal import WIDTH
from hmtbench.stats import (
    bootstrap_ppl_interval,
    paired_ppl_bootstrap,
    seed_spread_interval,
    seeds_ppl_interval,
    wilson_interval,
)
from tests.test_compare import write_run

RESULTS = Path(__file__).resolve().parents[1] / "results"


def documents(rate_shift: float, noise: float, seed: int, n: int = 30) -> tuple[list[float], list[int]]:
    """n documents of widely different difficulty (NLL per token 1.5 to 3.0), the method ``rate_shift`` nats per
    token easier on each, with per-document noise: per-document sums as eval-ppl records them."""
    rng = np.random.default_rng(seed)
    tokens = np.random.default_rng(0).integers(300, 1500, size=n)
    rate = np.random.default_rng(1).uniform(1.5, 3.0, size=n) - rate_shift + rng.normal(0, noise, n)
    return (tokens * rate).tolist(), tokens.tolist()


def write_ppl(folder: Path, method: str, nll: list[float], tokens: list[int], per_document: bool = True,
              data: str = "docs", **values) -> Path:
    """An eval-ppl record whose ppl and interval are those of its documents (as eval-ppl computes them)."""
    low, high = bootstrap_ppl_interval(nll, tokens)
    columns = {"doc_nll": nll, "doc_tokens": tokens} if per_document else {}
    return write_run(folder, method, ppl=float(np.exp(sum(nll) / sum(tokens))), ppl_ci_low=low, ppl_ci_high=high,
                     tokens_scored=sum(tokens), data_sha256=data, **columns, **values)


def table_of(*folders: Path, metric: str = "ppl"):
    return build(load_results(list(folders), warn=lambda m: None), metric, join_baselines=True)


def test_a_paired_bootstrap_on_shared_documents_decides_the_mark(tmp_path: Path) -> None:
    """HMT is 0.03 nats/token easier than plain on each of 30 documents of very different difficulty: the two
    intervals overlap (the documents' spread dwarfs 3%), yet document by document the gain is clear, and the paired
    test says so. The same records without per-document NLL (older records) fall back to the overlap: n.s."""
    plain, hmt = documents(0.0, 0.01, seed=1), documents(0.03, 0.01, seed=2)
    write_ppl(tmp_path / "new", "plain", *plain)
    write_ppl(tmp_path / "new", "hmt", *hmt)
    (row,) = table_of(tmp_path / "new").rows
    a, b = row.cells["hmt"], row.cells["plain"]
    assert max(a.low, b.low) <= min(a.high, b.high)  # the intervals overlap
    test = row.paired[("hmt", "plain")]
    reference = paired_ppl_bootstrap(np.array([hmt[0]]), np.array([plain[0]]), plain[1], resamples=RESAMPLES)
    assert (test.gain, test.low, test.high, test.p) == (reference.gain, reference.low, reference.high, reference.p)
    assert test.gain == pytest.approx(row.deltas[("hmt", "plain")], rel=1e-9)  # the table's delta, tested
    assert test.p < 0.05 < 0.05 + test.low and row.unclear == []
    csv = pd.read_csv(io.StringIO(render([table_of(tmp_path / "new")], "csv")))
    label = "HMT vs plain, %"
    assert csv[[f"{label} paired test", f"{label} paired p", f"{label} n.s."]].values.tolist() == [
        ["paired bootstrap", pytest.approx(reference.p), False]]
    assert csv[f"{label} paired low"].item() == pytest.approx(reference.low)
    (payload,) = json.loads(render([table_of(tmp_path / "new")], "json"))
    assert payload["rows"][0]["paired_tests"][label]["p"] == pytest.approx(reference.p)
    text = render([table_of(tmp_path / "new")], "table")
    assert f"HMT vs plain: {reference.gain:+.2f}% [{reference.low:+.2f}, {reference.high:+.2f}] on 30 documents, " \
           f"p = {reference.p:.2g}" in text

    write_ppl(tmp_path / "old", "plain", *plain, per_document=False)
    write_ppl(tmp_path / "old", "hmt", *hmt, per_document=False)
    (old,) = table_of(tmp_path / "old").rows
    assert old.paired == {} and old.unclear == [("hmt", "plain")]
    markdown = render([table_of(tmp_path / "old")], "markdown")
    assert "- no paired test for 1 deltas: their records hold no per-document NLL (doc_nll; eval-ppl records " \
           "before it) or scored other documents; their intervals are compared instead" in markdown.splitlines()
    assert "- n.s. = not significant: the two methods' 95% intervals overlap" in markdown.splitlines()


def test_a_noise_difference_is_not_significant_and_other_documents_are_not_paired(tmp_path: Path) -> None:
    plain, noisy = documents(0.0, 0.01, seed=1), documents(0.0, 0.05, seed=3)
    write_ppl(tmp_path, "plain", *plain)
    write_ppl(tmp_path, "rmt", *noisy)
    write_ppl(tmp_path, "hmt", *documents(0.03, 0.01, seed=2), data="other docs")
    (row,) = table_of(tmp_path).rows
    test = row.paired[("rmt", "plain")]
    assert test.p >= 0.05 and test.low < 0 < test.high and ("rmt", "plain") in row.unclear
    assert ("hmt", "plain") not in row.paired and ("hmt", "rmt") not in row.paired  # other data: no pairing


def test_identical_repeats_are_one_measurement_with_its_interval_and_mark(tmp_path: Path) -> None:
    """The issue's repro: each method evaluated twice, identically (same settings, seed and data; only the run id
    differs). The cell is one measurement with its interval, not '± 0.000 (n=2)', and HMT vs plain keeps n.s."""
    for _ in range(2):
        for method, ppl, low, high in [("plain", 8.437, 6.74, 10.1), ("rmt", 8.543, 6.74, 10.2),
                                       ("hmt", 7.308, 5.87, 8.80)]:
            write_run(tmp_path, method, ppl=ppl, ppl_ci_low=low, ppl_ci_high=high, seed=3407, data_sha256="d")
    table = table_of(tmp_path)
    (row,) = table.rows
    assert {m: (c.count, len(c.runs), c.std, c.low, c.high) for m, c in row.cells.items()} == {
        "plain": (1, 2, None, 6.74, 10.1), "rmt": (1, 2, None, 6.74, 10.2), "hmt": (1, 2, None, 5.87, 8.80)}
    assert row.unclear == [("hmt", "rmt"), ("rmt", "plain"), ("hmt", "plain")]
    text = render([table], "table")
    assert "± 0.000" not in text and "(n=2)" not in text
    assert "7.308* [5.87, 8.8]" in text and "+13.38 n.s." in text
    assert "identical repeats (same settings, seeds and data; only the run id and time differ) count as one " \
           "measurement: 3 cells hold them" in " ".join(text.split())


def test_the_committed_make_run_keeps_its_interval_and_mark() -> None:
    """results/make-run holds `make run` three times (identical repeats): +13.38 n.s., as a single run printed."""
    text = run_compare([RESULTS / "make-run"], {}, metric="ppl", warn=lambda m: None)
    assert "± 0.000" not in text and "+13.38 n.s." in text and "7.308* [5.87, 8.8]" in text


def write_seeds(folder: Path, method: str, runs: list[tuple[int, list[float], list[int]]], recipe: str,
                **values) -> None:
    """Evaluations of checkpoints of one training recipe at several training seeds (one folder per seed); each
    recipe's checkpoints are its own (their tensors' hash names seed and recipe)."""
    for seed, nll, tokens in runs:
        write_ppl(folder, method, nll, tokens, checkpoint=f"/runs/{method}-seed{seed}/stage2/final",
                  checkpoint_sha256=f"{seed:08d}" + recipe[:8] + "0" * 48, train_seed=seed, train_recipe=recipe,
                  train_mode="memory", **values)


def test_runs_at_several_training_seeds_are_one_cell_of_mean_spread_and_interval(tmp_path: Path) -> None:
    """HMT trained at seeds 1, 2, 3 (one recipe), each evaluated on the same 30 documents: one row, the mean of the
    three ppls ± their std (n=3), an interval from documents and seeds resampled together, the per-seed values in
    the CSV and under --per-seed; plain is tested against the three seeds at once."""
    plain = documents(0.0, 0.01, seed=1)
    hmt = [(seed, *documents(shift, 0.01, seed=10 + seed)) for seed, shift in [(1, 0.02), (2, 0.05), (3, 0.03)]]
    write_ppl(tmp_path, "plain", *plain)
    write_seeds(tmp_path, "hmt", hmt, recipe="ab" * 8)
    table = table_of(tmp_path)
    (row,) = table.rows
    cell = row.cells["hmt"]
    ppls = [float(np.exp(sum(nll) / sum(tokens))) for _, nll, tokens in hmt]
    assert (cell.count, cell.mean, cell.std) == (3, pytest.approx(np.mean(ppls)), pytest.approx(np.std(ppls, ddof=1)))
    stacked = np.array([nll for _, nll, _ in hmt])
    assert (cell.low, cell.high) == seeds_ppl_interval(stacked, plain[1], resamples=RESAMPLES)
    assert cell.interval == "bootstrap" and cell.low < min(ppls) and cell.high > max(ppls)
    assert row.key["variant"] is None  # nothing else differs: no variant to name, the seeds line says which
    assert row.full["hmt"]["checkpoint"] == "recipe abababab (train seeds 1, 2, 3)"
    test = row.paired[("hmt", "plain")]
    reference = paired_ppl_bootstrap(stacked, np.array([plain[0]]), plain[1], resamples=RESAMPLES)
    assert (test.seeds, test.p, test.low) == ((3, 1), reference.p, reference.low)

    csv = pd.read_csv(io.StringIO(render([table], "csv")))
    assert csv["hmt_n"].item() == 3 and csv["hmt_std"].item() == pytest.approx(cell.std)
    assert csv["hmt_per_seed"].item() == "; ".join(f"train seed {s}: {p!r}" for s, p in zip((1, 2, 3), ppls,
                                                                                             strict=True))
    per_seed = render([table], "markdown", per_seed=True)
    assert "-   HMT: " + "; ".join(f"train seed {s}: {p:.3f} [" for s, p in zip((1, 2, 3), ppls, strict=True)) \
        == re.sub(r" \[[^]]*\]", " [", per_seed.splitlines()[-1])
    assert "- seeds: plain: seed ?; HMT: train seeds 1, 2, 3" in per_seed.splitlines()
    assert f"**{np.mean(ppls):.3f} ± {np.std(ppls, ddof=1):.3f}** [{cell.low:.3g}, {cell.high:.3g}] (n=3)" in per_seed


def test_two_recipes_stay_apart_and_one_seed_alone_keeps_its_checkpoint(tmp_path: Path) -> None:
    write_seeds(tmp_path, "hmt", [(1, *documents(0.02, 0.01, 11)), (2, *documents(0.03, 0.01, 12))], recipe="a" * 16)
    write_seeds(tmp_path, "hmt", [(1, *documents(0.05, 0.01, 13))], recipe="b" * 16, recall_choice="hard")
    rows = table_of(tmp_path).rows
    assert sorted((r.cells["hmt"].count, r.key["variant"]) for r in rows) == [
        (1, "hmt: checkpoint=stage2/final [00000001], recall_choice=hard, train_seed=1"),
        (2, "hmt: checkpoint=recipe aaaaaaaa (train seeds 1, 2), recall_choice=soft")]


def test_splits_are_never_pooled_and_the_choice_split_is_named(tmp_path: Path) -> None:
    for split, shift in [("validation", 0.0), ("test", 0.01)]:
        write_ppl(tmp_path, "plain", *documents(shift, 0.01, seed=1), split=split)
        write_ppl(tmp_path, "hmt", *documents(shift + 0.03, 0.01, seed=2), split=split,
                  selected_on="validation" if split == "test" else None)
    table = table_of(tmp_path)
    assert [(r.key["split"], r.cells["hmt"].count, r.cells["hmt"].selected_on) for r in table.rows] == [
        ("test", 1, ["validation"]), ("validation", 1, [None])]
    lines = render([table], "markdown").splitlines()
    assert "| backbone | dataset | split | plain | HMT | HMT vs plain, % |" in lines
    assert "- splits: test, validation (a column; rows of different splits are never pooled)" in lines
    assert "- configuration chosen on: plain: not stated; HMT: not stated, validation" in lines


def seeded_wide_results(folder: Path) -> None:
    """Five methods at three seeds each, with intervals, in rows that differ in several keys: wide cells."""
    for method, base in [("plain", 13.742), ("full", 11.238), ("overlap", 12.95), ("rmt", 12.481), ("hmt", 10.125)]:
        for length, batch in [(2000, 8), (8192, 2), (32768, 1)]:
            for seed in (1, 2, 3):
                value = base * (1 + 0.01 * seed) * length / 2000
                write_run(folder, method, ppl=value, ppl_ci_low=value * 0.81, ppl_ci_high=value * 1.23, seed=seed,
                          test_length=length, batch_size=batch, max_docs=100 + length // 1000, dtype="bfloat16")


def test_terminal_table_never_breaks_a_number_and_fits_its_width(tmp_path: Path) -> None:
    seeded_wide_results(tmp_path)
    notes: list[str] = []
    text = run_compare([tmp_path], {}, metric="ppl", warn=notes.append)
    lines = text.splitlines()
    assert max(map(len, lines + [n for note in notes for n in note.splitlines()])) <= WIDTH
    table = table_of(tmp_path)
    words = {word.strip("[](),*%") for word in text.split()}
    for row in table.rows:
        for cell in row.cells.values():
            shown = [number(cell.mean), number(cell.std), bound(cell.low), bound(cell.high)]
            assert set(shown) <= words, (shown, words)  # each number whole on one line
        for value in row.deltas.values():
            assert f"{value:+.2f}" in words


def test_long_notes_and_footnotes_wrap_at_spaces_within_the_width(tmp_path: Path) -> None:
    path = "/very/long/folder/name/of/a/checkpoint/" + "x" * 60
    for seed in (1, 2):
        write_run(tmp_path, "hmt", ppl=10.0 + seed, seed=seed, checkpoint=f"{path}-{seed}", sensory_tokens=8 * seed)
    write_run(tmp_path, "plain", ppl=12.0)
    notes: list[str] = []
    text = run_compare([tmp_path], {}, metric="ppl", warn=notes.append)
    every = text.splitlines() + [line for note in notes for line in note.splitlines()]
    assert all(len(line) <= WIDTH for line in every)
    assert any("differ in" in note for note in notes)


@pytest.mark.parametrize("grid", [
    (["train_mode", "HMT", "HMT vs plain, %"], [["lora", "1.000\n[2, 3]", "+1.00"], ["–", "22.000*", "n.s."]], 1),
    (["HMT"], [["1.0"]], 0),
    (["variant", "plain", "RMT"], [["[12]", "13.742 ± 0.137", "[11.2, 16.8]\n(n=3)"]], 1),
])
def test_the_layouts_width_is_what_rich_draws(grid) -> None:
    from rich.console import Console
    from rich.measure import Measurement

    from hmtbench.analysis.terminal import _grid, _table_width

    console = Console(file=io.StringIO(), width=10 * WIDTH)
    assert _table_width(grid) == Measurement.get(console, console.options, _grid(*grid)).maximum


@pytest.mark.parametrize("grid", [
    (["train_mode", "HMT", "HMT vs plain, %"], [["lora", "1.000\n[2, 3]", "+1.00"], ["–", "22.000*", "n.s."]], 1),
    (["context_length", "plain"], [["4096 ", "7.5  "], ["", "–"], ["1k\n ", " 8.1"]], 1),  # spaces at the ends
    (["row", "RMT"], [], 1),  # no rows
    (["variant", "plain"], [["[1]", ":warning: 日本\t1.0"]], 1),  # what rich changes: drawn by rich
    (["backbone", "a"], [["x" * 130, "1"]], 1),  # wider than WIDTH: rich folds it
])
def test_the_terminal_table_is_what_rich_prints(grid) -> None:
    """A table of plain text is laid out without rich (a table of thousands of rows took it minutes), the same."""
    from hmtbench.analysis.terminal import _grid, _printed_grid, _rich

    assert _printed_grid(grid) == _rich(_grid(*grid))


def test_committed_bench_table_keeps_every_number_whole() -> None:
    """results/h100-bench's tokens/s table (ten key columns vary): each cell's number (e.g. 151,739) stands whole on
    one line, never folded into '151,7' over '39*', and the table keeps to its width."""
    folder = RESULTS / "h100-bench"
    text = run_compare([folder], {}, metric="tokens_per_s", warn=lambda m: None)
    assert max(map(len, text.splitlines())) <= WIDTH
    words = {word.strip("[](),*%") for word in text.split()}
    table = build(load_results([folder], warn=lambda m: None), "tokens_per_s", join_baselines=True)
    shown = {number(c.mean) for row in table.rows for c in row.cells.values() if c.mean is not None}
    assert "151,739" in shown and shown <= words
    assert {f"{v:+.2f}" for row in table.rows for v in row.deltas.values() if v is not None} <= words


def test_a_repeat_recorded_before_per_document_nll_does_not_stop_the_paired_test(tmp_path: Path) -> None:
    """An old repeat (no doc_nll) beside a new one of the same measurement: the new one's documents are tested."""
    plain, hmt = documents(0.0, 0.01, seed=1), documents(0.03, 0.01, seed=2)
    write_ppl(tmp_path, "plain", *plain)
    write_ppl(tmp_path, "plain", *plain, per_document=False)
    write_ppl(tmp_path, "hmt", *hmt)
    (row,) = table_of(tmp_path).rows
    assert (row.cells["plain"].count, len(row.cells["plain"].runs)) == (1, 2)
    reference = paired_ppl_bootstrap(np.array([hmt[0]]), np.array([plain[0]]), plain[1], resamples=RESAMPLES)
    assert row.paired[("hmt", "plain")].p == reference.p


def test_a_record_made_before_train_seed_existed_is_a_repeat_of_one_that_has_it(tmp_path: Path) -> None:
    """The same checkpoint evaluated before and after records carried train_seed: one measurement, not two seeds."""
    sha = "ab" * 32
    write_run(tmp_path, "hmt", ppl=7.308, ppl_ci_low=5.87, ppl_ci_high=8.8, seed=3407, checkpoint="/c/hmt",
              checkpoint_sha256=sha)
    write_run(tmp_path, "hmt", ppl=7.308, ppl_ci_low=5.87, ppl_ci_high=8.8, seed=3407, checkpoint="/c/hmt",
              checkpoint_sha256=sha, train_seed=3407, train_recipe="c" * 16)
    (row,) = table_of(tmp_path).rows
    assert (row.cells["hmt"].count, row.cells["hmt"].std, len(row.cells["hmt"].runs)) == (1, None, 2)


def test_a_curriculum_recipe_at_several_seeds_is_one_cell_whatever_tokens_each_seed_read(tmp_path: Path) -> None:
    """The protocol's headline chain at seeds 1, 2, 3: fixed steps, but a seed whose curriculum advances reads longer
    contexts, so its training tokens differ. The seeds stay one cell (tokens named as their range), and the interval
    of a share over seeds that learned (0.992) and did not (0.2) stays within [0, 1]."""
    for seed, exact, tokens in [(1, 0.2, 5_233_844), (2, 0.992, 9_853_364), (3, 0.2, 5_246_563)]:
        low, high = wilson_interval(round(exact * 125), 125)
        write_run(tmp_path, "hmt", command="eval-qa", exact_match=exact, exact_match_ci_low=low,
                  exact_match_ci_high=high, checkpoint=f"/runs/hmt-s{seed}-long64/stage2/final",
                  checkpoint_sha256=f"{seed:08d}" + "0" * 56, train_seed=seed, train_recipe="cd" * 8,
                  train_mode="lora", train_tokens=tokens)
    (row,) = table_of(tmp_path, metric="exact_match").rows
    cell = row.cells["hmt"]
    assert (cell.count, cell.mean) == (3, pytest.approx((0.2 + 0.992 + 0.2) / 3))
    assert seed_spread_interval([0.2, 0.992, 0.2], [0.139] * 3, [0.98] * 3)[0] < 0  # what the bound guards against
    assert cell.low == 0.0 and 0.9 < cell.high <= 1.0
    assert row.full["hmt"]["train_tokens"] == SeedTokens(5233844, 9853364)
    assert "train_tokens=5233844-9853364 over seeds" in render([table_of(tmp_path, metric="exact_match")], "table")
    by_seed = {label: cell.runs.index(run) for label, run in run_labels(cell)}  # a report links each seed's record
    assert sorted(by_seed) == ["train seed 1", "train seed 2", "train seed 3"]
    assert [row.cells["hmt"].runs[by_seed[f"train seed {s}"]].split("-")[0] for s in (1, 2, 3)] == sorted(
        run.split("-")[0] for run in cell.runs)  # written in seed order
