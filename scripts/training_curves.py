"""Training curves from `hmtbench train` logs (log.jsonl): exp(loss) per step, and answer training's exact share.

    python scripts/training_curves.py results/h200-lm-ablation/logs results/figures/lm-ablation/training-curves.png
    python scripts/training_curves.py results/h200-retrieval/logs results/figures/retrieval/training-curves.png

Each ``<run>-<stage>.jsonl`` is one line; a run's stages follow each other on the step axis (HMT: stage 1, then 2).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def runs(folder: Path) -> dict[str, list[dict]]:
    """Log entries by run, stages in order, steps counted across them."""
    grouped: dict[str, list[dict]] = {}
    for log in sorted(folder.glob("*.jsonl")):
        run = log.stem.rsplit("-", 1)[0]
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        offset = grouped[run][-1]["total_step"] if grouped.get(run) else 0
        grouped.setdefault(run, []).extend({**e, "total_step": offset + e["step"]} for e in entries)
    return grouped


WINDOW = 5  # logged losses averaged: one step reads a few windows, so single steps are noisy


def smooth(values: list[float]) -> list[float]:
    """Trailing mean over the last WINDOW values (fewer at the start)."""
    return [sum(values[max(0, i - WINDOW + 1) : i + 1]) / len(values[max(0, i - WINDOW + 1) : i + 1])
            for i in range(len(values))]


def main(folder: str, out: str) -> None:
    grouped = runs(Path(folder))
    answers = any("exact" in e for entries in grouped.values() for e in entries)
    fig, axes = plt.subplots(1, 2 if answers else 1, figsize=(11 if answers else 6.5, 3.8), squeeze=False)
    for run, entries in grouped.items():
        steps = [e["total_step"] for e in entries]
        losses = [e["loss"] for e in entries]
        line, = axes[0][0].plot(steps, [math.exp(v) for v in smooth(losses)], label=run, linewidth=1.6)
        axes[0][0].plot(steps, [math.exp(v) for v in losses], color=line.get_color(), linewidth=0.6, alpha=0.3)
        if answers:
            drawn, = axes[0][1].plot(steps, smooth([e.get("exact") or 0.0 for e in entries]), label=run, linewidth=1.6)
            earlier = [(step, e["exact_earlier"]) for step, e in zip(steps, entries, strict=True)
                       if "exact_earlier" in e]
            if earlier:  # the rows whose facts precede the question's segment (logged since the ninth session)
                axes[0][1].plot([s for s, _ in earlier], smooth([v for _, v in earlier]), color=drawn.get_color(),
                                linestyle="--", linewidth=1.2, label=f"{run}: facts before the question's segment")
    axes[0][0].set(xlabel="optimizer step", ylabel=f"training ppl (exp of the loss; mean of {WINDOW} logs)",
                   yscale="log")
    if answers:
        axes[0][1].set(xlabel="optimizer step", ylabel="exact answers in the training batch", ylim=(-0.02, 1.02))
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=200)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python scripts/training_curves.py LOG_FOLDER OUT.png\n{__doc__}")
    main(*sys.argv[1:3])
