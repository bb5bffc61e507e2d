"""The small table that closes an eval run: one row per method, deltas against plain and RMT."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from hmtbench.analysis.compare import gain
from hmtbench.methods import BASELINE, compared_pairs, method_label
from hmtbench.results.schema import METRIC_DIRECTION


def ppl_gain(reference: float, value: float) -> float | None:
    """The paper's delta, as compare computes it: (reference - value) / reference in %, positive = lower ppl."""
    return gain(reference, value, METRIC_DIRECTION["ppl"])


def print_method_table(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    by_method = {r["method"]: r for r in rows}
    table = Table(title="perplexity (lower is better); gains = (ref - method) / ref")
    for column in ("method", "ppl", "bpb", f"vs {BASELINE}", "tok/s", "peak GPU MiB", "params added"):
        table.add_column(column, justify="left" if column == "method" else "right")
    baseline = by_method.get(BASELINE)
    for row in rows:
        delta = ppl_gain(baseline["ppl"], row["ppl"]) if baseline and row is not baseline else None
        delta_text = "" if delta is None else f"{delta:+.2f}%"
        gpu = f"{row['peak_gpu_mem_mb']:,.0f}" if row.get("peak_gpu_mem_mb") else "-"
        cells = (f"{row['ppl']:.3f}", f"{row['bpb']:.4f}", delta_text, f"{row['tokens_per_s']:,.0f}", gpu)
        table.add_row(row["method"], *cells, f"{row['added_params']:,}")
    console.print(table)
    for method, reference in compared_pairs():
        if method in by_method and reference in by_method:
            delta = ppl_gain(by_method[reference]["ppl"], by_method[method]["ppl"])
            if delta is not None:
                label = method_label(method)
                console.print(f"{label} vs {method_label(reference)}: {delta:+.2f}% (positive = {label} lower ppl)")
