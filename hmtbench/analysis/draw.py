"""Paper-style drawing for `hmtbench plot`: grouped bars and lines on a panel grid, saved as PNG and PDF."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, NullFormatter

from hmtbench.analysis.compare import Comparison, Row, delta_label, order_methods
from hmtbench.methods import method_label as label
from hmtbench.methods import method_names

STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "axes.grid.axis": "y", "grid.linewidth": 0.4, "grid.alpha": 0.5, "axes.axisbelow": True,
    "legend.frameon": False, "lines.linewidth": 1.4, "lines.markersize": 4,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # editable text in the PDF
}
COLORS = dict(zip(method_names(), ("#8c8c8c", "#4c9a2a", "#3a6fb0", "#c8402f"), strict=False))
METRIC_LABELS = {
    "ppl": "perplexity", "paper_ppl": "perplexity (reference's mean of batches)", "answer_ppl": "answer perplexity",
    "nll_mean": "NLL per token (nats)", "bpb": "bits per byte", "rouge_l": "ROUGE-L", "f1": "token F1",
    "exact_match": "exact match", "accuracy": "accuracy", "peak_gpu_mem_mb": "peak GPU memory (MiB)",
    "peak_host_mem_mb": "peak host memory (MiB)", "wall_s": "seconds", "tokens_per_s": "tokens / s",
    "ms_per_segment": "ms per segment",
}
NAMES_ALONE = ("metric", "backbone", "dataset", "task", "variant")  # shown as the value alone in titles


@dataclass
class LinePanel:
    key: dict[str, Any]  # what the panel holds (titles show the parts that differ between panels)
    series: dict[str, tuple[list[float], list[float]]]  # method -> (x, y)
    xlabel: str
    ylabel: str
    xscale: str = "linear"
    xticks: dict[float, str] = field(default_factory=dict)  # ticks at the data (lengths, backbones)
    joined: bool = True  # False: points only (nothing lies between them)
    point_labels: dict[str, list[str]] = field(default_factory=dict)  # method -> a text per point


def color(method: str) -> str:
    if method in COLORS:
        return COLORS[method]
    return f"C{(4 + sum(map(ord, method))) % 10}"  # stable for a name, distinct from the known four


def axis_label(metric: str, direction: str) -> str:
    return f"{METRIC_LABELS.get(metric, metric)} ({direction} is better)"


def count(value: float) -> str:
    return EngFormatter(sep="")(value)  # 135000000 -> 135M


def titles(keys: list[dict[str, Any]], wrap: int | None = 48) -> tuple[list[str], dict[str, Any]]:
    """A title per panel (dataset/task/backbone and the settings that differ) and the settings all share.

    With ``wrap`` the settings go on lines of their own of that width; without, everything is one line.
    """
    names = list(dict.fromkeys(n for key in keys for n in key))
    varying = [n for n in names if len({key.get(n) for key in keys}) > 1 or n in NAMES_ALONE]
    shown = []
    for k in keys:
        names_part = " · ".join(_title_part(n, k[n]) for n in varying if n in NAMES_ALONE and k.get(n) is not None)
        settings = " · ".join(_title_part(n, k[n]) for n in varying if n not in NAMES_ALONE and k.get(n) is not None)
        parts = [names_part, textwrap.fill(settings, wrap) if wrap else settings]
        shown.append(("\n" if wrap else " · ").join(filter(None, parts)))
    common = {n: keys[0][n] for n in names if n not in varying and keys[0].get(n) is not None}
    return shown, common


def grid(panels: int, ncols: int = 3, height: float = 2.5) -> tuple[Figure, list[Axes]]:
    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(3.3 * ncols, height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for extra in axes[panels:]:
        extra.remove()
    return fig, axes[:panels]


def finish(fig: Figure, axes: list[Axes], footer: str) -> Figure:
    """One legend for the figure (methods in order) and the shared settings in small print below."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    order = [label(m) for m in method_names()]
    names = sorted(handles, key=lambda t: (order.index(t) if t in order else len(order), t))
    if names:
        fig.legend([handles[n] for n in names], names, loc="outside upper center", ncol=len(names))
    text = "\n".join(textwrap.fill(line, 150) for line in footer.splitlines() if line)
    if text:
        fig.text(0.0, 0.0, text, fontsize=5.5, color="#555555", va="top", ha="left")
    return fig


