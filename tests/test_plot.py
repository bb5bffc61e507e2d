"""plot: drawn bars and line points equal the table values, files are written, unsupported figures say why."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from typer.testing import CliRunner

from hmtbench.analysis import plot
from hmtbench.analysis.compare import build
from hmtbench.analysis.draw import method_color, method_line
from hmtbench.analysis.lines import DODGE, _notes
from hmtbench.analysis.load import load_results
from hmtbench.cli import app
from hmtbench.methods import method_label
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
    expected = {method_label(m): [row.cells[m].mean for row in table.rows] for m in table.methods}
    assert bars(ax) == expected == {"plain": [10.0, 20.0], "RMT": [9.0, 18.0], "HMT": [7.5, 15.5]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["big", "tiny"]
    notes = [t.get_text() for t in ax.texts]
    assert notes == [f"{(9.0 - 7.5) / 9.0 * 100:+.1f}%", f"{(18.0 - 15.5) / 18.0 * 100:+.1f}%"]
    assert ax.get_title() == "wiki"
    colours = [method_color(m) for m in ("plain", "rmt", "hmt")]  # one colour per method, across figures
    assert len(set(colours)) == 3
    assert [c.get_facecolor() for c in ax.patches[::2]] == [matplotlib.colors.to_rgba(c) for c in colours]


def test_runs_kept_apart_are_bars_of_their_own_labelled_by_their_setting(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0)
    write_run(tmp_path, "rmt", ppl=18.0)
    write_run(tmp_path, "rmt", ppl=16.0, checkpoint="/data/runs/rmt/train/final", memory_tokens=2)
    fig = plot.figure(frame_of(tmp_path), "ppl-bars")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tiny"]
    assert bars(ax) == {"plain": [20.0], "RMT (1 memory token)": [18.0], "RMT (2 memory tokens)": [16.0]}
    assert [p.get_hatch() for p in ax.patches] == ["", "", "////"]  # the second RMT series hatched
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(bars(ax))
    assert "(a)" not in fig.texts[-1].get_text()


def test_bar_whiskers_are_one_runs_interval_and_overlap_is_marked(tmp_path: Path) -> None:
    for method, (ppl, low, high) in {"plain": (6.5, 6.4, 6.6), "rmt": (6.2, 6.1, 6.3),
                                     "hmt": (6.045, 5.98, 6.11)}.items():
        write_run(tmp_path, method, ppl=ppl, ppl_ci_low=low, ppl_ci_high=high)
    (ax,) = plot.figure(frame_of(tmp_path), "ppl-bars").axes
    whiskers = [c for c in ax.containers if not isinstance(c, BarContainer)]
    segments = [seg for c in whiskers for seg in c.lines[2][0].get_segments()]
    assert [(round(s[0][1], 6), round(s[1][1], 6)) for s in segments] == [(6.4, 6.6), (6.1, 6.3), (5.98, 6.11)]
    assert [t.get_text() for t in ax.texts] == [f"{(6.2 - 6.045) / 6.2 * 100:+.1f}% n.s."]


def test_ppl_vs_position_points_are_segment_perplexities(results: Path) -> None:
    fig = plot.figure(frame_of(results), "ppl-vs-position")
    big, tiny = fig.axes
    drawn = lines(tiny)
    assert fig.get_size_inches()[0] < 10  # two panels: no third, empty slot
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
    drawn = lines(ax)
    shifts = {label: DODGE**i for label, i in [("full", -1), ("RMT", 0), ("HMT", 1)]}  # set apart sideways
    assert {label: ([round(x / shifts[label]) for x in xs], ys) for label, (xs, ys) in drawn.items()} == {
        "full": ([2048, 8192], [300.0, 1200.0]), "RMT": ([2048, 8192], [210.0, 212.0]),
        "HMT": ([2048, 8192], [230.0, 233.0])}
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["2k", "8k"]
    assert ax.get_ylabel() == "peak GPU memory (MiB)\n(lower is better)"


def test_memory_vs_length_shows_the_baseline_over_a_method_of_the_same_memory(tmp_path: Path) -> None:
    for method in ("plain", "rmt"):
        for length in (2048, 8192):
            write_run(tmp_path, method, command="bench", test_length=length, peak_gpu_mem_mb=350.0)
    (ax,) = plot.figure(frame_of(tmp_path), "memory-vs-length").axes
    plain, rmt = ax.get_lines()
    assert (plain.get_label(), plain.get_linestyle(), plain.get_markerfacecolor(), plain.get_zorder()) == (
        "plain", "--", "none", 3)
    assert (rmt.get_label(), rmt.get_linestyle(), rmt.get_marker(), rmt.get_zorder()) == (
        "RMT", "-", method_line("rmt")["marker"], 2)
    assert method_line("rmt")["marker"] != method_line("plain")["marker"]
    assert plain.get_xdata()[0] < rmt.get_xdata()[0]  # and set apart sideways


def test_quality_vs_params_points_are_the_table_means(results: Path) -> None:
    fig = plot.figure(frame_of(results), "quality-vs-params")
    total, added = fig.axes
    assert lines(total)["HMT"] == ([3_000, 11_000], [15.5, 7.5])
    assert lines(total)["plain"] == ([1_000, 9_000], [20.0, 10.0])
    assert lines(added)["RMT"] == ([64, 64], [9.0, 18.0])  # same added count on both backbones
    assert [t.get_text() for t in total.get_xticklabels()] == ["tiny\n1k", "big\n9k"]
    assert [t.get_text() for t in added.texts] == ["big", "tiny"] * 3  # plain, RMT, HMT; by added params, then y


def test_paper_writes_every_supported_figure_and_names_the_rest(results: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    written = plot.run_plot([results], [], tmp_path / "figures", paper=True, warn=messages.append)
    names = ["ppl-bars", "ppl-vs-position", "memory-vs-length", "quality-vs-params"]
    assert written == [tmp_path / "figures" / f"{n}.{ext}" for n in names for ext in ("png", "pdf")]
    assert all(path.stat().st_size > 1000 for path in written)
    assert written[0].read_bytes()[:4] == b"\x89PNG" and written[1].read_bytes()[:4] == b"%PDF"
    assert [m.split(":")[0] for m in messages] == ["skipped accuracy-vs-length", "skipped depth-heatmap"]
    assert "depth-heatmap needs eval-qa runs with accuracy per needle depth (by_depth" in messages[1]


def test_a_figure_the_results_cannot_support_names_the_missing_runs(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0, peak_gpu_mem_mb=300.0, backbone_params=1_000)
    write_run(tmp_path, "hmt", ppl=15.0, peak_gpu_mem_mb=230.0, backbone_params=1_000)
    frame = frame_of(tmp_path)
    with pytest.raises(plot.FigureUnsupported, match=r"accuracy-vs-length needs eval-qa .* eval-ppl: plain, hmt on"):
        plot.figure(frame, "accuracy-vs-length")
    with pytest.raises(plot.FigureUnsupported, match=r"two or more lengths.* tiny / wiki: 512 tokens \(plain, hmt\)"):
        plot.figure(frame, "memory-vs-length")
    with pytest.raises(plot.FigureUnsupported, match="the same settings; the results have wiki: tiny only"):
        plot.figure(frame, "quality-vs-params")
    with pytest.raises(plot.FigureUnsupported, match="per-segment NLL"):
        plot.figure(frame, "ppl-vs-position")
    out = tmp_path / "figures"
    with pytest.raises(plot.FigureUnsupported):
        plot.run_plot([tmp_path], ["ppl-bars", "depth-heatmap"], out)
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
    assert "skipped ppl-bars" in paper.stderr and "skipped depth-heatmap" in paper.stderr
    assert paper.stdout.strip().splitlines()[-1] == f"wrote {tmp_path / 'memory-vs-length.pdf'}"
    refused = CliRunner().invoke(app, ["plot", str(results), "--figure", "accuracy-vs-length"])
    assert refused.exit_code == 2 and "accuracy-vs-length needs eval-qa runs" in refused.stderr
    unknown = CliRunner().invoke(app, ["plot", str(results), "--figure", "ppl-bar"])
    assert unknown.exit_code == 2 and "did you mean 'ppl-bars'" in unknown.stderr


def test_a_methods_series_differ_in_dashes_and_shade_the_first_keeps_its_colour() -> None:
    styles = [method_line("hmt", variant) for variant in range(7)]
    assert styles[0]["color"] == method_color("hmt")
    assert len({s["color"] for s in styles}) == 7 and len({str(s["linestyle"]) for s in styles}) == 6
    assert len({s["marker"] for s in styles}) == 1  # the marker stays the method's
    darker, lighter = (matplotlib.colors.to_rgb(styles[i]["color"]) for i in (1, 2))
    base = matplotlib.colors.to_rgb(method_color("hmt"))
    assert sum(darker) < sum(base) < sum(lighter)


def test_notes_of_points_that_nearly_coincide_are_stacked_not_written_over_each_other() -> None:
    """Two lines read at one seed at 256k and 1M, both at zero (ARMT and HMT in the protocol's figure): the second
    note goes up a line; a note far from the others stays beside its point."""
    ax = Figure(figsize=(4, 3)).add_subplot()
    ax.set_xscale("log")
    ax.set_xlim(1e3, 2e6)
    ax.set_ylim(0, 1)
    _notes(ax, [(1048576, 0.0, "train seed 2 only"), (262144, 0.0, "train seed 1 only"),
                (4096, 0.5, "train seed 3 only")])
    assert [(t.get_text(), t.xyann) for t in ax.texts] == [
        ("train seed 2 only", (4, 0)), ("train seed 1 only", (4, 7)), ("train seed 3 only", (4, 0))]
