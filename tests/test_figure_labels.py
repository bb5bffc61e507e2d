"""Figures a reader can use: lines named by --name or in words, legends no larger than the data, colour-blind-safe
colours, whiskers of one measurement's interval, seeds as dots, and a default folder that is not the committed one."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from typer.testing import CliRunner

from hmtbench.analysis import draw, plot
from hmtbench.analysis.budgets import SeedTokens
from hmtbench.analysis.labels import phrase, series_labels
from hmtbench.analysis.load import load_results
from hmtbench.cli import app
from hmtbench.methods import method_names
from tests.test_compare import write_run

matplotlib.use("Agg")

RESULTS = Path(__file__).resolve().parents[1] / "results"
SPAN = [RESULTS / name for name in ("h200-retrieval-span", "h200-long-curriculum", "h200-long-curriculum-64",
                                    "h200-rmt-multifact/passkey-rmt", "h200-table-fill/passkey-rmt-1m",
                                    "h200-table-fill/passkey-hmt-hard-recall-short")]
OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}
HASH = re.compile(r"\b[0-9a-f]{8,}\b")


def frame_of(*folders: Path):
    return load_results(list(folders), warn=lambda message: None)


def qa_run(folder: Path, method: str, length: int, accuracy: float, **values) -> None:
    write_run(folder, method, command="eval-qa", dataset=None, protocol="qa", task="passkey", context_length=length,
              accuracy=accuracy, **values)


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_lines_are_named_by_the_runs_name_and_shared_names_by_their_settings(tmp_path: Path) -> None:
    for length in (1000, 4000):
        qa_run(tmp_path, "plain", length, 0.1, name="baseline")
        for stage, accuracy in [(1, 0.5), (2, 0.8)]:
            qa_run(tmp_path, "hmt", length, accuracy, name="span-hard", hmt_stage=stage, train_mode="lora",
                   checkpoint=f"/runs/span-hard/stage{stage}/final", checkpoint_sha256=f"{stage}" * 64)
        qa_run(tmp_path, "rmt", length, 0.3, train_mode="lora")  # no name: the method and its settings in words
    (ax,) = plot.figure(frame_of(tmp_path), "accuracy-vs-length").axes
    assert [line.get_label() for line in ax.get_lines()] == [
        "baseline", "RMT (LoRA)", "span-hard (stage 1)", "span-hard (stage 2)"]


def test_settings_read_as_words() -> None:
    assert [phrase(*pair) for pair in [("recall_choice", "hard"), ("memory_write", "span"), ("hmt_stage", 2),
                                       ("train_mode", None), ("sensory_tokens", 32), ("memory_tokens", 1),
                                       ("config.engine.compile", True), ("config.method.summary_pass", "ahead"),
                                       ("checkpoint", "stage2/final [2b6b7ba8]"), ("config.lr", 0.001)]] == [
        "hard recall", "span write", "stage 2", "untrained", "32 sensory", "1 memory token", "compiled",
        "summaries ahead", "stage2/final", "lr 0.001"]
    series = [("hmt", (("checkpoint", "stage2/final [aaaaaaaa]"), ("recall_choice", "soft"))),
              ("hmt", (("checkpoint", "stage2/final [bbbbbbbb]"), ("recall_choice", "soft")))]
    paths = {series[0]: "/w/runs/passkey-long/stage2/final", series[1]: "/root/runs/passkey-span/stage2/final"}
    assert list(series_labels(series, paths=paths).values()) == ["HMT (passkey-long)", "HMT (passkey-span)"]
    assert list(series_labels(series).values()) == ["HMT (stage2/final) #1", "HMT (stage2/final) #2"]  # no paths


def test_the_committed_retrieval_figures_name_lines_and_panels_in_words() -> None:
    """The span figures of the committed records: twelve series of four methods, none named by a hash or a list of
    key=value pairs; the legend sits above the panels and takes less room than they do."""
    frame = frame_of(*SPAN)
    fig = plot.figure(frame, "accuracy-vs-length", "exact_match_deep")
    labels = legend_texts(fig)
    assert len(labels) == 12 and not [label for label in labels if "=" in label or HASH.search(label)]
    assert "HMT (span write, hmt64, recall of 6000, hard recall, soft span)" in labels
    assert "every HMT series: LoRA" in " ".join(t.get_text() for t in fig.texts)
    fig.canvas.draw()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    data = sum(ax.get_window_extent().width * ax.get_window_extent().height for ax in fig.axes)
    assert box.width * box.height < data and box.height < fig.axes[0].get_window_extent().height
    heatmap = plot.figure(frame, "depth-heatmap")
    titles = [ax.get_title().rsplit("\n", 1)[0] for ax in heatmap.axes if ax.get_images()]  # the last: n=25 per cell
    assert len(titles) == 12 and not [t for t in titles if "=" in t or HASH.search(t)]
    assert all(ax.get_images()[0].get_cmap().name.startswith(draw.HEATMAP) for ax in heatmap.axes if ax.get_images())


def test_a_legend_of_many_long_labels_never_outgrows_the_panels() -> None:
    labels = [f"HMT (span write, checkpoint folder number {i}, recall of 6000, hard recall, soft span)"
              for i in range(30)]
    ncol, size, width, data = draw.legend_layout(labels, 3.1, 2.4)
    rows = -(-len(labels) // ncol)
    assert rows * draw.LEGEND_ROW * size / 7 <= data  # the panels grow to the legend's height at least
    assert width * 72 >= size * 0.57 * max(map(len, labels)) + 30  # the longest label fits the figure's width
    assert draw.legend_layout(["plain", "HMT"], 3.1, 2.4) == (2, 7.0, 3.1, 2.4)


def test_every_colour_is_colour_blind_safe() -> None:
    """The baseline grey, then Okabe & Ito's colours (no red beside green); HMT and RMT blue and vermillion."""
    colours = [to_hex(draw.method_color(m)) for m in method_names()]
    assert colours[0] == "#7f7f7f" and set(colours[1:]) <= OKABE_ITO
    assert (draw.method_color("hmt"), draw.method_color("rmt")) == ("#0072b2", "#d55e00")
    assert draw.HEATMAP == "cividis"


