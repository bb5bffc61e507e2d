"""docs/performance.md's paper-scale tables from bench records (scripts/gpu/paper-scale.sh writes them).

    python scripts/paper_scale_table.py results/h200-paper-scale/bench [--profiles results/h200-paper-scale]

One row per measured case: backbone, method, step (eval / train with what trains), batch, BPTT depth D and
activation checkpointing (and its recompute share), engine (with HMT's summary schedule in evaluation and the CUDA
allocator settings, where set), commit, context, tokens/s, model TFLOP/s, % of the dense bf16 peak (per text token, and
counting every position the backbone runs), % of the weight-bandwidth bound (evaluation), peak GPU memory; every
row's settings (L, k, N, h) are stated under the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from hmtbench.results.schema import read_results


def table(frame: pd.DataFrame) -> str:
    rows = []
    frame = frame.sort_values(["backbone", "protocol", "method", "batch_size", "test_length"], kind="stable")
    for _, row in frame.iterrows():
        config = json.loads(row["config"])
        bench = config.get("bench", {})
        mode = bench.get("mode", "")
        step = f"train ({bench.get('train')})" if mode == "train" else "eval"
        share = bench.get("recompute_share", 1.0)
        recompute = f" + ckpt{f' {share:g}' if share < 1 else ''}" if bench.get("grad_checkpoint") else ""
        depth = f"{bench.get('bptt_depth')}{recompute}" if mode == "train" else ""
        context = f"{row['test_length']:,}"
        engine = config.get("engine", {})
        fast = "+".join(name for name, key in (("compile", "compile"), ("graphs", "cuda_graphs")) if engine.get(key))
        extras = [f"summaries {bench['summaries']}"] if bench.get("summaries") else []
        extras += [str(row["cuda_alloc_conf"])] if pd.notna(row.get("cuda_alloc_conf")) else []
        what = (f"| {row['backbone']} | {row['method']} | {step} | {row['batch_size']} | {depth} "
                f"| {', '.join([fast or 'eager', *extras])} | {str(row['git_commit'])[:7]} ")
        if row["status"] != "success":
            rows.append(f"{what}| {context} | {row['status']}: {config.get('reason', '')[:60]} | | | | | |")
            continue
        rows.append(
            f"{what}| {context} | {row['tokens_per_s']:,.0f} | {row['model_tflops']:.0f} "
            f"| {_percent(row, 'peak_flops_pct')} | {_percent(row, 'backbone_flops_pct')} "
            f"| {_percent(row, 'bandwidth_bound_pct')} | {row['peak_gpu_mem_mb']:,.0f} |"
        )
    head = ("| backbone | method | step | B | D | engine | commit | tokens | tokens/s | TFLOP/s | % peak "
            "| % peak, all positions | % weight bw | peak MiB |\n" + "|---" * 14 + "|")
    return "\n".join([head, *rows])


def _percent(row: pd.Series, key: str) -> str:
    return "" if pd.isna(row.get(key)) else f"{row[key]:.0f}%"


def settings_line(frame: pd.DataFrame) -> str:
    first = frame.iloc[0]
    seen = {(r["method"], r["segment_length"], r["sensory_tokens"], r["recall_context"], r["recall_hidden_dim"])
            for _, r in frame.iterrows() if r["method"] == "hmt"}
    parts = [f"HMT: L {L}, k {k}, N {n}, h {h}" for _, L, k, n, h in sorted(seen, key=str)]
    commits = sorted({f"{c[:10]}{' (dirty)' if d else ''}" for c, d in zip(frame["git_commit"], frame["git_dirty"],
                                                                                  strict=True)})
    return (f"Settings: {'; '.join(parts)}; device {first['device_name']}; commit {', '.join(commits)}; "
            "LoRA r 8 on q/v (peft's default for Llama); random weights of the published shapes.")


def profiles(folder: Path) -> str:
    lines = []
    for path in sorted(folder.glob("profile-*.json")):
        report = json.loads(path.read_text())
        kinds = ", ".join(f"{kind} {seconds * 1e3:.0f} ms" for kind, seconds in
                          sorted(report["seconds_by_kind"].items(), key=lambda item: -item[1]))
        lines.append(f"- {path.name}: step {report['wall_s'] * 1e3:.0f} ms; device busy "
                     f"{report['device_busy_s'] * 1e3:.0f} ms ({kinds}), idle {report['device_idle_s'] * 1e3:.0f} ms; "
                     f"{report['kernel_launches']:,} kernels; {report['model_tflops']:.0f} TFLOP/s"
                     + (f" ({report['peak_flops_pct']:.0f}% of peak)" if report.get("peak_flops_pct") else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", type=Path)
    parser.add_argument("--profiles", type=Path, default=None)
    args = parser.parse_args()
    frame = read_results([args.records])
    frame = frame[frame["command"] == "bench"]
    print(table(frame))
    print()
    print(settings_line(frame))
    if args.profiles:
        print()
        print(profiles(args.profiles))


if __name__ == "__main__":
    main()
