"""Grouped bars (ppl-bars): a panel per setting, a group per backbone, a bar per method and setting it varied."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hmtbench.analysis import draw
from hmtbench.analysis.compare import Comparison, delta_label
from hmtbench.analysis.labels import phrase
from hmtbench.analysis.series import Entry, Legend, entries, grouped, legend, ordered_series, spread
from hmtbench.methods import method_label

LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.9}
WHISKERS = ("whiskers: 95% interval (a measurement's own, identical repeats counted once; over seeds, widened by "
            "their spread) where recorded, else ± std over seeds")


def bars_figure(table: Comparison) -> Figure:
    """One panel per row key without the backbone; within it a group per backbone (and per setting every method of
    the row shares, e.g. engine switches), a bar per method; a method's runs kept apart are bars of their own."""
    items = entries(table)
    panels = grouped(items, lambda e: tuple((k, v) for k, v in e.row.key.items() if k not in ("backbone", "variant")))
    fig, axes = draw.grid(len(panels))
    shown, common = draw.titles([dict(key) for key in panels])
    looks = legend(items)
    for ax, panel, title in zip(axes, panels.values(), shown, strict=True):
        _bar_panel(ax, table, panel, looks)
        ax.set_title(title)
    footer = " · ".join(f"{k}={v}" for k, v in common.items())
    seeded = any(e.cell.count > 1 for e in items)
    notes = "; ".join(["bars: one measurement, or the mean over seeds", WHISKERS,
                       *(["dots: each seed's value"] if seeded else []), *([_rule(table)] if table.pairs else [])])
    return draw.finish(fig, axes, "\n".join([footer, looks.shared, notes]), list(looks.labels.values()))


def _bar_panel(ax: Axes, table: Comparison, items: list[Entry], looks: Legend) -> None:
    series = ordered_series(items)
    groups = grouped(items, lambda e: (e.row.key.get("backbone"), e.alike))
    width = 0.8 / len(series)
    xs = np.arange(len(groups), dtype=float)
    for i, (method, own) in enumerate(series):
        cells = [next((e for e in group if (e.method, e.own) == (method, own)), None) for group in groups.values()]
        heights = np.array([np.nan if e is None else e.cell.mean for e in cells], float)
        around = [None if e is None else spread(e.cell) for e in cells]
        errors = np.array([[h - a[0], a[1] - h] if a else [np.nan, np.nan] for h, a in zip(heights, around,
                                                                                             strict=True)]).T
        bars = ax.bar(xs + (i - (len(series) - 1) / 2) * width, heights, width * 0.92,
                      label=looks.labels[(method, own)], color=draw.method_color(method),
                      hatch=draw.VARIANT_HATCHES[looks.index[(method, own)] % len(draw.VARIANT_HATCHES)],
                      edgecolor="white", linewidth=0.3, yerr=errors if np.isfinite(errors).any() else None,
                      capsize=2, error_kw={"linewidth": 0.7})
        _seed_dots(ax, bars, cells)
        if table.pairs and method == table.pairs[0][0]:
            upright = len(series) * len(groups) > 6  # narrow bars: the numbers stand upright, not overlapping
            _annotate(ax, table, bars, cells, np.nan_to_num(heights) + np.nan_to_num(errors[1]), 90 * upright)
    chars = max(8, int(draw.PANEL[0] * 72 / 4.2 / len(groups)))
    ax.set_xticks(xs, [_group_label(backbone, alike, chars) for backbone, alike in groups])
    ax.set_ylabel(draw.axis_label(table.metric, table.direction))
    ax.margins(y=0.15)


def _seed_dots(ax: Axes, bars, cells: list[Entry | None]) -> None:
    """Each seed's value as a dot on its bar, where a cell holds several seeds."""
    for bar, entry in zip(bars, cells, strict=True):
        if entry is not None and entry.cell.count > 1:
            values = [m.value for m in entry.cell.measurements]
            ax.plot([bar.get_x() + bar.get_width() / 2] * len(values), values, linestyle="none", marker="o",
                    markersize=2.5, markerfacecolor="white", markeredgecolor="black", markeredgewidth=0.5, zorder=4)


def _annotate(ax: Axes, table: Comparison, bars, cells: list[Entry | None], tops: np.ndarray, rotation: int) -> None:
    """The paper's headline above each bar of its method: 'HMT vs RMT, %' of the row, n.s. where not significant."""
    pair = table.pairs[0]
    for bar, entry, top in zip(bars, cells, tops, strict=True):
        delta = None if entry is None else entry.row.deltas.get(pair)
        if delta is not None:
            text = f"{delta:+.1f}%" + (" n.s." if pair in entry.row.unclear else "")
            if rotation:  # narrow bars: upright, inside the bar from its base, clear of whiskers and titles
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=5.5, rotation=rotation,
                            bbox=LABEL_BOX)
            else:
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, top), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=5.5)


def _group_label(backbone: str | None, alike: tuple, chars: int) -> str:
    settings = ", ".join(phrase(k, v) for k, v in alike)
    return "\n".join(filter(None, [backbone, textwrap.fill(settings, chars)]))


def _rule(table: Comparison) -> str:
    """The sign of the numbers above the bars, spelled out for the pair they show."""
    a, b = (method_label(m) for m in table.pairs[0])
    formula = f"({b} - {a}) / {b}" if table.direction == "lower" else f"({a} - {b}) / {b}"
    return f"numbers on {a} bars: {delta_label(table.pairs[0])} = {formula} x 100, positive = {a} better"
