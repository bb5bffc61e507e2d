"""Where the time of one training step goes: its kernels by kind, and the device's idle share.

One training step (forward and backward of a D-segment window, as ``hmtbench bench --mode train``
times it, eager or with ``--compile`` / ``--cuda-graphs``) runs twice to warm up (capture included),
then once under ``torch.profiler``. The kernels are grouped into
matmul (GEMM), attention, and everything else (norms, activations, copies, the memory's own small
ops); the wall time of the step minus the device's busy time is time the device waited on the host.

    python -m hmtbench.benchmark.profile_train --backbone random:llama-7b --method hmt --train lora \
        --batch-size 4 --bptt-depth 6 --sensory-tokens 32 --recall-hidden-dim 1536 --out profile.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

import torch

from hmtbench.backbones import load_backbone
from hmtbench.benchmark.cases import Case, build_case, case_workload
from hmtbench.benchmark.config import BenchConfig
from hmtbench.benchmark.roofline import device_peaks, flops_per_token, linear_weights
from hmtbench.config import SEED, EngineOptions, method_config
from hmtbench.fastpath import accelerate, capture_failures
from hmtbench.progress import quiet_transformers
from hmtbench.results.provenance import device_name, provenance
from hmtbench.training.config import checkpointed_share

KINDS = (  # first match wins; kernel names of cuBLAS / CUTLASS / flash attention / cuDNN on Hopper
    ("matmul", re.compile(r"gemm|sm90_xmma|cutlass|wgmma|ampere_.*_s16816|nvjet", re.IGNORECASE)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|efficient_attention", re.IGNORECASE)),
)


def kind_of(kernel: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(kernel)), "other")


def profile_step(args: argparse.Namespace) -> dict[str, Any]:
    """The training step ``hmtbench bench --mode train`` times for the same settings, under the profiler."""
    own = {"sensory_tokens": args.sensory_tokens, "recall_hidden_dim": args.recall_hidden_dim}
    method = method_config(args.method, own if args.method == "hmt" else {})
    config = BenchConfig(backbone=args.backbone, method=[method], segment_length=args.segment_length,
                         bptt_depth=args.bptt_depth, train=args.train, grad_checkpoint=args.grad_checkpoint,
                         recompute_share=args.recompute_share,
                         dtype=args.dtype, seed=args.seed,
                         engine=EngineOptions(compile=args.compile, cuda_graphs=args.cuda_graphs))
    backbone = load_backbone(args.backbone, dtype=args.dtype)
    case = Case("train", method, args.batch_size, args.bptt_depth)
    model = build_case(backbone, case, config)
    accelerate(model, config.engine)  # compiles the blocks; the training step's graphs come with its workload
    step, _, text_tokens, graphed = case_workload(config, backbone, case, model, model)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        began = time.perf_counter()
        step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - began
    kernels: dict[str, list[float]] = {}
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
        if event.device_type == torch.autograd.DeviceType.CUDA and device_us > 0:
            kernels.setdefault(event.key, [0.0, 0])
            kernels[event.key][0] += device_us / 1e6
            kernels[event.key][1] += event.count
    busy = sum(seconds for seconds, _ in kernels.values())
    by_kind: dict[str, float] = {}
    for name, (seconds, _) in kernels.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + seconds
    weights, _ = linear_weights(backbone.model)
    recompute = checkpointed_share(args.grad_checkpoint, args.recompute_share)
    flops = text_tokens * flops_per_token(weights, "train", args.train, recompute)
    peaks = device_peaks(device_name(backbone.device))
    top = sorted(kernels.items(), key=lambda item: -item[1][0])[: args.top]
    return {
        **provenance(),
        "command": "python -m hmtbench.benchmark.profile_train " + " ".join(args.argv),
        "device_name": device_name(backbone.device),
        "backbone": args.backbone, "method": args.method, "train": args.train, "batch_size": args.batch_size,
        "bptt_depth": args.bptt_depth, "segment_length": args.segment_length, "grad_checkpoint": args.grad_checkpoint,
        "recompute_share": recompute, "compile": args.compile, "cuda_graphs": args.cuda_graphs,
        "cuda_graph_failures": capture_failures(graphed),
        "wall_s": wall, "device_busy_s": busy, "device_idle_s": max(wall - busy, 0.0),
        "kernel_launches": sum(count for _, count in kernels.values()),
        "seconds_by_kind": by_kind,
        "model_tflops": flops / wall / 1e12,
        "peak_flops_pct": None if peaks is None else 100 * flops / wall / peaks.flops,
        "matmul_tflops_while_busy": flops / by_kind.get("matmul", float("nan")) / 1e12,
        "top_kernels": [{"kernel": name[:120], "seconds": s, "calls": n, "kind": kind_of(name)}
                        for name, (s, n) in top],
    }


def describe(report: dict[str, Any]) -> str:
    engine = "".join(f" {name}" for name in ("compile", "cuda_graphs") if report.get(name))
    lines = [f"{report['backbone']} {report['method']} train={report['train']} B={report['batch_size']} "
             f"D={report['bptt_depth']}{engine}: step {report['wall_s'] * 1e3:.0f} ms, device busy "
             f"{report['device_busy_s'] * 1e3:.0f} ms ({report['kernel_launches']} kernels), "
             f"{report['model_tflops']:.0f} TFLOP/s"
             + (f" = {report['peak_flops_pct']:.0f}% of peak" if report["peak_flops_pct"] is not None else "")]
    for kind, seconds in sorted(report["seconds_by_kind"].items(), key=lambda item: -item[1]):
        lines.append(f"  {kind:<10} {seconds * 1e3:9.1f} ms  {100 * seconds / report['wall_s']:5.1f}% of the step")
    lines.append(f"  {'idle':<10} {report['device_idle_s'] * 1e3:9.1f} ms  "
                 f"{100 * report['device_idle_s'] / report['wall_s']:5.1f}% (the device waits on the host)")
    for entry in report["top_kernels"][:10]:
        seconds, calls = entry["seconds"] * 1e3, entry["calls"]
        lines.append(f"    {seconds:8.1f} ms {calls:6d}x  {entry['kind']:<9} {entry['kernel'][:80]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="random:llama-7b")
    parser.add_argument("--method", default="hmt")
    parser.add_argument("--train", default="lora", choices=["memory", "lora", "full"])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--bptt-depth", type=int, default=6)
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--sensory-tokens", type=int, default=32)
    parser.add_argument("--recall-hidden-dim", type=int, default=1536)
    parser.add_argument("--grad-checkpoint", action="store_true")
    parser.add_argument("--recompute-share", type=float, default=1.0,
                        help="with --grad-checkpoint: the share of the window's segments recomputed")
    parser.add_argument("--compile", action="store_true", help="torch.compile the blocks and the loss")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay the step from a CUDA graph")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_train needs a CUDA device (it reads the kernels' device times)")
    quiet_transformers()
    report = profile_step(args)
    print(describe(report))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