def bar_panel(ax: Axes, table: Comparison, rows: list[Row], letters: dict[str, str]) -> None:
    """Grouped bars: one group per row (backbone), one bar per method, mean height, std whiskers, a delta on top."""
    methods = [m for m in table.methods if any(m in row.cells for row in rows)]
    width = 0.8 / len(methods)
    xs = np.arange(len(rows), dtype=float)
    tops = np.zeros(len(rows))
    for i, method in enumerate(methods):
        cells = [row.cells.get(method) for row in rows]
        heights = np.array([c.mean if c is not None and c.mean is not None else np.nan for c in cells])
        errors = np.array([c.std if c is not None and c.std is not None else np.nan for c in cells])  # nan: no whisker
        ax.bar(xs + (i - (len(methods) - 1) / 2) * width, heights, width * 0.92, label=label(method),
               color=color(method), yerr=errors if np.isfinite(errors).any() else None, capsize=2,
               error_kw={"linewidth": 0.7})
        tops = np.fmax(tops, heights + np.nan_to_num(errors))
    ax.set_xticks(xs, [f"{row.key['backbone']}\n({letters[row.key['variant']]})" if row.key.get("variant")
                       else row.key["backbone"] for row in rows])
    ax.set_ylabel(axis_label(table.metric, table.direction))
    if table.pairs:
        pair = table.pairs[0]  # the paper's headline: HMT vs RMT where both ran
        for x, top, row in zip(xs, tops, rows, strict=True):
            if row.deltas.get(pair) is not None:
                ax.annotate(f"{row.deltas[pair]:+.1f}%", (x, top), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=6)
    ax.margins(y=0.15)


def bars_figure(panels: list[tuple[Comparison, dict[str, Any], list[Row]]], ncols: int = 3) -> Figure:
    fig, axes = grid(len(panels), ncols)
    shown, common = titles([key for _, key, _ in panels])
    letters = variant_letters([row.key.get("variant") for _, _, rows in panels for row in rows])
    for ax, (table, _, rows), title in zip(axes, panels, shown, strict=True):
        bar_panel(ax, table, rows, letters)
        ax.set_title(title)
    rules = [_rule(table) for table, _, _ in panels if table.pairs]
    footer = " · ".join(f"{k}={v}" for k, v in common.items())
    notes = "; ".join(["bars: mean over runs, whiskers: std", *dict.fromkeys(rules)])
    return finish(fig, axes, "\n".join([footer, notes, *_legend(letters)]))


def line_figure(panels: list[LinePanel], note: str = "", ncols: int = 3) -> Figure:
    fig, axes = grid(len(panels), ncols)
    letters = variant_letters([panel.key.get("variant") for panel in panels])
    shown, common = titles([{**p.key, "variant": f"({letters[p.key['variant']]})" if p.key.get("variant") else None}
                            for p in panels])
    for ax, panel, title in zip(axes, panels, shown, strict=True):
        _line_panel(ax, panel)
        ax.set(title=title, xlabel=panel.xlabel, ylabel=panel.ylabel)
    footer = " · ".join(f"{k}={v}" for k, v in common.items())
    return finish(fig, axes, "\n".join([footer, note, *_legend(letters)]))


def variant_letters(variants: list[str | None]) -> dict[str, str]:
    """(a), (b), ... for the runs a row had to keep apart; the figure's footer spells each one out."""
    found = [v for v in dict.fromkeys(variants) if v]
    return {v: (chr(ord("a") + i) if i < 26 else str(i + 1)) for i, v in enumerate(found)}


def save(fig: Figure, out: str | Path, name: str) -> list[Path]:
    """``out/name.png`` (300 dpi) and ``out/name.pdf`` (vector, no creation date: same input, same file)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    with matplotlib.rc_context(STYLE):
        fig.savefig(png, dpi=300, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Producer": None})
    return [png, pdf]


def _line_panel(ax: Axes, panel: LinePanel) -> None:
    for method in order_methods(panel.series):
        xs, ys = panel.series[method]
        marker = "o" if len(xs) <= 40 else None  # long documents: a line, not a string of beads
        ax.plot(xs, ys, marker=marker, linestyle="-" if panel.joined else "none", label=label(method),
                color=color(method))
        for x, y, text in zip(xs, ys, panel.point_labels.get(method, []), strict=False):
            ax.annotate(text, (x, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=5.5)
    ax.set_xscale(panel.xscale)
    if panel.xticks:
        ticks = sorted(panel.xticks.items())
        ax.set_xticks([x for x, _ in ticks], [text for _, text in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    elif panel.xscale != "linear":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def _legend(letters: dict[str, str]) -> list[str]:
    return [f"({letter}) {variant}" for variant, letter in letters.items()]


def _title_part(name: str, value: Any) -> str:
    if name == "metric":
        return METRIC_LABELS.get(value, value)
    return str(value) if name in NAMES_ALONE else f"{name}={value}"


def _rule(table: Comparison) -> str:
    """The sign of the numbers above the bars, spelled out for the pair they show."""
    a, b = (label(m) for m in table.pairs[0])
    formula = f"({b} - {a}) / {b}" if table.direction == "lower" else f"({a} - {b}) / {b}"
    return f"numbers above bars: {delta_label(table.pairs[0])} = {formula} x 100 ({table.direction} is better), " \
           f"positive = {a} better"
