"""compare: a single run's 95% interval in its cell, deltas whose intervals overlap marked n.s., tables fit 120."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from hmtbench.analysis.budgets import SeedTokens
from hmtbench.analysis.compare import build
from hmtbench.analysis.formats import render
from hmtbench.analysis.lines import series_lines
from hmtbench.analysis.load import load_results
from hmtbench.analysis.qa import LENGTHS, SAMPLE_COUNTS
from hmtbench.analysis.report import run_compare
from hmtbench.analysis.report_tables import Links, cell_text
from hmtbench.analysis.series import by_panel, entries, legend
from hmtbench.analysis.table_text import cell_parts
from hmtbench.stats import wilson_interval
from tests.test_compare import write_run

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.fixture
def intervals(tmp_path: Path) -> Path:
    """plain 6.5 [6.40, 6.60], RMT 6.2 [6.10, 6.30], HMT 6.045 [5.98, 6.11]: HMT and RMT overlap, the rest not."""
    for method, (ppl, low, high) in {"plain": (6.5, 6.40, 6.60), "rmt": (6.2, 6.10, 6.30),
                                     "hmt": (6.045, 5.98, 6.11)}.items():
        write_run(tmp_path, method, ppl=ppl, ppl_ci_low=low, ppl_ci_high=high)
    return tmp_path


def table_of(folder: Path):
    return build(load_results([folder], warn=lambda m: None), "ppl")


def test_one_runs_interval_is_shown_and_overlapping_intervals_make_a_delta_not_significant(intervals: Path) -> None:
    table = table_of(intervals)
    (row,) = table.rows
    assert (row.cells["hmt"].low, row.cells["hmt"].high) == (5.98, 6.11)
    assert row.unclear == [("hmt", "rmt")]
    markdown = render([table], "markdown")
    assert ("| 6.500 [6.4, 6.6] | 6.200 [6.1, 6.3] | **6.045** [5.98, 6.11] | +2.50 n.s. | +4.62 | +7.00 |"
            in markdown)
    assert "cells: value [95% interval];" in markdown.splitlines()[0]
    assert "- n.s. = not significant: the two methods' 95% intervals overlap" in markdown.splitlines()
    csv = pd.read_csv(io.StringIO(render([table], "csv")))
    assert csv[["hmt_ci_low", "hmt_ci_high", "HMT vs RMT, % n.s.", "HMT vs plain, % n.s."]].values.tolist() == [
        [5.98, 6.11, True, False]]
    (payload,) = json.loads(render([table], "json"))
    assert payload["rows"][0]["not_significant"] == ["HMT vs RMT, %"]


def test_runs_at_two_seeds_widen_the_interval_by_their_spread_and_keep_the_mark(intervals: Path) -> None:
    """HMT at seeds 1 and 2: 6.045 [5.98, 6.11] and 6.245 [6.18, 6.31]. Mean 6.145, std 0.141421; the runs' half
    widths 0.065 on either side and the seeds' 1.959964 x 0.141421 / sqrt(2) = 0.195996 add in quadrature:
    half 0.206494, interval [5.938506, 6.351494], which overlaps RMT's [6.10, 6.30]: HMT vs RMT stays n.s."""
    write_run(intervals, "hmt", ppl=6.245, ppl_ci_low=6.18, ppl_ci_high=6.31, seed=2)
    (row,) = table_of(intervals).rows
    hmt = row.cells["hmt"]
    assert (hmt.mean, hmt.std, hmt.count) == (pytest.approx(6.145), pytest.approx(2**0.5 / 10), 2)
    assert (hmt.low, hmt.high) == pytest.approx((6.145 - 0.206494, 6.145 + 0.206494), abs=1e-6)
    assert [m.seeds for m in hmt.measurements] == [(("train_seed", None), ("seed", 2)),
                                                   (("train_seed", None), ("seed", None))]
    assert row.unclear == [("hmt", "rmt")] and hmt.interval == "combined"
    text = render([table_of(intervals)], "markdown")
    assert "| **6.145 ± 0.141** [5.94, 6.35] (n=2) | +0.89 n.s. |" in text
    assert "- seeds: plain, RMT: seed ?; HMT: seed 2" in text.splitlines()


