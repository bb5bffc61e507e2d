"""The benchmark's table, engine against engine, and the issue's targets checked against it (plain text).

Reads the records of ``hmtbench bench`` (and ``eval-ppl`` runs of the same methods, whose ppl
the engines must agree on). An engine is named by its switches: ``eager``, ``graphs``,
``compile``, ``compile+graphs``. Used by scripts/gpu_bench.sh:
``python3 -m hmtbench.benchmark.report RESULTS...``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable

import pandas as pd

from hmtbench.results.schema import read_results

METHODS = ("plain", "full", "rmt", "hmt")


def engine_of(config: str) -> str:
    values = json.loads(config or "{}")
    switches = values.get("engine") or {}
    names = [name for name, key in (("compile", "compile"), ("graphs", "cuda_graphs")) if switches.get(key)]
    failed = " (capture failed)" if values.get("cuda_graph_failures") else ""  # some steps ran eagerly
    return ("+".join(names) or "eager") + failed


def _engine_order(engine: str) -> tuple[bool, str]:
    return engine != "eager", engine  # eager (before) first


def load(paths: Iterable[str]) -> pd.DataFrame:
    frame = read_results(list(paths))
    frame = frame[frame["status"] == "success"].copy()
    frame["engine"] = [engine_of(c) for c in frame["config"]]
    return frame


def bench_table(frame: pd.DataFrame, protocol: str) -> str:
    """Rows (batch, length, engine), a column per method: tokens/s, ms per segment, peak MiB."""
    runs = frame[frame["protocol"] == protocol]
    if runs.empty:
        return f"(no {protocol} records)"
    lines = [f"{'B':>4} {'T':>7} {'engine':<15}" + "".join(f"{m:>30}" for m in METHODS)]
    groups = runs.groupby(["batch_size", "test_length", "engine"])
    for (batch, length, engine), group in sorted(groups, key=lambda item: (*item[0][:2], _engine_order(item[0][2]))):
        cells = []
        for method in METHODS:
            row = group[group["method"] == method]
            if row.empty:
                cells.append(f"{'-':>30}")
                continue
            row = row.iloc[-1]
            peak = "" if pd.isna(row["peak_gpu_mem_mb"]) else f" {row['peak_gpu_mem_mb']:,.0f}M"
            cells.append(f"{row['tokens_per_s']:>12,.0f} {row['ms_per_segment']:>7.2f}ms{peak:>8}")
        lines.append(f"{batch:>4} {length:>7} {engine:<15}" + "".join(cells))
    return "\n".join(lines)


def _rate(
    frame: pd.DataFrame,
    engine: str,
    method: str,
    batch: int,
    protocol: str = "bench-eval",
    column: str = "tokens_per_s",
) -> pd.Series:
    """tokens/s (or ``column``) by test_length of one method, engine and batch size."""
    runs = frame[
        (frame["protocol"] == protocol)
        & (frame["engine"] == engine)
        & (frame["method"] == method)
        & (frame["batch_size"] == batch)
    ]
    return runs.groupby("test_length")[column].last()


def _ratio_text(slow: pd.Series, fast: pd.Series) -> str:
    """fast/slow tokens-per-second ratios (= slow's time per token over fast's) over the lengths both have."""
    common = slow.index.intersection(fast.index)
    if common.empty:
        return "n/a"
    ratios = fast[common] / slow[common]
    return f"{ratios.min():.2f}x-{ratios.max():.2f}x over T={common.min()}-{common.max()}"


def targets(frame: pd.DataFrame, engine: str) -> list[str]:
    """The issue's targets, as measured for ``engine``."""
    lines = [f"targets, engine {engine}:"]
    plain1 = _rate(frame, engine, "plain", 1)
    if not plain1.empty:
        lines.append(f"  plain eval B=1: {plain1.max():,.0f} tok/s (target >= 50,000)")
    evals = frame[(frame["protocol"] == "bench-eval") & (frame["engine"] == engine) & (frame["method"] == "plain")]
    if evals.empty:
        return lines
    best = evals.loc[evals["tokens_per_s"].idxmax()]
    best_batch = int(best["batch_size"])
    lines.append(f"  plain eval best: {best['tokens_per_s']:,.0f} tok/s at B={best_batch} (target >= 1,000,000)")
    for method, limit in (("hmt", "1.2x at B=1, 1.6x at best"), ("rmt", "1.1x")):
        for batch in sorted({1, best_batch}):
            ratio = _ratio_text(_rate(frame, engine, method, batch), _rate(frame, engine, "plain", batch))
            steps = (_rate(frame, engine, m, batch, column="ms_per_segment") for m in ("plain", method))
            per_step = _ratio_text(*steps)
            lines.append(f"  {method} time per token / plain's, B={batch}: {ratio} (target <= {limit}); "
                         f"per segment step {per_step.split(' over ')[0]}")
    for method in ("rmt", "hmt", "full"):
        peaks = frame[
            (frame["protocol"] == "bench-eval")
            & (frame["engine"] == engine)
            & (frame["method"] == method)
            & (frame["batch_size"] == 1)
        ].groupby("test_length")
        peak = peaks["peak_gpu_mem_mb"].last().dropna()
        if len(peak) > 1:
            lines.append(
                f"  {method} peak memory T={peak.index.max()} / T={peak.index.min()}: "
                f"{peak.iloc[-1] / peak.iloc[0]:.3f}x ({peak.iloc[0]:,.0f} -> {peak.iloc[-1]:,.0f} MiB)"
                + (" (target <= 1.05x)" if method != "full" else " (grows)")
            )
    trains = frame[(frame["protocol"] == "bench-train") & (frame["engine"] == engine)]
    for batch, group in trains.groupby("batch_size"):
        by_method = group.groupby("method")["tokens_per_s"].last()
        if {"rmt", "hmt"} <= set(by_method.index):
            lines.append(
                f"  train step HMT time / RMT's, B={batch}: {by_method['rmt'] / by_method['hmt']:.2f}x (target <= 1.6x)"
            )
    return lines


