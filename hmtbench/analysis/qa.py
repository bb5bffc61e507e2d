"""QA figures: accuracy against context length (a line and 95% band per method) and per needle depth (heatmaps)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hmtbench.analysis import draw
from hmtbench.analysis.columns import BY_DEPTH, DEEP_SCORES, deep_counts, depth_totals
from hmtbench.analysis.compare import Comparison, build, inventory
from hmtbench.analysis.draw import FigureUnsupported
from hmtbench.analysis.lines import LinePanel, line_figure, series_lines
from hmtbench.analysis.series import Entry, Legend, by_panel, entries, legend, ordered_series
from hmtbench.methods import method_names

QA_METRICS = ("answer_ppl", "rouge_l", "f1", "exact_match", "accuracy")
# scores in 0..1 that the QA figures draw, the first present unless --metric names one (the *_deep ones: depth < 1)
SCORES = ("accuracy", "exact_match", "rouge_l", "f1", *DEEP_SCORES)
DEPTH_SCORES = ("accuracy", "exact_match")  # what by_depth holds per depth
LENGTHS = ("context_length", "test_length")  # the x axis (test_length: the tokens the context came to)
SAMPLE_COUNTS = ("max_docs", "batch_size")  # one series' runs at several lengths may hold other sample counts
TICKS = [1024 * 4**i for i in range(6)]  # 1k 4k 16k 64k 256k 1M (k = 1024, as --context-length reads 1k)


def accuracy_vs_length(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    """A panel per task, a line per method through its score at each context length, its 95% band around it."""
    table = _table(frame, metric, "accuracy-vs-length", SCORES)
    panels = by_panel(entries(table), LENGTHS, join=SAMPLE_COUNTS)
    looks = legend(e for panel in panels.values() for e in panel)
    drawn = [LinePanel(dict(key), series_lines(panel, _length, looks), "context length (tokens)",
                       draw.axis_label(table.metric, table.direction), "log", _ticks(panel), ylim=(-0.03, 1.03),
                       dodge=True)
             for key, panel in panels.items()]
    if not any(len({_length(e) for e in panel}) > 1 for panel in panels.values()):
        raise FigureUnsupported(f"accuracy-vs-length needs eval-qa runs at two or more --context-length values; "
                                f"{inventory(frame)}")
    banded = any(line.lows is not None for panel in drawn for line in panel.lines)
    bands = ("; bands: 95% interval (Wilson; over seeds, widened by their spread), else ± std over seeds"
             if banded else "")
    seeded = any(e.cell.count > 1 for panel in panels.values() for e in panel)
    bands += "; small dots: each seed's value" if seeded else ""
    if any(any(line.apart) for panel in drawn for line in panel.lines):
        bands += "; a hollow mark off its line: read at fewer seeds than the line (named beside it)"
    counts = sorted({e.row.key.get("max_docs") for panel in panels.values() for e in panel} - {None})
    joined = bool(counts) and not any(k == "max_docs" for key in panels for k, _ in key)  # else titles/footer say it
    samples = f"; samples per point: {', '.join(map(str, counts))} (max_docs)" if joined else ""
    if samples and table.metric in DEEP_SCORES:  # the score counts only those before the last segment's depth
        runs = frame.set_index("run_id")[BY_DEPTH]
        deep = sorted({found[1] for panel in panels.values() for e in panel for run in e.cell.runs
                       if (found := deep_counts(runs.loc[run], DEEP_SCORES[table.metric]))})
        samples += f", {', '.join(map(str, deep))} of them at depth < 1" if deep else ""
    return line_figure(drawn, f"each point: one measurement or the mean over seeds (identical repeats counted once), "
                              f"lines set a few percent apart sideways{bands}{samples}", shared=looks.shared)


def depth_heatmap(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    """A panel per method (and task): needle depth x context length, each cell the score there, one colour scale."""
    has = frame[BY_DEPTH].map(lambda v: isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0)
    table = _table(frame, metric, "depth-heatmap", DEPTH_SCORES, has, "per needle depth (by_depth, newer records)")
    runs = frame.set_index("run_id")
    maps = []
    panels = by_panel(entries(table), LENGTHS, join=SAMPLE_COUNTS)
    for key, panel in panels.items():
        for series in ordered_series(panel):
            cells = [e for e in panel if (e.method, e.own) == series]
            maps.append((dict(key), series, {_length(e): _depth_scores(runs.loc[e.cell.first_runs()], table.metric)
                                             for e in cells}))
    looks = legend(e for panel in panels.values() for e in panel)  # one panel per series: its label its title
    return _heatmaps(table, maps, looks)


def _table(frame: pd.DataFrame, metric: str | None, figure: str, allowed: tuple[str, ...],
           usable: pd.Series | bool = True, what: str = "") -> Comparison:
    """The table of the score drawn, from runs at a context length (and ``usable``); the runs to add if none."""
    name = metric or next((m for m in allowed if frame[m].notna().any()), allowed[0])
    if name not in allowed:
        raise FigureUnsupported(f"{figure} draws {' or '.join(allowed)}, not {name}")
    table = build(frame[frame["context_length"].notna() & usable], name)
    if not table.rows:
        scores = " ".join(filter(None, [name, what]))
        raise FigureUnsupported(f"{figure} needs eval-qa runs with {scores} at a --context-length; "
                                f"{inventory(frame)}; add them with `hmtbench eval-qa --task passkey --method "
                                f"{','.join(method_names())} --context-length 4000`, and again at other lengths")
    return table


def _length(entry: Entry) -> float:
    return float(entry.row.key["context_length"])


def _ticks(panel: list[Entry]) -> dict[float, str]:
    lengths = sorted({_length(e) for e in panel})
    ticks = [t for t in TICKS if lengths[0] / 1.5 <= t <= lengths[-1] * 1.5]
    return {t: draw.length_label(t) for t in (ticks if len(ticks) > 1 else lengths)}


def _depth_scores(runs: pd.DataFrame, metric: str) -> dict[float, tuple[float, int]]:
    """Per depth: the score over every sample at that depth in ``runs`` (one per measurement: identical repeats
    count once; several seeds pool their samples, weighted by n), and that n."""
    totals: dict[float, tuple[float, int]] = {}
    for depths in runs[BY_DEPTH]:
        for depth, (score, n) in depth_totals(depths, metric).items():
            total, count = totals.get(depth, (0.0, 0))
            totals[depth] = (total + score, count + n)
    return {depth: (score / n, n) for depth, (score, n) in totals.items()}


def _heatmaps(table: Comparison, maps: list[tuple[dict[str, Any], tuple, dict]], looks: Legend) -> Figure:
    depths = sorted({d for _, _, cells in maps for scores in cells.values() for d in scores})
    lengths = sorted({length for _, _, cells in maps for length in cells})
    fig, axes = draw.grid(len(maps), ncols=4, size=(2.3, 2.2))
    keys = [key for key, _, _ in maps]
    common = {k: v for k, v in keys[0].items() if v is not None and all(key.get(k) == v for key in keys)}
    shown, _ = draw.titles([{k: v for k, v in key.items() if k not in common} for key in keys], wrap=None)
    for ax, (_, series, cells), where in zip(axes, maps, shown, strict=True):
        image = _heatmap(ax, cells, depths, lengths)
        counts = sorted({n for scores in cells.values() for _, n in scores.values()})
        n = f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}–{counts[-1]}"
        label = textwrap.fill(looks.labels[series], width=30, break_on_hyphens=False)  # wrap, not run into the next
        ax.set_title("\n".join(filter(None, [label, where, f"{n} per cell"])))
    fig.colorbar(image, ax=axes, shrink=0.9, label=draw.axis_label(table.metric, table.direction))
    footer = " · ".join(f"{k}={v}" for k, v in common.items())
    return draw.finish(fig, [], "\n".join([footer, looks.shared, f"each cell: {table.metric} of the samples whose "
                                                                 "needle sits at that depth (0 = start of the context, "
                                                                 "1 = its end), one run per seed"]))


def _heatmap(ax: Axes, cells: dict[float, dict[float, tuple[float, int]]], depths: list[float],
             lengths: list[float]):
    values = np.array([[cells.get(length, {}).get(d, (np.nan, 0))[0] for length in lengths] for d in depths])
    cmap = _colour_map()
    image = ax.imshow(values, cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        text = "–" if np.isnan(value) else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=6,
                color="white" if not np.isnan(value) and value < 0.55 else "black")  # cividis: dark below 0.55
    ax.set_xticks(range(len(lengths)), [draw.length_label(x) for x in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set(xlabel="context length (tokens)", ylabel="needle depth")
    ax.grid(False)
    return image


def _colour_map():
    """Dark blue (0) to yellow (1), colour-blind-safe and even in lightness (draw.HEATMAP), in place of BABILong's
    red-to-green; cells without samples light grey."""
    from matplotlib import colormaps

    return colormaps[draw.HEATMAP].with_extremes(bad="#eeeeee")