def test_records_without_interval_columns_read_as_missing(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=6.5)
    frame = load_results([tmp_path], warn=lambda m: None)
    assert frame[["ppl_ci_low", "ppl_ci_high", "accuracy_ci_low", "by_depth"]].isna().all().all()
    assert build(frame, "ppl").rows[0].cells["plain"].low is None


def test_the_committed_results_table_fits_120_columns() -> None:
    lines = run_compare([RESULTS], {}, fmt="table", warn=lambda m: None).splitlines()
    assert max(len(line) for line in lines) <= 120
    assert sum(line.startswith("ppl (lower is better)") for line in lines) == 1


def test_a_table_too_wide_for_120_columns_is_split_with_variants_as_footnotes() -> None:
    """The LM rows of two committed folders (fixed records, so the layout changes only with the code): six methods
    and their deltas do not fit one table of 120 columns, so the deltas go on in a second and a third one; HMT's two
    checkpoints are variants, named in footnotes; ARMT has no bf16 LoRA run (a dash)."""
    folders = [RESULTS / "h200-committed", RESULTS / "cpu-lm-paired"]
    text = run_compare(folders, {}, fmt="table", warn=lambda m: None)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    stage1, stage2 = (next(line for line in lines if line.startswith("[") and line.endswith(variant))
                      for variant in ("hmt: checkpoint=smollm2-135m-stdlib-hmt-lora/stage1 [01e7f2ed], hmt_stage=1",
                                      "hmt: checkpoint=smollm2-135m-stdlib-hmt-lora/stage2 [7dd424fa], hmt_stage=2"))
    labels = [stage1.split()[0], stage2.split()[0]]
    bf16_lora = [line.split() for line in lines[: lines.index(stage1)]
                 if " lora " in line and " bfloat16 " in line and " [" in line]
    cells = [row[row.index("lora") + 1:] for row in bf16_lora]  # variant, then the value columns of its table
    assert [c[1:] for label in labels for c in cells if c[0] == label] == [
        ["6.772", "–", "–", "7.160", "6.425*", "–", "+10.27"],  # stage 1: the methods, HMT vs RMT
        # HMT vs ARMT, ARMT vs RMT; full, overlap, RMT, HMT, ARMT vs plain; RMT, HMT vs full (no full in this row)
        ["–", "–", "–", "–", "-5.74", "+5.12", "–", "–", "–"],
        ["–"],  # ARMT vs full, a third table
        ["6.772", "–", "–", "7.160", "6.045*", "–", "+15.58"], ["–", "–", "–", "–", "-5.74", "+10.73", "–", "–", "–"],
        ["–"]]
    markdown = run_compare(folders, {}, fmt="markdown", warn=lambda m: None)
    assert f"| lora | {labels[0]} |" in markdown and f"- {stage1}" in markdown


