"""Training curves from the ``log.jsonl`` that ``hmtbench train`` writes in each stage folder: a logged metric (by
default the exact share on keys in segments before the question's) against the tokens trained, a line per run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hmtbench.analysis import draw
from hmtbench.analysis.draw import FigureUnsupported
from hmtbench.config import load_yaml
from hmtbench.errors import unknown_choice
from hmtbench.methods import method_names

CURVE_METRICS = {  # log.jsonl fields a curve can show
    "exact_earlier": "exact, keys in earlier segments", "exact": "exact", "loss": "training loss",
    "grad_norm": "gradient norm", "lr": "learning rate", "tokens_per_s": "tokens / s",
}
DEFAULT_METRIC = "exact_earlier"
SMOOTHING = 8  # logged points in each point's trailing mean (a logged batch's exact share is a noisy sample)


@dataclass
class Curve:
    name: str  # the run folder, relative to the folder searched
    method: str
    recipe: str | None
    tokens: np.ndarray  # train_tokens at each logged step (every stage and chunk of the run counted)
    values: np.ndarray
    segments: np.ndarray  # the curriculum level at each logged step


def find_curves(paths: Sequence[str | Path], metric: str = DEFAULT_METRIC) -> list[Curve]:
    """A curve per run folder under ``paths`` (its stage folders' logs joined in the order of their tokens);
    logged steps repeated by a resumed chunk count once, as last logged."""
    if metric not in CURVE_METRICS:
        raise unknown_choice("--metric", metric, CURVE_METRICS)
    curves = []
    for root in map(Path, paths):
        runs: dict[Path, list[Path]] = {}
        for log in sorted(root.rglob("log.jsonl")):
            runs.setdefault(log.parent.parent, []).append(log)
        for run, logs in runs.items():
            lines = [_lines(log) for log in logs]
            rows = sorted((row for found in lines for row in found if metric in row and "train_tokens" in row),
                          key=lambda row: row["train_tokens"])
            if rows:
                recipe = rows[-1].get("recipe")
                name = run.relative_to(root).as_posix() if run != root else run.name
                curves.append(Curve(name, _method(run, logs, recipe), recipe,
                                    np.array([r["train_tokens"] for r in rows], float),
                                    np.array([np.nan if r[metric] is None else r[metric] for r in rows], float),
                                    np.array([r.get("segments") or 0 for r in rows], int)))
    return curves


def curve_figure(curves: list[Curve], metric: str = DEFAULT_METRIC, smoothing: int = SMOOTHING) -> Figure:
    """A panel per recipe (a line per run: its seeds), coloured by method; the logged values faint, their trailing
    mean over ``smoothing`` points drawn; a tick where the curriculum moves to more segments."""
    if not curves:
        raise FigureUnsupported(f"training-curve needs the log.jsonl of training runs with {metric} and train_tokens; "
                                "give the folders that hold the runs (hmtbench train --output-dir)")
    panels: dict[str, list[Curve]] = {}
    for curve in curves:
        panels.setdefault(Path(curve.recipe).stem if curve.recipe else curve.method, []).append(curve)
    fig, axes = draw.grid(len(panels), ncols=min(3, len(panels)))
    for ax, (title, members) in zip(axes, panels.items(), strict=True):
        for variant, curve in enumerate(members):
            style = draw.method_line(curve.method, variant)
            ax.plot(curve.tokens, curve.values, color=style["color"], alpha=0.2, linewidth=0.6)
            ax.plot(curve.tokens, trailing_mean(curve.values, smoothing), color=style["color"],
                    linestyle=style["linestyle"], linewidth=1.2, label=curve.name)
            for at, segments in level_starts(curve):
                ax.axvline(at, color=style["color"], alpha=0.3, linewidth=0.6, linestyle=":")
                ax.annotate(str(segments), (at, 1), xycoords=("data", "axes fraction"), fontsize=5,
                            color=style["color"], ha="left", va="top")
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("tokens trained")
        ax.set_ylabel(CURVE_METRICS[metric])
        ax.xaxis.set_major_formatter(lambda x, _: draw.count(x))
    note = (f"thin: each logged step; thick: mean of the last {smoothing} logged steps; dotted ticks: the curriculum's "
            "segments from there on")
    return draw.finish(fig, axes, note)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Each point's mean over itself and the ``window - 1`` before it (fewer at the start), missing values skipped."""
    present = ~np.isnan(values)
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)

    def window_sums(x: np.ndarray) -> np.ndarray:
        totals = np.concatenate([[0.0], np.cumsum(x)])
        return totals[ends] - totals[starts]

    sums, counts = window_sums(np.where(present, values, 0.0)), window_sums(present)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def level_starts(curve: Curve) -> list[tuple[float, int]]:
    """(tokens, segments) where the curriculum level changes (the first level not marked)."""
    changed = np.flatnonzero(np.diff(curve.segments)) + 1
    return [(float(curve.tokens[i]), int(curve.segments[i])) for i in changed]


def _lines(log: Path) -> list[dict]:
    """The log's rows, the last row of each step kept (a resumed chunk logs again from its checkpoint)."""
    by_step: dict[int, dict] = {}
    for line in log.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row.get("step", len(by_step))] = row
    return list(by_step.values())


def _method(run: Path, logs: list[Path], recipe: str | None) -> str:
    """The run's method: its config.yaml, else a checkpoint of one of its stages, else a word of its recipe's name."""
    config = run / "config.yaml"
    if config.is_file():
        found = (load_yaml(config).get("method") or {}).get("name")
        if found:
            return found
    for checkpoint in (c for log in logs for c in sorted(log.parent.glob("*/checkpoint.json"))):
        found = (json.loads(checkpoint.read_text()).get("method") or {}).get("name")
        if found:
            return found
    words = Path(recipe).stem.split("-") if recipe else []
    return next((w for w in words if w in method_names()), "unknown")
