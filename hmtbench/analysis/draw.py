"""Paper-style drawing shared by every figure: the style, one colour and marker per method, panel grids, saving."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from hmtbench.analysis.columns import CONFIG_PREFIX
from hmtbench.analysis.labels import phrase
from hmtbench.errors import HmtbenchError
from hmtbench.methods import BASELINE, method_names

STYLE: dict[str, Any] = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
    "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "axes.grid.axis": "y", "grid.linewidth": 0.4, "grid.alpha": 0.5, "axes.axisbelow": True,
    "legend.frameon": False, "lines.linewidth": 1.4, "lines.markersize": 4,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # editable text in the PDF
}
DPI = 300
PANEL = (3.1, 2.4)  # inches per panel: three side by side stay under 3000 px at DPI
# The one colour map of every figure, the registry's methods in order (plain, full, overlap, RMT, HMT, ...): grey for
# the baseline, then Okabe & Ito's colour-blind-safe colours, HMT blue against RMT's vermillion (the pair every
# reader of any colour vision tells apart); others follow (see method_color).
PALETTE = ("#7f7f7f", "#009e73", "#cc79a7", "#d55e00", "#0072b2", "#e69f00", "#56b4e9", "#000000", "#f0e442")
HEATMAP = "cividis"  # sequential and colour-blind-safe (no red against green)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h")
VARIANT_LINES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))  # a method's 1st, 2nd, ... series
# ... and its shade: the method's colour mixed toward black (< 0) or white (> 0), so that eight series of one method
# (checkpoints x choices) stay apart where their dashes alone would blur
VARIANT_SHADES = (0.0, -0.45, 0.3, -0.7, -0.2, 0.15, -0.55)  # lighter than +0.3 fades on white
VARIANT_HATCHES = ("", "////", "....", "xxxx", "\\\\\\\\", "++++", "oooo", "----")
METRIC_LABELS = {
    "ppl": "perplexity", "paper_ppl": "perplexity (reference's mean of batches)", "answer_ppl": "answer perplexity",
    "nll_mean": "NLL per token (nats)", "bpb": "bits per byte", "rouge_l": "ROUGE-L", "f1": "token F1",
    "exact_match": "exact match", "accuracy": "accuracy", "peak_gpu_mem_mb": "peak GPU memory (MiB)",
    "exact_match_deep": "exact match, depth < 1", "accuracy_deep": "accuracy, depth < 1",
    "peak_host_mem_mb": "peak host memory (MiB)", "wall_s": "seconds", "tokens_per_s": "tokens / s",
    "ms_per_segment": "ms per segment",
}
NAMES_ALONE = ("metric", "backbone", "dataset", "task", "variant")  # shown as the value alone in titles


class FigureUnsupported(HmtbenchError):
    """The results hold no runs this figure can be drawn from; the message says which runs to add."""


def slot(method: str) -> int:
    """The method's place in the registry; unregistered names get a stable place after the registered ones."""
    names = method_names()
    return names.index(method) if method in names else len(names) + sum(map(ord, method)) % len(PALETTE)


def method_color(method: str) -> str:
    return PALETTE[slot(method) % len(PALETTE)]


def method_line(method: str, variant: int = 0) -> dict[str, Any]:
    """Line style of a method's series: its colour and marker; the baseline hollow and on top, so that a method
    measuring the same (plain and RMT memory) shows through it; further series of a method in other dash styles
    and shades of its colour."""
    baseline = method == BASELINE
    dashes = VARIANT_LINES[(variant + baseline) % len(VARIANT_LINES)]  # the baseline dashed: lines under it show
    color = shade(method_color(method), VARIANT_SHADES[variant % len(VARIANT_SHADES)])
    return {"color": color, "marker": MARKERS[slot(method) % len(MARKERS)], "linestyle": dashes,
            "markerfacecolor": "none" if baseline else None, "markersize": 6 if baseline else 4,
            "zorder": 3 if baseline else 2}


def shade(color: str, amount: float) -> str:
    """``color`` mixed toward black (amount < 0) or white (> 0) by |amount|; itself at 0."""
    if amount == 0:
        return color
    target = 0.0 if amount < 0 else 1.0
    rgb = [c + abs(amount) * (target - c) for c in to_rgb(color)]
    return to_hex(rgb)


def axis_label(metric: str, direction: str) -> str:
    """The metric and its direction; on two lines where one would outgrow a panel's height."""
    name = METRIC_LABELS.get(metric, metric)
    return f"{name}{chr(10) if len(name) > 14 else ' '}({direction} is better)"


def count(value: float) -> str:
    return EngFormatter(sep="")(value)  # 135000000 -> 135M