def write_qa_run(folder: Path, method: str, outcomes: list[int], data: str = "docs-a",
                 predictions: bool = True, context_length: int = 4096, **settings) -> None:
    """An eval-qa record with its Wilson interval and, beside it, the per-sample file eval-qa writes."""
    low, high = wilson_interval(sum(outcomes), len(outcomes))
    path = write_run(folder, method, command="eval-qa", dataset="passkey", task="passkey", protocol="qa",
                     context_length=context_length, test_length=context_length,
                     exact_match=sum(outcomes) / len(outcomes),
                     exact_match_ci_low=low, exact_match_ci_high=high, data_sha256=data, **settings)
    if predictions:
        run_id = path.name.removesuffix(".parquet")
        lines = [json.dumps({"id": str(i), "exact_match": float(v)}) for i, v in enumerate(outcomes)]
        path.with_name(f"{run_id}.predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_deltas_on_the_same_samples_are_tested_pairwise(tmp_path: Path) -> None:
    """60/100 against 75/100 with 15 gains and no loss: the Wilson intervals overlap ([50, 69]% and [66, 83]%),
    the paired test does not let that hide the difference (p = 2 * 0.5**15)."""
    plain = [1] * 60 + [0] * 40
    write_qa_run(tmp_path / "paired", "plain", plain)
    write_qa_run(tmp_path / "paired", "hmt", [1] * 75 + [0] * 25)
    (row,) = build(load_results([tmp_path / "paired"], warn=lambda m: None), "exact_match").rows
    test = row.paired[("hmt", "plain")]
    assert (test.gained, test.lost, test.samples) == (15, 0, 100)
    assert test.p == pytest.approx(2 * 0.5**15)
    assert row.unclear == []
    (payload,) = json.loads(render([build(load_results([tmp_path / "paired"], warn=lambda m: None),
                                          "exact_match")], "json"))
    assert payload["rows"][0]["paired_tests"]["HMT vs plain, %"]["gained"] == 15
    markdown = render([build(load_results([tmp_path / "paired"], warn=lambda m: None), "exact_match")], "markdown")
    assert "-   HMT vs plain: +15 / -0 of 100, p = 6.1e-05" in markdown.splitlines()

    # the same two accuracies with 20 gains and 5 losses: p = 0.004; 30 and 15: p = 0.036; 35 and 20: p = 0.058, n.s.
    for gains, losses, significant in [(20, 5, True), (30, 15, True), (35, 20, False)]:
        folder = tmp_path / f"swap{gains}"
        hmt = list(plain)
        wrong_plain = [i for i, v in enumerate(plain) if v == 0][:gains]
        right_plain = [i for i, v in enumerate(plain) if v == 1][:losses]
        for i in wrong_plain:
            hmt[i] = 1
        for i in right_plain:
            hmt[i] = 0
        write_qa_run(folder, "plain", plain)
        write_qa_run(folder, "hmt", hmt)
        (row,) = build(load_results([folder], warn=lambda m: None), "exact_match").rows
        assert (row.paired[("hmt", "plain")].gained, row.paired[("hmt", "plain")].lost) == (gains, losses)
        assert (row.unclear == []) is significant


def test_a_method_at_three_seeds_is_tested_seed_by_seed_against_a_baseline(tmp_path: Path) -> None:
    """HMT at training seeds 1-3 against one plain run on the same 20 samples: one McNemar test per seed (20 / 0,
    p = 2 * 0.5**20; 0 / 0, p = 1; 12 / 0), never pooled into one test of 60 samples. Two seeds alike and one that
    learned nothing: not significant across seeds, whose p is the largest seed's; all three alike: significant."""
    plain = [0] * 20
    write_qa_run(tmp_path / "split", "plain", plain)
    for seed, right in ((1, 20), (2, 0), (3, 12)):
        write_qa_run(tmp_path / "split", "hmt", [1] * right + [0] * (20 - right), train_seed=seed)
    (row,) = build(load_results([tmp_path / "split"], warn=lambda m: None), "exact_match").rows
    test = row.paired[("hmt", "plain")]
    assert [(seed, t.gained, t.lost) for seed, t in test.tests] == [
        ("train seed 1", 20, 0), ("train seed 2", 0, 0), ("train seed 3", 12, 0)]
    assert test.tests[0][1].p == pytest.approx(2 * 0.5**20) and test.p == 1.0
    assert not test.significant and row.unclear == [("hmt", "plain")]
    text = render([build(load_results([tmp_path / "split"], warn=lambda m: None), "exact_match")], "table")
    assert ("HMT vs plain: train seed 1 +20 / -0 of 20, p = 1.9e-06; train seed 2 +0 / -0 of 20, p = 1 n.s.; "
            "train seed 3 +12 / -0 of 20, p = 0.00049 · across seeds n.s.") in " ".join(text.split())
    (payload,) = json.loads(render([build(load_results([tmp_path / "split"], warn=lambda m: None), "exact_match")],
                                   "json"))
    found = payload["rows"][0]["paired_tests"]["HMT vs plain, %"]
    assert (found["test"], found["gained"], found["p"], found["significant"]) == (
        "exact McNemar per seed", 32, 1.0, False)

    write_qa_run(tmp_path / "alike", "plain", plain)
    for seed in (1, 2, 3):
        write_qa_run(tmp_path / "alike", "hmt", [1] * 20, train_seed=seed)
    (row,) = build(load_results([tmp_path / "alike"], warn=lambda m: None), "exact_match").rows
    assert row.paired[("hmt", "plain")].significant and row.unclear == []
    assert row.paired[("hmt", "plain")].p == pytest.approx(2 * 0.5**20)


def test_two_methods_trained_at_the_same_seeds_are_tested_seed_against_seed(tmp_path: Path) -> None:
    """HMT and RMT each at training seeds 1-3 on the same 20 samples: seed s of one against seed s of the other
    (HMT 20, 0, 20 right; RMT 20, 0, 8: +0/-0, +0/-0, +12/-0), not pooled; one seed apart, the others alike: not
    significant across seeds. RMT at seeds 4-6 instead: no seed of HMT's has a counterpart, no paired test."""
    for seed, hmt, rmt in ((1, 20, 20), (2, 0, 0), (3, 20, 8)):
        write_qa_run(tmp_path / "same", "hmt", [1] * hmt + [0] * (20 - hmt), train_seed=seed)
        write_qa_run(tmp_path / "same", "rmt", [1] * rmt + [0] * (20 - rmt), train_seed=seed)
        write_qa_run(tmp_path / "other", "hmt", [1] * hmt + [0] * (20 - hmt), train_seed=seed)
        write_qa_run(tmp_path / "other", "rmt", [1] * rmt + [0] * (20 - rmt), train_seed=seed + 3)
    (row,) = build(load_results([tmp_path / "same"], warn=lambda m: None), "exact_match").rows
    test = row.paired[("hmt", "rmt")]
    assert [(seed, t.gained, t.lost) for seed, t in test.tests] == [
        ("train seed 1", 0, 0), ("train seed 2", 0, 0), ("train seed 3", 12, 0)]
    assert test.p == 1.0 and not test.significant and ("hmt", "rmt") in row.unclear
    text = " ".join(render([build(load_results([tmp_path / "same"], warn=lambda m: None), "exact_match")],
                           "table").split())
    assert "train seed 3 +12 / -0 of 20, p = 0.00049 · across seeds n.s." in text
    (row,) = build(load_results([tmp_path / "other"], warn=lambda m: None), "exact_match").rows
    assert ("hmt", "rmt") not in row.paired


def test_one_method_in_two_settings_on_the_same_samples_is_tested_pairwise(tmp_path: Path) -> None:
    """HMT with hard and with soft recall on the same 100 samples (70 and 40 right: 32 gained, 2 lost) are two
    variant rows, never one delta column: compare tests them against each other all the same, once; a third run on
    other documents is not paired with either."""
    soft = [1] * 40 + [0] * 60
    hard = [0, 0] + [1] * 38 + [1] * 32 + [0] * 28
    write_qa_run(tmp_path, "plain", [0] * 100)
    write_qa_run(tmp_path, "hmt", hard, recall_choice="hard")
    write_qa_run(tmp_path, "hmt", soft, recall_choice="soft")
    write_qa_run(tmp_path, "hmt", soft, data="docs-b", recall_choice="soft", memory_write="span")
    table = build(load_results([tmp_path], warn=lambda m: None), "exact_match")
    (found,) = table.variant_tests
    assert (found.method, found.first["recall_choice"], found.second["recall_choice"]) == ("hmt", "hard", "soft")
    assert (found.test.gained, found.test.lost, found.test.samples) == (32, 2, 100)
    assert found.test.p == pytest.approx(2 * (1 + 34 + 561) / 2**34)  # 2 P(X <= 2), X ~ Bin(34, 1/2): 6.9e-08
    assert "HMT recall_choice=hard vs recall_choice=soft: +32 / -2 of 100, p = 6.9e-08" in render([table], "table")
    assert "– where B's mean is 0: a change in % of 0 is undefined" in render([table], "table")  # HMT vs plain (0)
    (payload,) = json.loads(render([table], "json"))
    assert [(v["method"], v["gained"], v["lost"]) for v in payload["variant_tests"]] == [("hmt", 32, 2)]
    frame = pd.read_csv(io.StringIO(render([table], "csv")))
    (test,) = frame[frame["variant_test"].notna()].to_dict("records")
    assert (test["variant_test"], test["variant_first"], test["variant_second"]) == (
        "hmt", "recall_choice=hard", "recall_choice=soft")
    assert (test["gained"], test["lost"], test["samples"], test["significant"]) == (32, 2, 100, True)
    assert frame["variant_test"].isna().sum() == len(table.rows)  # the table's rows come first


@pytest.mark.parametrize("case", ["other documents", "no predictions file"])
def test_without_the_same_samples_the_intervals_decide(tmp_path: Path, case: str) -> None:
    write_qa_run(tmp_path, "plain", [1] * 60 + [0] * 40)
    write_qa_run(tmp_path, "hmt", [1] * 75 + [0] * 25, data="docs-b" if case == "other documents" else "docs-a",
                 predictions=case != "no predictions file")
    table = build(load_results([tmp_path], warn=lambda m: None), "exact_match")
    (row,) = table.rows
    assert row.paired == {}
    assert row.unclear == [("hmt", "plain")]  # [50, 69]% and [66, 83]% overlap
    lines = render([table], "markdown").splitlines()
    assert "- n.s. = not significant: the two methods' 95% intervals overlap" in lines


def test_deep_scores_count_the_samples_before_the_question_with_their_wilson_interval(tmp_path: Path) -> None:
    """by_depth 0: 24 of 25, 0.5: 25 of 25, 1.0: 5 of 25 -> exact_match_deep 49/50 (the depth-1.0 keys apart)."""
    depths = [{"depth": 0.0, "n": 25, "accuracy": 0.96, "exact_match": 0.96},
              {"depth": 0.5, "n": 25, "accuracy": 1.0, "exact_match": 1.0},
              {"depth": 1.0, "n": 25, "accuracy": 0.2, "exact_match": 0.2}]
    write_run(tmp_path, "hmt", command="eval-qa", task="passkey", context_length=4096, exact_match=54 / 75,
              by_depth=depths)
    write_run(tmp_path, "plain", command="eval-qa", task="passkey", context_length=4096, exact_match=0.4,
              by_depth=None)
    frame = load_results([tmp_path], warn=lambda m: None).set_index("method")
    assert frame.at["hmt", "exact_match_deep"] == pytest.approx(49 / 50)
    assert (frame.at["hmt", "exact_match_deep_ci_low"], frame.at["hmt", "exact_match_deep_ci_high"]) == pytest.approx(
        wilson_interval(49, 50))
    assert pd.isna(frame.at["plain", "exact_match_deep"])  # no depths recorded: no deep score, not 0
    (row,) = build(load_results([tmp_path], warn=lambda m: None), "exact_match_deep").rows
    assert list(row.cells) == ["hmt"] and row.cells["hmt"].low == pytest.approx(wilson_interval(49, 50)[0])


def test_a_deep_score_is_tested_pairwise_over_the_deep_samples_only(tmp_path: Path) -> None:
    """Depth < 1: HMT 10 of 10, plain 0 of 10 (p = 2 * 0.5**10); at depth 1.0 plain gets the 5 HMT misses."""
    def run(method: str, deep: int, last: int) -> None:
        samples = [(i, 0.5, int(i < deep)) for i in range(10)] + [(10 + i, 1.0, int(i < last)) for i in range(5)]
        depths = [{"depth": 0.5, "n": 10, "accuracy": deep / 10, "exact_match": deep / 10},
                  {"depth": 1.0, "n": 5, "accuracy": last / 5, "exact_match": last / 5}]
        path = write_run(tmp_path, method, command="eval-qa", task="passkey", context_length=4096,
                         exact_match=(deep + last) / 15, data_sha256="same", by_depth=depths)
        lines = [json.dumps({"id": str(i), "exact_match": float(v), "meta": {"depth": d}}) for i, d, v in samples]
        path.with_name(f"{path.stem}.predictions.jsonl").write_text("\n".join(lines) + "\n")

    run("plain", deep=0, last=5)
    run("hmt", deep=10, last=0)
    frame = load_results([tmp_path], warn=lambda m: None)
    (deep,) = build(frame, "exact_match_deep").rows
    assert (deep.paired[("hmt", "plain")].gained, deep.paired[("hmt", "plain")].lost) == (10, 0)
    assert deep.paired[("hmt", "plain")].p == pytest.approx(2 * 0.5**10)
    (every,) = build(frame, "exact_match").rows
    assert (every.paired[("hmt", "plain")].gained, every.paired[("hmt", "plain")].lost) == (10, 5)


def test_an_interval_with_a_nan_bound_never_makes_a_delta_not_significant() -> None:
    """compare reads overlap as stats.intervals_overlap does: a missing bound (None or nan) compares with nothing,
    whichever side of the pair holds it."""
    from hmtbench.analysis.cells import Cell
    from hmtbench.analysis.compare import Row, _score

    class NoPairedTest:
        @staticmethod
        def test(first: Cell, second: Cell) -> None:
            return None

    for nan_side in ("hmt", "rmt"):
        cells = {"hmt": Cell(6.0, None, 1, ["a"], low=5.9, high=6.1), "rmt": Cell(6.5, None, 1, ["b"], low=6.4,
                                                                              high=6.6)}
        cells[nan_side].low = cells[nan_side].high = float("nan")
        row = Row({}, cells)
        _score(row, [("hmt", "rmt")], "lower", NoPairedTest())
        assert row.unclear == [], nan_side


def write_seeded_qa(folder: Path, method: str, seed: int, outcomes: list[int], recipe: str, **settings) -> None:
    """``write_qa_run`` of one LoRA checkpoint of ``recipe`` trained at ``seed``."""
    write_qa_run(folder, method, outcomes, checkpoint=f"/runs/{method}-s{seed}/final", train_mode="lora",
                 checkpoint_sha256=f"{seed:08d}" + recipe[:8] + "0" * 48, train_seed=seed, train_recipe=recipe,
                 **settings)


def test_memory_methods_are_tested_against_the_strong_baselines_beside_a_fine_tuned_full(tmp_path: Path) -> None:
    """The protocol's table: HMT and full context each fine-tuned with LoRA at seeds 1-3, and untrained plain, full
    and BM25, on the same 20 samples. Untrained plain and BM25 join the trained row (it trained no plain); the
    untrained full keeps a row of its own, since the trained row's full is the fine-tuned one. HMT is tested seed
    against seed against the fine-tuned full and, per seed, against BM25's one run; baselines never against each
    other."""
    for seed, hmt in ((1, 20), (2, 0), (3, 20)):
        write_seeded_qa(tmp_path, "hmt", seed, [1] * hmt + [0] * (20 - hmt), recipe="ab" * 8)
        write_seeded_qa(tmp_path, "full", seed, [1] * 20, recipe="cd" * 8)
    write_qa_run(tmp_path, "plain", [0] * 20)
    write_qa_run(tmp_path, "full", [1] * 12 + [0] * 8)
    write_qa_run(tmp_path, "retrieval", [1] * 10 + [0] * 10)
    table = build(load_results([tmp_path], warn=lambda m: None), "exact_match", join_baselines=True)
    rows = {row.key["train_mode"]: row for row in table.rows}
    assert set(rows) == {"lora", None}
    assert set(rows["lora"].cells) == {"hmt", "full", "plain", "retrieval"} and rows["lora"].cells["full"].count == 3
    assert set(rows[None].cells) == {"plain", "full", "retrieval"} and rows[None].cells["full"].mean == 0.6
    against_full = rows["lora"].paired[("hmt", "full")]
    assert [(seed, t.gained, t.lost) for seed, t in against_full.tests] == [
        ("train seed 1", 0, 0), ("train seed 2", 0, 20), ("train seed 3", 0, 0)]
    against_bm25 = rows["lora"].paired[("hmt", "retrieval")]
    assert [(seed, t.gained, t.lost) for seed, t in against_bm25.tests] == [
        ("train seed 1", 10, 0), ("train seed 2", 0, 10), ("train seed 3", 10, 0)]
    assert not against_bm25.significant  # significant per seed, in both directions
    assert {("hmt", "full"), ("hmt", "retrieval")} <= set(table.pairs)
    assert not {("full", "retrieval"), ("retrieval", "full"), ("plain", "full")} & set(table.pairs)


def test_a_cell_read_at_one_seed_of_three_meets_only_that_seed_of_the_other(tmp_path: Path) -> None:
    """ARMT at seeds 1-3 at 4k but at seed 1 alone at 16k, BM25's reader trained at seeds 1-3 at both: at 16k ARMT's
    seed 1 is tested against BM25's seed 1 only (20 / 10 right: +10 / -0), never against BM25's seeds 2 and 3,
    which trained other models (the table once listed all three, each against ARMT's one run)."""
    for seed, bm25 in ((1, 10), (2, 0), (3, 20)):
        for length in (4096, 16384):
            write_seeded_qa(tmp_path, "retrieval", seed, [1] * bm25 + [0] * (20 - bm25), recipe="cd" * 8,
                            context_length=length, data=f"docs-{length}")
        if seed == 1:
            write_seeded_qa(tmp_path, "armt", seed, [1] * 20, recipe="ab" * 8, context_length=16384,
                            data="docs-16384")
        write_seeded_qa(tmp_path, "armt", seed, [1] * 20, recipe="ab" * 8, data="docs-4096")
    rows = {row.key["context_length"]: row for row in build(load_results([tmp_path], warn=lambda m: None),
                                                            "exact_match").rows}
    assert rows[16384].cells["armt"].lone_seed == 1 and rows[16384].cells["retrieval"].count == 3
    test = rows[16384].paired[("armt", "retrieval")]
    assert [(seed, t.gained, t.lost) for seed, t in test.tests] == [("train seed 1", 10, 0)]
    assert test.p == pytest.approx(2 * 0.5**10) and test.significant
    assert [seed for seed, _ in rows[4096].paired[("armt", "retrieval")].tests] == [
        "train seed 1", "train seed 2", "train seed 3"]


def test_a_length_read_at_one_seed_of_three_stays_in_its_recipes_row_and_says_so(tmp_path: Path) -> None:
    """RMT's recipe at seeds 1-3 at 4k and at seed 2 alone at 16k, each seed with its own training tokens: one
    series (the budget is the range over every run of the recipe), whose 16k point the report names as seed 2's
    and the figure draws apart from the line that joins means over three seeds."""
    for seed, tokens in ((1, 5_000), (2, 19_000), (3, 5_500)):
        write_seeded_qa(tmp_path, "rmt", seed, [1] * 20 if seed == 2 else [0] * 20, recipe="ef" * 8,
                        train_tokens=tokens)
    write_run(tmp_path, "rmt", command="eval-qa", dataset="passkey", task="passkey", protocol="qa",
              context_length=16384, test_length=16384, exact_match=0.95, exact_match_ci_low=0.76,
              exact_match_ci_high=0.99, data_sha256="docs-16k", checkpoint="/runs/rmt-s2/final", train_mode="lora",
              checkpoint_sha256="00000002efefefef" + "0" * 48, train_seed=2, train_recipe="ef" * 8,
              train_tokens=19_000)
    frame = load_results([tmp_path], warn=lambda m: None)
    table = build(frame, "exact_match")
    assert [row.full["rmt"]["train_tokens"] for row in table.rows] == [SeedTokens(5000, 19000)] * 2
    assert len({row.key["variant"] for row in table.rows}) == 1  # one series: the same row at both lengths
    panels = by_panel(entries(table), LENGTHS, join=SAMPLE_COUNTS)
    (panel,) = panels.values()
    (line,) = series_lines(panel, lambda e: float(e.row.key["context_length"]), legend(panel))
    assert (line.xs, line.apart, line.texts) == ([4096.0, 16384.0], [False, True], ["", "train seed 2 only"])
    single = next(row.cells["rmt"] for row in table.rows if row.key["context_length"] == 16384)
    text = cell_text(single, "exact_match", frame.set_index("run_id"), Links(tmp_path, {}))
    assert text.endswith("(train seed 2 only)")
    assert single.lone_seed == 2 and cell_parts(single)[-1] == "(train seed 2 only)"  # the terminal table's cell
    assert all(row.cells["rmt"].lone_seed is None for row in table.rows if row.key["context_length"] == 4096)


def test_cells_at_partly_different_seeds_are_tested_on_the_seeds_they_share(tmp_path: Path) -> None:
    """ARMT at seeds 1 and 3 (seed 2 owed), fine-tuned full context at seeds 1-3, on the same 20 samples: ARMT's
    seed s against full's seed s for s in 1 and 3 (+0 / -20 each), full's seed 2 left out; both seeds lose, so the
    difference is significant across them. BM25 at seeds 4-6 shares none with ARMT: not paired."""
    for seed in (1, 2, 3):
        write_seeded_qa(tmp_path, "full", seed, [1] * 20, recipe="cd" * 8)
        write_seeded_qa(tmp_path, "retrieval", seed + 3, [1] * 20, recipe="ef" * 8)
        if seed != 2:
            write_seeded_qa(tmp_path, "armt", seed, [0] * 20, recipe="ab" * 8)
    (row,) = build(load_results([tmp_path], warn=lambda m: None), "exact_match").rows
    test = row.paired[("armt", "full")]
    assert [(seed, t.gained, t.lost) for seed, t in test.tests] == [("train seed 1", 0, 20), ("train seed 3", 0, 20)]
    assert test.p == pytest.approx(2 * 0.5**20) and test.significant
    assert ("armt", "retrieval") not in row.paired


def test_json_names_a_recipes_training_tokens_over_seeds_by_their_fields(tmp_path: Path) -> None:
    """One recipe at seeds 1 and 2 read with soft and with hard recall on the same 20 samples: the variant test
    between the settings names each side's settings, the training tokens among them as their range over seeds (it
    once stopped ``compare --format json`` over results/ with "SeedTokens is not JSON serializable")."""
    for recall, right in (("soft", 5), ("hard", 15)):
        for seed, tokens in ((1, 5_000), (2, 9_000)):
            write_seeded_qa(tmp_path, "hmt", seed, [1] * right + [0] * (20 - right), recipe="ab" * 8,
                            recall_choice=recall, train_tokens=tokens)
    (payload,) = json.loads(render([build(load_results([tmp_path], warn=lambda m: None), "exact_match")], "json"))
    sides = [test[side] for test in payload["variant_tests"] for side in ("first", "second")]
    assert sides and all(side["train_tokens"] == {"least": 5000, "most": 9000} for side in sides)
