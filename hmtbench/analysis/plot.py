"""`hmtbench plot`: the paper's figures, drawn from the same comparison tables `hmtbench compare` prints."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hmtbench.analysis import bars, curves, draw, qa
from hmtbench.analysis.compare import Comparison, build, inventory
from hmtbench.analysis.draw import FigureUnsupported
from hmtbench.analysis.lines import Line, LinePanel, line_figure, series_lines
from hmtbench.analysis.load import load_results, select
from hmtbench.analysis.series import Entry, Legend, by_panel, entries, grouped, legend, ordered_series
from hmtbench.errors import HmtbenchError, unknown_choice
from hmtbench.methods import method_label, method_names
from hmtbench.results.schema import METRIC_DIRECTION

FIGURES = {
    "ppl-bars": "perplexity per method, grouped by backbone, one panel per dataset (the paper's Figures 2-4)",
    "accuracy-vs-length": "QA accuracy against context length: a line per method with its 95% band, a panel per task",
    "depth-heatmap": "QA accuracy per needle depth and context length, a panel per method (BABILong's style)",
    "ppl-vs-position": "perplexity against position in the document, per method",
    "memory-vs-length": "peak GPU memory against context length: memory methods vs the full-context backbone",
    "quality-vs-params": "quality against total and added parameters, per method across backbones",
    "training-curve": "a training run's logged metric (exact on keys in earlier segments) against tokens trained, "
                      "from the log.jsonl of the runs under the paths (not part of --paper)",
}
LENGTHS = ("test_length", "context_length")


def all_methods() -> str:
    return ",".join(method_names())  # --method for the runs a message asks for


def ppl_bars(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    table = build(frame, metric or "ppl")
    if not table.rows:
        raise FigureUnsupported(f"ppl-bars needs eval-ppl runs with {table.metric}; {inventory(frame)}; add them "
                                f"with `hmtbench eval-ppl --method {all_methods()}`")
    return bars.bars_figure(table)


def ppl_vs_position(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    """Per-segment perplexity exp(segment_nll / segment_tokens), x = tokens read by the end of the segment."""
    has_curve = frame["segment_nll"].map(lambda v: isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0)
    streamed = frame["protocol"].ne("paper").fillna(True).astype(bool)  # paper windows score only their last block
    table = build(frame[has_curve & streamed], "ppl")
    if not table.rows:
        raise FigureUnsupported("ppl-vs-position needs eval-ppl runs of the stream protocol with per-segment NLL "
                                f"(segment_nll); {inventory(frame)}; add them with `hmtbench eval-ppl --method "
                                "plain,rmt,hmt --protocol stream`")
    runs = frame.set_index("run_id")
    items = entries(table)
    looks = legend(items)
    panels = [LinePanel(dict(key), _position_lines(panel, runs, looks), "position in the document (tokens read)",
                        "perplexity of the segment") for key, panel in grouped(items, lambda e: e.place()).items()]
    return line_figure(panels, "each point: perplexity of one segment, mean over runs; segments scoring under 10% of a "
                               "full segment's tokens (short tails) left out; dotted level: a method reading the whole "
                               "document in one segment", shared=looks.shared)


def _position_lines(items: list[Entry], runs: pd.DataFrame, looks: Legend) -> list[Line]:
    lines = []
    for method, own in ordered_series(items):
        entry = next(e for e in items if (e.method, e.own) == (method, own))
        xs, ys = position_curve(runs.loc[entry.cell.runs])
        lines.append(Line(method, looks.labels[(method, own)], xs, ys, variant=looks.index[(method, own)],
                          level=len(xs) == 1))
    return lines


def position_curve(runs: pd.DataFrame, min_share: float = 0.1) -> tuple[list[float], list[float]]:
    """Mean over runs of each segment's perplexity, x = tokens read by the segment's end (at most test_length).

    A segment scoring under ``min_share`` of a full segment's tokens (a document's short tail) is left out: a
    handful of tokens makes a perplexity that is noise, and it would set the y range.
    """
    curves = []
    for nll, tokens in zip(runs["segment_nll"], runs["segment_tokens"], strict=True):
        tokens = np.asarray(tokens, float)
        enough = np.where(tokens >= min_share * tokens.max(), tokens, np.nan) if tokens.max() > 0 else tokens * np.nan
        curves.append(np.exp(np.asarray(nll, float) / enough))
    stack = np.full((len(curves), max(len(c) for c in curves)), np.nan)
    for i, curve in enumerate(curves):
        stack[i, : len(curve)] = curve
    keep = np.isfinite(stack).any(axis=0)
    step, limit = runs["text_tokens"].dropna(), runs["test_length"].dropna()
    ends = (np.arange(stack.shape[1]) + 1) * (int(step.iloc[0]) if len(step) else 1)
    ends = np.minimum(ends, int(limit.iloc[0])) if len(limit) else ends
    return ends[keep].tolist(), np.nanmean(stack[:, keep], axis=0).tolist()


def memory_vs_length(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    table = build(frame, metric or "peak_gpu_mem_mb")
    if not table.rows:
        raise FigureUnsupported(f"memory-vs-length needs {table.metric}, which only GPU runs record; "
                                f"{inventory(frame)}; add e.g. `hmtbench eval-ppl --device cuda --method "
                                f"{all_methods()} --test-length 2000`, then again with --test-length 8000")
    panels = by_panel([e for e in entries(table) if _length(e) is not None], LENGTHS)
    looks = legend(e for panel in panels.values() for e in panel)
    kept = []
    for key, panel in panels.items():
        lines = series_lines(panel, _length, looks)
        if any(len(set(line.xs)) > 1 for line in lines):
            kept.append(LinePanel(dict(key), lines, "context length (tokens)",
                                  draw.axis_label(table.metric, table.direction), "log",
                                  {x: draw.length_label(x) for line in lines for x in line.xs}, dodge=True,
                                  ylim=(0, None)))  # from zero: a flat line must look flat
    if not kept:
        raise FigureUnsupported("memory-vs-length needs one method measured at two or more lengths; "
                                f"{table.metric} was measured only at: {_lengths_seen(panels)}; add runs at another "
                                "--test-length (or --context-length)")
    return line_figure(kept, "each point: mean over runs; the baseline hollow, dashed and on top; lines set a few "
                             "percent apart sideways so that equal values stay visible", shared=looks.shared)


def _length(entry: Entry) -> float | None:
    return next((entry.row.key[k] for k in reversed(LENGTHS) if entry.row.key.get(k) is not None), None)


def quality_vs_params(frame: pd.DataFrame, metric: str | None = None) -> Figure:
    """Top: quality against total parameters (a line per method across backbones); below: against added ones."""
    present = [m for m in ("ppl", *qa.QA_METRICS) if frame[m].notna().any()]
    table = build(frame, metric or (present[0] if present else "ppl"))
    points = _param_points(table, frame.set_index("run_id"))
    kept = [k for k, series in points.items() if len({p[3] for pts in series.values() for p in pts}) > 1]
    if not kept:
        where, _ = draw.titles([dict(k) for k in points], wrap=None)
        seen = "; ".join(f"{w}: {', '.join(sorted({p[3] for s in series.values() for p in s}))} only"
                         for w, series in zip(where, points.values(), strict=True))
        raise FigureUnsupported("quality-vs-params needs one dataset evaluated on two or more backbones under the "
                                f"same settings; the results have {seen or 'no parameter counts (backbone_params)'}; "
                                "add e.g. `hmtbench eval-ppl --backbone opt-350m` with the same settings")
    ylabel = draw.axis_label(table.metric, table.direction)
    panels = []
    for k in kept:
        ticks = {p[4]: f"{p[3]}\n{draw.count(p[4])}" for pts in points[k].values() for p in pts}
        lines = [Line(m, method_label(m), *map(list, zip(*sorted((p[0], p[2]) for p in pts), strict=True)))
                 for m, pts in points[k].items()]
        panels.append(LinePanel(dict(k), lines, "total parameters (backbone + added)", ylabel, "log", ticks))
    for k in kept:
        ordered = {m: sorted(pts, key=lambda p: (p[1], p[2])) for m, pts in points[k].items()}
        lines = [Line(m, method_label(m), [p[1] for p in pts], [p[2] for p in pts], texts=[p[3] for p in pts])
                 for m, pts in ordered.items()]
        panels.append(LinePanel(dict(k), lines, "parameters added by the method", ylabel, "symlog", joined=False))
    return line_figure(panels, "each point: mean over runs", ncols=max(2, len(kept)))


def _param_points(table: Comparison, runs: pd.DataFrame) -> dict[tuple, dict[str, list[tuple]]]:
    """Per panel (row key without backbone) and method: (total, added, mean, backbone, backbone params)."""
    panels: dict[tuple, dict[str, list[tuple]]] = {}
    for row in table.rows:
        for method, cell in row.cells.items():
            params = runs.loc[cell.runs, ["backbone_params", "added_params"]].astype(float)
            if cell.mean is None or params["backbone_params"].isna().any():
                continue
            backbone, added = float(params["backbone_params"].mean()), float(params["added_params"].fillna(0).mean())
            point = (backbone + added, added, cell.mean, str(row.key["backbone"]), backbone)
            found = panels.setdefault(_without(row.key, ("backbone", "variant")), {}).setdefault(method, [])
            if point not in found:  # variant rows repeat the other methods' cells
                found.append(point)
    return panels


DRAWERS: dict[str, Callable[[pd.DataFrame, str | None], Figure]] = {
    "ppl-bars": ppl_bars, "accuracy-vs-length": qa.accuracy_vs_length, "depth-heatmap": qa.depth_heatmap,
    "ppl-vs-position": ppl_vs_position, "memory-vs-length": memory_vs_length, "quality-vs-params": quality_vs_params,
}


def figure(frame: pd.DataFrame, name: str, metric: str | None = None) -> Figure:
    """Draw figure ``name`` from the runs in ``frame``; FigureUnsupported names the runs it lacks."""
    if name not in DRAWERS:
        raise unknown_choice("--figure", name, DRAWERS)
    if metric is not None and metric not in METRIC_DIRECTION:
        raise unknown_choice("--metric", metric, METRIC_DIRECTION)
    with matplotlib.rc_context(draw.STYLE):
        return DRAWERS[name](frame, metric)


CURVES = "training-curve"


def training_curve(paths: Sequence[str | Path], metric: str | None = None) -> Figure:
    metric = metric or curves.DEFAULT_METRIC
    found = curves.find_curves(paths, metric)
    with matplotlib.rc_context(draw.STYLE):
        return curves.curve_figure(found, metric)


def run_plot(paths: Sequence[str | Path], names: Sequence[str], out: str | Path, paper: bool = False,
             filters: dict[str, str | None] | None = None, metric: str | None = None, include_failed: bool = False,
             warn: Callable[[str], None] | None = None) -> list[Path]:
    """`hmtbench plot`: each named figure, or with ``paper`` every figure the results support (skips reported)."""
    if not names and not paper:
        raise HmtbenchError(f"name a --figure ({', '.join(FIGURES)}) or use --paper for all of them")
    for name in names:
        if name not in FIGURES:
            raise unknown_choice("--figure", name, FIGURES)
    warn = warn or print
    drawn: dict[str, Figure] = {}
    if CURVES in names:  # drawn from the runs' logs, and only when asked for: not one of the paper's figures
        drawn[CURVES] = training_curve(paths, metric)
    skipped: list[str] = []
    records = [name for name in list(names) or list(DRAWERS) if name != CURVES]
    frame = select(load_results(paths, warn), filters or {}, include_failed, warn) if records else pd.DataFrame()
    if records and frame.empty:
        raise HmtbenchError("no runs are left after the filters")
    for name in records:
        try:
            drawn[name] = figure(frame, name, metric)
        except FigureUnsupported as err:
            if not paper:
                raise  # a figure asked for by name: nothing is written, the message says what is missing
            skipped.append(f"skipped {name}: {err}")
    for message in skipped:
        warn(message)
    if not drawn:
        raise HmtbenchError(f"the results support none of the figures ({len(skipped)} skipped, reasons above)")
    return [path for name, fig in drawn.items() for path in draw.save(fig, out, name)]


def _without(key: dict[str, Any], names: Sequence[str]) -> tuple:
    return tuple((k, v) for k, v in key.items() if k not in names)


def _lengths_seen(panels: dict[tuple, list[Entry]]) -> str:
    seen = []
    for key, items in panels.items():
        where = " / ".join(str(v) for k, v in key if k in ("backbone", "dataset", "task") and v is not None)
        lengths = sorted({_length(e) for e in items})
        methods = ", ".join(dict.fromkeys(e.method for e in items))
        seen.append(f"{where}: {', '.join(map(str, lengths))} tokens ({methods})")
    return "; ".join(dict.fromkeys(seen)) or "no lengths"  # panels of other settings repeat a place
