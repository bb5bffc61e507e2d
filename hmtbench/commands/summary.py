"""The small table that closes an eval run: one row per method, deltas against plain and RMT."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def relative_gain(reference: float, value: float) -> float:
    """(reference - value) / reference in %: positive when ``value`` has the lower (better) perplexity."""
    return 100.0 * (reference - value) / reference


def print_method_table(rows: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or Console()
    by_method = {r["method"]: r for r in rows}
    table = Table(title="perplexity (lower is better); gains = (ref - method) / ref")
    for column in ("method", "ppl", "bpb", "vs plain", "tok/s", "peak GPU MiB", "params added"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        plain = by_method.get("plain")
        gain = f"{relative_gain(plain['ppl'], row['ppl']):+.2f}%" if plain and row is not plain else ""
        gpu = f"{row['peak_gpu_mem_mb']:,.0f}" if row.get("peak_gpu_mem_mb") else "-"
        table.add_row(row["method"], f"{row['ppl']:.3f}", f"{row['bpb']:.4f}", gain, f"{row['tokens_per_s']:,.0f}",
                      gpu, f"{row['added_params']:,}")
    console.print(table)
    if "hmt" in by_method and "rmt" in by_method:
        gain = relative_gain(by_method["rmt"]["ppl"], by_method["hmt"]["ppl"])
        console.print(f"HMT vs RMT: {gain:+.2f}% (positive = HMT lower perplexity)")