def length_label(tokens: float) -> str:
    """1000 -> 1k, 4096 -> 4k, 1048576 -> 1M: lengths as papers print them."""
    base = 1024 if tokens % 1024 == 0 else 1000
    if tokens >= base**2:
        return f"{tokens / base**2:g}M"
    return f"{tokens / base:g}k" if tokens >= base else f"{tokens:g}"


def titles(keys: list[dict[str, Any]], wrap: int | None = 44) -> tuple[list[str], dict[str, Any]]:
    """A title per panel (dataset/task/backbone and the settings that differ) and the settings all share; a key
    one panel lacks reads in words there ('untrained' for no training mode), a config setting is left out.

    With ``wrap`` the settings go on lines of their own of that width; without, everything is one line.
    """
    names = list(dict.fromkeys(n for key in keys for n in key))
    varying = [n for n in names if len({key.get(n) for key in keys}) > 1 or n in NAMES_ALONE]
    shown = []
    for k in keys:
        alone = dict.fromkeys(_title_part(n, k[n]) for n in varying if n in NAMES_ALONE and k.get(n) is not None)
        settings = " · ".join(_title_part(n, k.get(n)) for n in varying
                              if n not in NAMES_ALONE and not (k.get(n) is None and n.startswith(CONFIG_PREFIX)))
        parts = [" · ".join(alone), textwrap.fill(settings, wrap) if wrap else settings]  # passkey · passkey: once
        shown.append(("\n" if wrap else " · ").join(filter(None, parts)))
    common = {n: keys[0][n] for n in names if n not in varying and keys[0].get(n) is not None}
    return shown, common


def grid(panels: int, ncols: int = 3, size: tuple[float, float] = PANEL) -> tuple[Figure, list[Axes]]:
    """Panels on rows of ``ncols``; a last row with fewer panels is centred, so no empty slot is left."""
    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    spec = fig.add_gridspec(nrows, 2 * ncols)
    axes = []
    for i in range(panels):
        row, col = divmod(i, ncols)
        shift = ncols - (panels - row * ncols) if row == nrows - 1 else 0
        axes.append(fig.add_subplot(spec[row, 2 * col + shift: 2 * col + shift + 2]))
    return fig, axes


def finish(fig: Figure, axes: list[Axes], footer: str, order: list[str] | None = None) -> Figure:
    """One legend for the figure (entries in ``order``, else as drawn) and the shared settings in small print below."""
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    if order:
        handles = {text: handles[text] for text in dict.fromkeys(order) if text in handles}
    if handles:
        _legend(fig, handles)
    chars = int(fig.get_figwidth() * 72 / 3.2)  # 5.5 pt small print
    text = "\n".join(textwrap.fill(line, chars) for line in footer.splitlines() if line)
    if text:
        fig.text(0.0, 0.0, text, fontsize=5.5, color="#555555", va="top", ha="left")
    return fig


LEGEND_ROW = 0.14  # inches per row of 7 pt legend entries


def legend_layout(labels: list[str], width_in: float, data_in: float) -> tuple[int, float, float, float]:
    """(columns, font size, figure width, panels' height) of the figure's legend, which sits above the panels: as
    many columns as the figure's width holds (widened to hold the longest label), 7 pt, or 6 pt where 7 would
    take more than half the panels' height; the panels grow to at least the legend's height. A legend never takes
    more room than the data it explains."""
    longest = max(map(len, labels))
    for size in (7.0, 6.0):
        entry_in = (size * 0.57 * longest + 30) / 72  # the text at ``size`` plus the handle
        width = max(width_in, entry_in)
        ncol = max(1, min(len(labels), int(width // entry_in)))
        height = math.ceil(len(labels) / ncol) * LEGEND_ROW * size / 7
        if height <= data_in / 2:
            break
    return ncol, size, width, max(data_in, height)


def _legend(fig: Figure, handles: dict[str, Any]) -> None:
    ncol, size, width, data = legend_layout(list(handles), fig.get_figwidth(), fig.get_figheight())
    rows = math.ceil(len(handles) / ncol)
    fig.set_size_inches(width, data + LEGEND_ROW * size / 7 * rows)  # the legend takes rows of its own
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=ncol, fontsize=size)


def save(fig: Figure, out: str | Path, name: str) -> list[Path]:
    """``out/name.png`` (DPI) and ``out/name.pdf`` (vector, no creation date: same input, same file)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    png, pdf = folder / f"{name}.png", folder / f"{name}.pdf"
    with matplotlib.rc_context(STYLE):
        fig.savefig(png, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(pdf, bbox_inches="tight", metadata={"CreationDate": None, "Producer": None})
    return [png, pdf]


def _title_part(name: str, value: Any) -> str:
    if name == "metric":
        return METRIC_LABELS.get(value, value)
    return str(value) if name in NAMES_ALONE else phrase(name, value)
