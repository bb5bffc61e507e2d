"""plot: drawn bars and line points equal the table values, files are written, unsupported figures say why."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
from matplotlib.container import BarContainer
from typer.testing import CliRunner

from hmtbench.analysis import plot
from hmtbench.analysis.compare import build
from hmtbench.analysis.load import load_results
from hmtbench.cli import app
from tests.test_compare import write_run

matplotlib.use("Agg")

NLL = {"plain": [40.0, 38.0, 36.0], "rmt": [40.0, 34.0, 31.0], "hmt": [40.0, 30.0, 27.0]}
TOKENS = [10, 10, 8]
PARAMS = {"tiny": 1_000, "big": 9_000}
ADDED = {"plain": 0, "rmt": 64, "hmt": 2_000}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """eval-ppl on two backbones (per-segment NLL, parameter counts) and GPU memory at two lengths."""
    folder = tmp_path / "results"
    for backbone, scale in [("tiny", 1.0), ("big", 0.5)]:
        for method, ppl in [("plain", 20.0), ("rmt", 18.0), ("hmt", 15.0)]:
            write_run(folder, method, backbone=backbone, ppl=ppl * scale, segment_nll=NLL[method],
                      segment_tokens=TOKENS, backbone_params=PARAMS[backbone], added_params=ADDED[method])
    write_run(folder, "hmt", backbone="tiny", ppl=16.0, segment_nll=[40.0, 32.0, 29.0], segment_tokens=TOKENS,
              backbone_params=1_000, added_params=2_000)  # a second seed: the cell is a mean of two runs
    for method, mem in [("full", (300.0, 1200.0)), ("rmt", (210.0, 212.0)), ("hmt", (230.0, 233.0))]:
        for length, value in zip((2048, 8192), mem, strict=True):
            write_run(folder, method, command="bench", test_length=length, peak_gpu_mem_mb=value)
    return folder


def frame_of(folder: Path):
    return load_results([folder], warn=lambda message: None)


def bars(ax) -> dict[str, list[float]]:
    return {c.get_label(): [p.get_height() for p in c] for c in ax.containers if isinstance(c, BarContainer)}


def lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_ppl_bars_heights_are_the_table_means_and_deltas_are_annotated(results: Path) -> None:
    frame = frame_of(results)
    table = build(frame, "ppl")
    fig = plot.figure(frame, "ppl-bars")
    (ax,) = fig.axes
    expected = {plot.draw.label(m): [row.cells[m].mean for row in table.rows] for m in table.methods}
    assert bars(ax) == expected == {"plain": [10.0, 20.0], "RMT": [9.0, 18.0], "HMT": [7.5, 15.5]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["big", "tiny"]
    notes = [t.get_text() for t in ax.texts]
    assert notes == [f"{(9.0 - 7.5) / 9.0 * 100:+.1f}%", f"{(18.0 - 15.5) / 18.0 * 100:+.1f}%"]
    assert ax.get_title() == "wiki"


def test_runs_kept_apart_get_lettered_groups_spelled_out_below(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0)
    write_run(tmp_path, "rmt", ppl=18.0)
    write_run(tmp_path, "rmt", ppl=16.0, checkpoint="/data/runs/rmt/train/final")
    fig = plot.figure(frame_of(tmp_path), "ppl-bars")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny\n(a)", "tiny\n(b)"]
    assert bars(ax) == {"plain": [20.0, 20.0], "RMT": [16.0, 18.0]}
    footer = fig.texts[-1].get_text().splitlines()
    assert footer[-2:] == ["(a) rmt: checkpoint=train/final", "(b) rmt: checkpoint=none"]


def test_ppl_vs_position_points_are_segment_perplexities(results: Path) -> None:
    fig = plot.figure(frame_of(results), "ppl-vs-position")
    big, tiny = fig.axes
    drawn = lines(tiny)
    for method, width in [("plain", 64), ("RMT", 62)]:
        xs, ys = drawn[method]
        assert xs == [width, 2 * width, 3 * width]
        assert ys == pytest.approx([math.exp(n / t) for n, t in zip(NLL[method.lower()], TOKENS, strict=True)])
    two_seeds = [(math.exp(a / t) + math.exp(b / t)) / 2 for a, b, t in zip(NLL["hmt"], [40, 32, 29], TOKENS,
                                                                           strict=True)]
    assert drawn["HMT"] == ([54, 108, 162], pytest.approx(two_seeds))
    assert big.get_title() == "big · wiki" and tiny.get_title() == "tiny · wiki"


def test_position_curve_caps_at_the_document_and_leaves_out_short_tails_and_paper_windows(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=9.0, test_length=150, segment_nll=[63.0, 128.0, 44.0], segment_tokens=[63, 64, 22])
    write_run(tmp_path, "rmt", ppl=8.0, test_length=150, segment_nll=[61.0, 62.0, 9.0], segment_tokens=[61, 62, 3])
    write_run(tmp_path, "plain", ppl=9.0, protocol="paper", segment_nll=[0.0, 70.0], segment_tokens=[0, 64])
    (ax,) = plot.figure(frame_of(tmp_path), "ppl-vs-position").axes
    drawn = lines(ax)
    assert drawn["plain"] == ([64, 128, 150], pytest.approx([math.e, math.e**2, math.e**2]))
    assert drawn["RMT"] == ([62, 124], pytest.approx([math.e, math.e]))  # 3 of 62 tokens: under 10%, left out


def test_memory_vs_length_points_are_peak_memory_per_length(results: Path) -> None:
    fig = plot.figure(frame_of(results), "memory-vs-length")
    (ax,) = fig.axes
    assert lines(ax) == {"full": ([2048, 8192], [300.0, 1200.0]), "RMT": ([2048, 8192], [210.0, 212.0]),
                         "HMT": ([2048, 8192], [230.0, 233.0])}
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["2,048", "8,192"]
    assert ax.get_ylabel() == "peak GPU memory (MiB) (lower is better)"


def test_quality_vs_params_points_are_the_table_means(results: Path) -> None:
    fig = plot.figure(frame_of(results), "quality-vs-params")
    total, added = fig.axes
    assert lines(total)["HMT"] == ([3_000, 11_000], [15.5, 7.5])
    assert lines(total)["plain"] == ([1_000, 9_000], [20.0, 10.0])
    assert lines(added)["RMT"] == ([64, 64], [9.0, 18.0])  # same added count on both backbones
    assert [t.get_text() for t in total.get_xticklabels()] == ["tiny\n1k", "big\n9k"]
    assert [t.get_text() for t in added.texts] == ["big", "tiny"] * 3  # plain, RMT, HMT; by added params, then y


def test_qa_bars_one_panel_per_metric_and_task(tmp_path: Path) -> None:
    for task, scores in [("passkey", (0.2, 0.5, 0.9)), ("babilong", (0.1, 0.3, 0.4))]:
        for method, accuracy in zip(("plain", "rmt", "hmt"), scores, strict=True):
            write_run(tmp_path, method, command="eval-qa", dataset=None, task=task, accuracy=accuracy,
                      rouge_l=accuracy / 2)
    fig = plot.figure(frame_of(tmp_path), "qa-bars")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["ROUGE-L · babilong", "ROUGE-L · passkey", "accuracy · babilong", "accuracy · passkey"]
    assert bars(fig.axes[3]) == {"plain": [0.2], "RMT": [0.5], "HMT": [0.9]}
    assert bars(fig.axes[0])["HMT"] == [0.2]


def test_paper_writes_every_supported_figure_and_names_the_rest(results: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    written = plot.run_plot([results], [], tmp_path / "figures", paper=True, warn=messages.append)
    names = ["ppl-bars", "ppl-vs-position", "memory-vs-length", "quality-vs-params"]
    assert written == [tmp_path / "figures" / f"{n}.{ext}" for n in names for ext in ("png", "pdf")]
    assert all(path.stat().st_size > 1000 for path in written)
    assert written[0].read_bytes()[:4] == b"\x89PNG" and written[1].read_bytes()[:4] == b"%PDF"
    assert len(messages) == 1 and messages[0].startswith("skipped qa-bars: qa-bars needs eval-qa runs")


def test_a_figure_the_results_cannot_support_names_the_missing_runs(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0, peak_gpu_mem_mb=300.0, backbone_params=1_000)
    write_run(tmp_path, "hmt", ppl=15.0, peak_gpu_mem_mb=230.0, backbone_params=1_000)
    frame = frame_of(tmp_path)
    with pytest.raises(plot.FigureUnsupported, match=r"qa-bars needs eval-qa runs .* eval-ppl: plain, hmt on tiny"):
        plot.figure(frame, "qa-bars")
    with pytest.raises(plot.FigureUnsupported, match=r"two or more lengths.* tiny / wiki: 512 tokens \(plain, hmt\)"):
        plot.figure(frame, "memory-vs-length")
    with pytest.raises(plot.FigureUnsupported, match="the same settings; the results have wiki: tiny only"):
        plot.figure(frame, "quality-vs-params")
    with pytest.raises(plot.FigureUnsupported, match="per-segment NLL"):
        plot.figure(frame, "ppl-vs-position")
    out = tmp_path / "figures"
    with pytest.raises(plot.FigureUnsupported):
        plot.run_plot([tmp_path], ["ppl-bars", "qa-bars"], out)
    assert not out.exists()  # a named figure that cannot be drawn: nothing half-written


def test_cli_plot_end_to_end(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    result = CliRunner().invoke(app, ["plot", str(results), "--figure", "ppl-bars,memory-vs-length", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = [out / f"{name}.{ext}" for name in ("ppl-bars", "memory-vs-length") for ext in ("png", "pdf")]
    assert result.stdout.strip().splitlines() == [f"wrote {path}" for path in files]
    assert all(path.is_file() for path in files)
    paper = CliRunner().invoke(app, ["plot", str(results), "--paper", "--method", "full", "--out", str(tmp_path)])
    assert paper.exit_code == 0, paper.output
    assert "skipped ppl-bars" in paper.stderr and "skipped qa-bars" in paper.stderr
    assert paper.stdout.strip().splitlines()[-1] == f"wrote {tmp_path / 'memory-vs-length.pdf'}"
    refused = CliRunner().invoke(app, ["plot", str(results), "--figure", "qa-bars"])
    assert refused.exit_code == 2 and "qa-bars needs eval-qa runs" in refused.stderr
    unknown = CliRunner().invoke(app, ["plot", str(results), "--figure", "ppl-bar"])
    assert unknown.exit_code == 2 and "did you mean 'ppl-bars'" in unknown.stderr
