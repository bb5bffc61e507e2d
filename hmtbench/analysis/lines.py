"""Line figures: a series per method (and per setting that kept its runs apart), bands where intervals exist."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullFormatter

from hmtbench.analysis import draw
from hmtbench.analysis.cells import lone_seed_text
from hmtbench.analysis.series import Entry, Legend, ordered_series, spread

DODGE = 1.04  # factor between neighbouring lines' x where a panel dodges them


@dataclass
class Line:
    method: str
    label: str
    xs: list[float]
    ys: list[float]
    lows: list[float] | None = None  # a band from lows to highs (95% interval, or ± std over runs)
    highs: list[float] | None = None
    variant: int = 0  # which of its method's series: its dash style
    texts: list[str] = field(default_factory=list)  # a text beside each point
    level: bool = False  # one value for the whole x range (full context reads the document in one segment)
    seeds: list[tuple[float, float]] = field(default_factory=list)  # (x, value) of each seed where a point has several
    # Points measured at fewer seeds than the rest of the line (a length read at one seed of three): drawn hollow,
    # apart from the line and its band, so that a mean over seeds is never joined to one seed's value.
    apart: list[bool] = field(default_factory=list)


@dataclass
class LinePanel:
    key: dict[str, Any]  # what the panel holds (titles show the parts that differ between panels)
    lines: list[Line]
    xlabel: str
    ylabel: str
    xscale: str = "linear"
    xticks: dict[float, str] = field(default_factory=dict)  # ticks at the data (lengths, backbones)
    joined: bool = True  # False: points only (nothing lies between them)
    ylim: tuple[float, float | None] | None = None  # (bottom, top); top None: the data's
    dodge: bool = False  # set the lines a little apart sideways (log x), so that equal values stay visible


def line_figure(panels: list[LinePanel], note: str = "", ncols: int = 3, shared: str = "") -> Figure:
    """The panels under one legend; ``note`` and ``shared`` (what every series of a method has: ``Legend.shared``)
    in small print below."""
    fig, axes = draw.grid(len(panels), ncols)
    shown, common = draw.titles([p.key for p in panels])
    for ax, panel, title in zip(axes, panels, shown, strict=True):
        _line_panel(ax, panel)
        ax.set(title=title, xlabel=panel.xlabel, ylabel=panel.ylabel)
    footer = " · ".join(f"{k}={v}" for k, v in common.items())
    drawn = sorted((line for panel in panels for line in panel.lines), key=lambda x: (draw.slot(x.method), x.variant))
    return draw.finish(fig, axes, "\n".join([footer, shared, note]), [_label(line) for line in drawn])


def _label(line: Line) -> str:
    return f"{line.label} (whole document)" if line.level else line.label


def _line_panel(ax: Axes, panel: LinePanel) -> None:
    notes = []  # (x, y, text) beside the points read at fewer seeds
    for i, line in enumerate(panel.lines):
        style = draw.method_line(line.method, line.variant)
        original_xs = line.xs
        if panel.dodge:
            line = replace(line, xs=[x * DODGE ** (i - (len(panel.lines) - 1) / 2) for x in line.xs])
        if line.level:  # a level line across the panel, its one point marked at its place
            ax.axhline(line.ys[0], label=_label(line), **{**style, "marker": None, "linestyle": ":"})
            ax.plot(line.xs, line.ys, linestyle="none", **{k: v for k, v in style.items() if k != "linestyle"})
            continue
        if len(line.xs) > 40:  # long documents: a line, not a string of beads
            style["marker"] = None
        apart = line.apart or [False] * len(line.xs)
        joined = [i for i, a in enumerate(apart) if not a]
        ax.plot([line.xs[i] for i in joined], [line.ys[i] for i in joined], label=line.label,
                **{**style, "linestyle": style["linestyle"] if panel.joined else "none"})
        if line.lows is not None and line.highs is not None:
            ax.fill_between([line.xs[i] for i in joined], [line.lows[i] for i in joined],
                            [line.highs[i] for i in joined], color=style["color"], alpha=0.15, linewidth=0)
        for i in (i for i, a in enumerate(apart) if a):
            ax.plot([line.xs[i]], [line.ys[i]], **{**style, "linestyle": "none", "markerfacecolor": "none"})
            if line.lows is not None and line.highs is not None:
                ax.vlines(line.xs[i], line.lows[i], line.highs[i], color=style["color"], alpha=0.5, linewidth=1)
        if line.seeds:
            shift = dict(zip(original_xs, line.xs, strict=True))
            ax.plot([shift[x] for x, _ in line.seeds], [y for _, y in line.seeds], linestyle="none", marker=".",
                    markersize=2.5, color=style["color"], alpha=0.7, zorder=style["zorder"])
        notes += [(x, y, text) for x, y, text in zip(line.xs, line.ys, line.texts, strict=False) if text]
    _axes(ax, panel)
    _notes(ax, notes)


def _notes(ax: Axes, notes: list[tuple[float, float, str]]) -> None:
    """Each text beside its point; texts of points that nearly coincide (two lines at zero at one length) are
    stacked upward rather than written over each other."""
    placed: list[tuple[float, float]] = []
    for x, y, text in notes:
        px, py = ax.transData.transform((x, y))
        stacked = sum(abs(px - qx) < 60 and abs(py - qy) < 8 for qx, qy in placed)
        placed.append((px, py))
        ax.annotate(text, (x, y), xytext=(4, 7 * stacked), textcoords="offset points", va="center", fontsize=5.5)


def _axes(ax: Axes, panel: LinePanel) -> None:
    ax.set_xscale(panel.xscale)
    if panel.xticks:
        ticks = sorted(panel.xticks.items())
        ax.set_xticks([x for x, _ in ticks], [text for _, text in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif panel.xscale != "linear":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if panel.ylim:
        low, high = panel.ylim
        if high is None:  # the data's top, with room above it as autoscaling would leave
            high = ax.get_ylim()[1] + 0.08 * (ax.get_ylim()[1] - low)
        ax.set_ylim(low, high)


def series_lines(items: list[Entry], x: Callable[[Entry], float], looks: Legend) -> list[Line]:
    """A line per (method, own settings) through (x, mean) in x order, with a band where every point has a spread."""
    series = ordered_series(items)
    lines = []
    for key in series:
        mine = [e for e in items if (e.method, e.own) == key]
        points = sorted(((x(e), e.cell.mean, spread(e.cell)) for e in mine), key=lambda p: p[0])
        around = [p[2] for p in points]
        band = all(around)
        seeds = [(x(e), m.value) for e in mine if e.cell.count > 1 for m in e.cell.measurements]
        most = max(e.cell.count for e in mine)
        fewer = {x(e): e for e in mine if e.cell.count < most}
        lines.append(Line(key[0], looks.labels[key], [p[0] for p in points], [p[1] for p in points],
                          [a[0] for a in around] if band else None, [a[1] for a in around] if band else None,
                          looks.index[key], texts=[_seeds_text(fewer[p[0]]) if p[0] in fewer else "" for p in points],
                          seeds=seeds, apart=[p[0] in fewer for p in points]))
    return lines


def _seeds_text(entry: Entry) -> str:
    """'train seed 2 only': the training seeds of a point read at fewer seeds than its line's other points."""
    seeds = sorted({dict(m.seeds).get("train_seed") for m in entry.cell.measurements} - {None}, key=str)
    return lone_seed_text(", ".join(map(str, seeds))) if seeds else f"{entry.cell.count} seed(s) only"
