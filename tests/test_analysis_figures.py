"""The QA figures (accuracy-vs-length, depth-heatmap) and full context as a level line, on synthetic records."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from hmtbench.analysis import draw, plot
from hmtbench.analysis.load import load_results
from tests.test_compare import write_run

matplotlib.use("Agg")

LENGTHS = (1000, 4000, 16000)
ACCURACY = {"plain": (0.6, 0.3, 0.1), "rmt": (0.7, 0.5, 0.4), "hmt": (0.8, 0.7, 0.6)}
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def by_depth(accuracy: float, depth_step: float) -> list[dict]:
    """Four samples per depth, the accuracy falling by ``depth_step`` per step deeper (never below 0)."""
    return [{"depth": d, "n": 4, "accuracy": max(0.0, accuracy - i * depth_step), "exact_match": 0.0}
            for i, d in enumerate(DEPTHS)]


@pytest.fixture
def qa_runs(tmp_path: Path) -> Path:
    """passkey and multi-fact at three lengths; each run with a Wilson interval and per-depth accuracy."""
    for task, offset in [("passkey", 0.0), ("multi-fact", -0.1)]:
        for method, scores in ACCURACY.items():
            for length, accuracy in zip(LENGTHS, scores, strict=True):
                value = round(accuracy + offset, 6)
                write_run(tmp_path, method, command="eval-qa", dataset=None, protocol="qa", task=task,
                          context_length=length, test_length=length + 7, accuracy=value,
                          accuracy_ci_low=max(0.0, value - 0.1), accuracy_ci_high=min(1.0, value + 0.1),
                          by_depth=by_depth(value, 0.1))
    return tmp_path


def frame_of(folder: Path):
    return load_results([folder], warn=lambda message: None)


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_accuracy_vs_length_a_panel_per_task_a_line_and_band_per_method(qa_runs: Path, tmp_path: Path) -> None:
    fig = plot.figure(frame_of(qa_runs), "accuracy-vs-length")
    assert [ax.get_title() for ax in fig.axes] == ["tiny · multi-fact", "tiny · passkey"]
    multi, passkey = fig.axes
    drawn = {line.get_label(): line for line in passkey.get_lines()}
    assert list(drawn) == ["plain", "RMT", "HMT"]  # registry order
    for method, line in zip(ACCURACY, drawn.values(), strict=True):
        assert list(line.get_ydata()) == pytest.approx(ACCURACY[method])
        assert np.round(line.get_xdata(), -2).tolist() == pytest.approx(LENGTHS, rel=0.05)  # set a little apart
        assert line.get_color() == draw.method_color(method)
    bands = [c for c in passkey.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3 and bands[2].get_paths()[0].vertices[:, 1].max() == pytest.approx(0.9)
    assert [t.get_text() for t in passkey.get_xticklabels()] == ["1k", "4k", "16k"]
    assert passkey.get_xscale() == "log" and passkey.get_ylim() == pytest.approx((-0.03, 1.03))
    assert list(multi.get_lines()[2].get_ydata()) == pytest.approx([0.7, 0.6, 0.5])
    (png, _) = draw.save(fig, tmp_path / "figs", "accuracy-vs-length")
    assert png.is_file() and 1000 < png_size(png)[0] <= 3000


def test_untrained_and_trained_methods_share_a_panel_with_the_training_in_the_label(tmp_path: Path) -> None:
    for method, mode in [("plain", None), ("rmt", "lora"), ("hmt", "lora")]:
        for length, accuracy in zip(LENGTHS, ACCURACY[method], strict=True):
            write_run(tmp_path, method, command="eval-qa", dataset=None, task="passkey", context_length=length,
                      accuracy=accuracy, train_mode=mode)
    (ax,) = plot.figure(frame_of(tmp_path), "accuracy-vs-length").axes
    assert [line.get_label() for line in ax.get_lines()] == ["plain", "RMT (LoRA)", "HMT (LoRA)"]
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no intervals, one run: no band


def test_lengths_as_context_length_reads_them_tick_as_papers_print_them(tmp_path: Path) -> None:
    lengths = [1024 * 4**i for i in range(6)]  # --context-length 1k,4k,16k,64k,256k,1m
    for method in ("plain", "hmt"):
        for length in lengths:
            write_run(tmp_path, method, command="eval-qa", dataset=None, task="passkey", context_length=length,
                      accuracy=0.5, memory_write="span" if method == "hmt" else None)
    (ax,) = plot.figure(frame_of(tmp_path), "accuracy-vs-length").axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1k", "4k", "16k", "64k", "256k", "1M"]
    assert [line.get_label() for line in ax.get_lines()] == ["plain", "HMT (span write)"]  # a departure: named


def test_a_run_is_one_line_at_every_length_where_another_joins_it_at_some(tmp_path: Path) -> None:
    """Checkpoint A soft and hard at 1k-16k, checkpoint B at 16k only: a row tells apart only the runs it holds (at
    1k not the checkpoint), yet each (checkpoint, choice) stays one line, and two trained models are named apart."""
    a, b = ("/runs/a/stage2/final", "a" * 64), ("/runs/b/stage2/final", "b" * 64)  # (path, sha256)
    for length, soft, hard in zip(LENGTHS, (0.9, 0.6, 0.3), (1.0, 0.9, 0.8), strict=True):
        for (path, sha), choice, accuracy in [(a, "soft", soft), (a, "hard", hard)] + (
                [(b, "soft", 0.7)] if length == LENGTHS[-1] else []):
            write_run(tmp_path, "hmt", command="eval-qa", dataset=None, task="passkey", context_length=length,
                      accuracy=accuracy, checkpoint=path, checkpoint_sha256=sha, recall_choice=choice,
                      train_mode="lora")
    (ax,) = plot.figure(frame_of(tmp_path), "accuracy-vs-length").axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines == {  # the checkpoints by the part of their folders that differs, never by their hashes
        "HMT (soft recall, a)": [0.9, 0.6, 0.3],
        "HMT (hard recall, a)": [1.0, 0.9, 0.8],
        "HMT (soft recall, b)": [0.7],
    }


def test_a_setting_its_row_mates_share_does_not_move_a_series_to_another_panel(tmp_path: Path) -> None:
    """RMT (span write) at 1k-16k shares its rows with a span-write HMT at 1k and 4k and with an HMT of no recorded
    write at 16k: the rows' shared setting differs (memory_write=span, then none), yet RMT stays one line in one
    panel, each line named by its own settings."""
    for length, rmt in zip(LENGTHS, (0.3, 0.1, 0.0), strict=True):
        write_run(tmp_path, "rmt", command="eval-qa", dataset=None, task="passkey", context_length=length,
                  accuracy=rmt, memory_write="span", train_mode="lora")
        hmt = {"memory_write": "span"} if length < LENGTHS[-1] else {}
        write_run(tmp_path, "hmt", command="eval-qa", dataset=None, task="passkey", context_length=length,
                  accuracy=0.9, train_mode="lora", **hmt)
    (ax,) = plot.figure(frame_of(tmp_path), "accuracy-vs-length").axes
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert lines["RMT (span write)"] == [0.3, 0.1, 0.0]
    assert lines["HMT (span write)"] == [0.9, 0.9] and len(lines) == 3


def test_a_run_alone_in_its_panel_keeps_the_settings_that_name_it(tmp_path: Path) -> None:
    """Checkpoints A and B beside plain at 1k-16k (n 4), B again at 16k-1M with n 2 (its own panel: two points of B
    at 16k keep the sample counts apart): B's line there names B (the legend is one for the figure), and no panel's
    title claims a training mode only some lines have."""
    a, b = ("/runs/a/stage2/final", "a" * 64), ("/runs/b/stage2/final", "b" * 64)
    for length in LENGTHS:
        write_run(tmp_path, "plain", command="eval-qa", dataset=None, task="passkey", context_length=length,
                  accuracy=0.2, max_docs=4)
        for (path, sha), accuracy in [(a, 0.5), (b, 0.9)]:
            write_run(tmp_path, "hmt", command="eval-qa", dataset=None, task="passkey", context_length=length,
                      accuracy=accuracy, checkpoint=path, checkpoint_sha256=sha, train_mode="lora", max_docs=4)
    for length, accuracy in [(16000, 0.8), (256_000, 0.5), (1_000_000, 0.1)]:
        write_run(tmp_path, "hmt", command="eval-qa", dataset=None, task="passkey", context_length=length,
                  accuracy=accuracy, checkpoint=b[0], checkpoint_sha256=b[1], train_mode="lora", max_docs=2)
    fig = plot.figure(frame_of(tmp_path), "accuracy-vs-length")
    assert [ax.get_title() for ax in fig.axes] == ["tiny · passkey\n4 samples", "tiny · passkey\n2 samples"]
    named_b = "HMT (b)"  # LoRA, which both HMT lines share, is said once under the figure
    assert "every HMT series: LoRA" in " ".join(t.get_text() for t in fig.texts)
    assert [line.get_label() for line in fig.axes[1].get_lines()] == [named_b]
    assert named_b in [line.get_label() for line in fig.axes[0].get_lines()]


def test_depth_heatmap_a_panel_per_method_cells_from_by_depth_one_colour_scale(qa_runs: Path, tmp_path: Path) -> None:
    frame = frame_of(qa_runs)
    fig = plot.figure(frame[frame["task"] == "passkey"], "depth-heatmap")
    *panels, colorbar = fig.axes
    assert [ax.get_title() for ax in panels] == ["plain\nn=4 per cell", "RMT\nn=4 per cell", "HMT\nn=4 per cell"]
    hmt = panels[2].get_images()[0]
    expected = np.array([[max(0.0, a - i * 0.1) for a in ACCURACY["hmt"]] for i in range(len(DEPTHS))])
    assert np.asarray(hmt.get_array()) == pytest.approx(expected)
    assert hmt.get_clim() == (0, 1) and all(ax.get_images()[0].get_clim() == (0, 1) for ax in panels)
    assert [t.get_text() for t in panels[2].get_yticklabels()] == ["0", "0.25", "0.5", "0.75", "1"]
    assert [t.get_text() for t in panels[2].get_xticklabels()] == ["1k", "4k", "16k"]
    assert [t.get_text() for t in panels[2].texts][:3] == ["0.80", "0.70", "0.60"]  # depth 0, each length
    assert colorbar.get_ylabel() == "accuracy (higher is better)"
    (png, _) = draw.save(fig, tmp_path / "figs", "depth-heatmap")
    assert png_size(png)[0] <= 3000


def test_depth_heatmap_averages_runs_by_their_samples(tmp_path: Path) -> None:
    for seed, (accuracy, n) in enumerate([(1.0, 2), (0.0, 6)]):  # two seeds: their samples pooled
        write_run(tmp_path, "hmt", command="eval-qa", task="passkey", context_length=4000, accuracy=accuracy,
                  by_depth=[{"depth": 0.5, "n": n, "accuracy": accuracy, "exact_match": accuracy}], seed=seed)
    (panel, _) = plot.figure(frame_of(tmp_path), "depth-heatmap").axes
    assert np.asarray(panel.get_images()[0].get_array()).tolist() == [[0.25]]
    assert panel.get_title() == "HMT\nn=8 per cell"


def test_full_context_is_a_level_line_across_the_position_panel(tmp_path: Path) -> None:
    asked = json.dumps({"memory": {"segment_length": 64}})  # full reads the document as one segment of 192
    write_run(tmp_path, "plain", ppl=9.0, test_length=192, segment_nll=[64.0, 64.0, 64.0], segment_tokens=[64] * 3,
              config=asked)
    write_run(tmp_path, "full", ppl=5.0, test_length=192, segment_length=192, text_tokens=192, segment_nll=[96.0],
              segment_tokens=[192], config=asked)
    fig = plot.figure(frame_of(tmp_path), "ppl-vs-position")
    (ax,) = fig.axes
    level = next(line for line in ax.get_lines() if line.get_label() == "full (whole document)")
    assert list(level.get_ydata()) == pytest.approx([np.exp(0.5)] * 2) and list(level.get_xdata()) == [0, 1]
    assert level.get_linestyle() == ":" and level.get_color() == draw.method_color("full")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["plain", "full (whole document)"]


def test_a_deep_score_says_how_many_of_its_samples_it_counts(tmp_path: Path) -> None:
    """exact_match_deep counts only the keys before the last segment's depth: 100 of 125 samples (25 a depth)."""
    by_depth = [{"depth": d, "n": 25, "exact_match": 1.0, "accuracy": 1.0} for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
    for length in (1024, 4096):
        write_run(tmp_path, "hmt", command="eval-qa", dataset=None, protocol="qa", task="passkey",
                  context_length=length, test_length=length, max_docs=125, batch_size=125, exact_match=1.0,
                  by_depth=by_depth)
    fig = plot.figure(frame_of(tmp_path), "accuracy-vs-length", metric="exact_match_deep")
    note = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "samples per point: 125 (max_docs), 100 of them at depth < 1" in note


def test_one_series_at_other_sample_counts_stays_one_line_unless_two_points_would_share_a_length(
        tmp_path: Path) -> None:
    """HMT at 1k and 4k with 125 samples and at 16k with 100: one line of three points, the counts in the note;
    a second 16k run with 125 samples would put two points at 16k, so then the counts keep their panels apart."""
    def qa(folder: Path, method: str, length: int, docs: int, accuracy: float) -> None:
        write_run(folder, method, command="eval-qa", dataset=None, protocol="qa", task="passkey",
                  context_length=length, test_length=length, max_docs=docs, batch_size=docs, accuracy=accuracy)

    for length, docs, accuracy in [(1000, 125, 0.9), (4000, 125, 0.8), (16000, 100, 0.7)]:
        qa(tmp_path / "runs", "hmt", length, docs, accuracy)
        qa(tmp_path / "runs", "plain", length, 125, 0.1)
    fig = plot.figure(frame_of(tmp_path / "runs"), "accuracy-vs-length")
    (panel,) = [ax for ax in fig.axes if ax.get_lines()]
    hmt = next(line for line in panel.get_lines() if line.get_label() == "HMT")
    assert list(hmt.get_ydata()) == pytest.approx([0.9, 0.8, 0.7])
    assert "samples per point: 100, 125 (max_docs)" in " ".join(t.get_text() for t in fig.texts).replace("\n", " ")

    qa(tmp_path / "runs", "hmt", 16000, 125, 0.75)
    fig = plot.figure(frame_of(tmp_path / "runs"), "accuracy-vs-length")
    titles = [ax.get_title() for ax in fig.axes if ax.get_lines()]
    assert titles == ["tiny · passkey\n125 samples · batch 125", "tiny · passkey\n100 samples · batch 100"]