def whiskers(ax) -> list[tuple[float, float]]:
    found = [c for c in ax.containers if not isinstance(c, BarContainer)]
    return [(round(s[0][1], 6), round(s[1][1], 6)) for c in found for s in c.lines[2][0].get_segments()]


def test_identical_repeats_draw_their_interval_not_a_zero_whisker() -> None:
    """results/make-run: each method evaluated three times identically. Whiskers are the recorded 95% interval
    (plain [6.74, 10.1]), not ± a std of ~1e-5; the HMT vs RMT number keeps its n.s."""
    frame = frame_of(RESULTS / "make-run")
    (ax,) = plot.figure(frame, "ppl-bars").axes
    runs = frame.set_index("method")
    expected = [tuple(round(float(runs.loc[m, c].dropna().mean()), 6) for c in ("ppl_ci_low", "ppl_ci_high"))
                for m in ("plain", "rmt", "hmt")]
    assert whiskers(ax) == expected and all(high - low > 2.5 for low, high in expected)
    assert [t.get_text() for t in ax.texts] == ["+14.5% n.s."]


def test_seeds_draw_a_dot_each_and_a_whisker_their_spread_widens(tmp_path: Path) -> None:
    for seed, ppl in [(1, 6.0), (2, 6.4), (3, 6.2)]:
        write_run(tmp_path, "hmt", ppl=ppl, ppl_ci_low=ppl - 0.1, ppl_ci_high=ppl + 0.3, seed=seed)
    write_run(tmp_path, "plain", ppl=7.0, ppl_ci_low=6.8, ppl_ci_high=7.2, seed=1)
    (ax,) = plot.figure(frame_of(tmp_path), "ppl-bars").axes
    heights = {c.get_label(): [p.get_height() for p in c] for c in ax.containers if isinstance(c, BarContainer)}
    assert heights == {"plain": [7.0], "HMT": [pytest.approx(6.2)]}
    dots = [line for line in ax.get_lines() if line.get_marker() == "o" and len(line.get_ydata()) == 3]
    assert [sorted(line.get_ydata()) for line in dots] == [[6.0, 6.2, 6.4]]
    # 1.959964 x 0.2 / sqrt(3) = 0.226317 beside the runs' 0.1 below and 0.3 above (tests/test_stats.py)
    assert whiskers(ax) == [(6.8, 7.2), pytest.approx((6.2 - 0.247426, 6.2 + 0.375791), abs=2e-6)]