def speedups(frame: pd.DataFrame, before: str, after: str) -> list[str]:
    lines = [f"speed-up {after} over {before} (tokens/s):"]
    for protocol in ("bench-eval", "bench-train"):
        runs = frame[frame["protocol"] == protocol]
        for (method, batch), _ in runs.groupby(["method", "batch_size"]):
            ratio = _ratio_text(
                _rate(frame, before, method, batch, protocol), _rate(frame, after, method, batch, protocol)
            )
            if ratio != "n/a":
                lines.append(f"  {protocol.removeprefix('bench-')} {method} B={batch}: {ratio}")
    return lines


def ppl_agreement(frame: pd.DataFrame) -> list[str]:
    """eval-ppl of each method (dtype, HMT summary pass) under each engine, and the largest relative difference
    from the eager one."""
    runs = frame[frame["command"] == "eval-ppl"].copy()
    runs["summaries"] = [json.loads(c or "{}").get("memory", {}).get("summary_pass", "auto") for c in runs["config"]]
    lines = ["eval-ppl, engine against engine:"]
    for (method, dtype, summaries), group in runs.groupby(["method", "dtype", "summaries"]):
        by_engine = group.groupby("engine")["ppl"].last()
        text = ", ".join(f"{e} {p:.6f}" for e, p in by_engine.items())
        if "eager" in by_engine.index and len(by_engine) > 1:
            worst = max(abs(p / by_engine["eager"] - 1) for p in by_engine)
            text += f"; max |rel diff| vs eager {worst:.2e}"
        label = f"{method} {dtype}" + (f" summaries {summaries}" if method == "hmt" else "")
        lines.append(f"  {label}: {text}")
    return lines


def report(frame: pd.DataFrame) -> str:
    engines = sorted(set(frame["engine"]), key=_engine_order)
    parts = [
        "== evaluation: tokens/s, ms per segment, peak GPU MiB",
        bench_table(frame, "bench-eval"),
        "== training step: tokens/s, ms per segment, peak GPU MiB",
        bench_table(frame, "bench-train"),
    ]
    for engine in engines:
        parts += targets(frame, engine)
    if len(engines) > 1:
        parts += speedups(frame, engines[0], engines[-1])
    parts += ppl_agreement(frame)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    print(report(load(argv if argv is not None else sys.argv[1:])))


if __name__ == "__main__":
    main()