def test_plot_writes_to_figures_unless_told_and_never_to_the_committed_folder(tmp_path: Path, monkeypatch) -> None:
    write_run(tmp_path / "runs", "plain", ppl=7.0)
    write_run(tmp_path / "runs", "hmt", ppl=6.0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "figures").mkdir(parents=True)
    result = CliRunner().invoke(app, ["plot", "runs", "--figure", "ppl-bars"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["ppl-bars.pdf", "ppl-bars.png"]
    assert list((tmp_path / "results" / "figures").iterdir()) == []


def test_a_recipe_at_several_seeds_is_named_by_its_seeds_never_by_a_missing_seed_or_one_folder() -> None:
    """One recipe evaluated at seed 2 alone (one table row) and at seeds 1-3 (another, where the seed is missing):
    the three-seed series reads 'train seeds 1, 2, 3' with the range that tells it apart, not 'train seed none' nor
    the first seed's checkpoint folder."""
    recipe = "recipe 4be5bc58 (train seeds 1, 2, 3)"
    alone = ("hmt", (("checkpoint", recipe), ("train_tokens", 9853364), ("train_seed", 2)))
    seeds = ("hmt", (("checkpoint", recipe), ("train_tokens", SeedTokens(5233844, 9853364)), ("train_seed", None)))
    labels = series_labels([alone, seeds], paths={alone: "/w/runs/hmt-s2/stage2/final",
                                                  seeds: "/w/runs/hmt-s1/stage2/final"})
    assert labels[seeds] == "HMT (train tokens 5233844-9853364 over seeds)"  # the shared checkpoint is said once
    assert labels[alone] == "HMT (train tokens 9853364, train seed 2)"
    headline = ("hmt", (("checkpoint", "stage2/final [2b6b7ba8]"), ("train_tokens", None), ("train_seed", 3407)))
    labels = series_labels([seeds, headline], paths={seeds: "/w/runs/hmt-s1/stage2/final",
                                                     headline: "/w/runs/hmt-span-lora-64/stage2/final"})
    assert labels[seeds] == "HMT (train seeds 1, 2, 3)"
    assert labels[headline] == "HMT (hmt-span-lora-64, train seed 3407)"


def test_a_report_names_one_recipes_checkpoints_at_several_seeds_by_the_recipes_hash() -> None:
    """Two recipes at seeds 1-3 (one trained with the paper's recall query, one with the question's) read as their
    seeds alike; the report's names, keyed by each recipe's hash, tell them apart."""
    paper = ("hmt", (("checkpoint", "recipe aa5aacc2 (train seeds 1, 2, 3)"),))
    question = ("hmt", (("checkpoint", "recipe c40aa02e (train seeds 1, 2, 3)"),))
    assert list(series_labels([paper, question]).values()) == ["HMT (train seeds 1, 2, 3) #1",
                                                               "HMT (train seeds 1, 2, 3) #2"]
    names = {"aa5aacc2": "paper query", "c40aa02e": "question query"}
    assert list(series_labels([paper, question], checkpoint_names=names).values()) == ["HMT (paper query)",
                                                                                     "HMT (question query)"]
