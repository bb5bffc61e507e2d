"""Where the time of one training step goes: its kernels by kind, and the device's idle share.

One training step of a ``hmtbench bench`` training case (forward and backward of a D-segment window, eager or with
``--compile`` / ``--cuda-graphs``) runs ``warmup`` times (capture included), then once under ``torch.profiler``.
The kernels are grouped into matmul (GEMM), attention, and everything else (norms, activations, copies, the
memory's own small ops); the wall time of the step minus the device's busy time is time the device waited on the
host. It reads the kernels' device times, so it needs a CUDA device. ``hmtbench profile --mode train`` runs it.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from hmtbench.backbones import Backbone
from hmtbench.benchmark.cases import Case, build_case, case_workload
from hmtbench.benchmark.config import BenchConfig
from hmtbench.benchmark.profile import device_kernels
from hmtbench.benchmark.roofline import device_peaks, flops_per_token, linear_weights
from hmtbench.errors import HmtbenchError
from hmtbench.fastpath import accelerate, capture_failures
from hmtbench.results.provenance import device_name
from hmtbench.training.config import checkpointed_share, recomputed_forwards
from hmtbench.training.layer_recompute import checkpoint_blocks

KINDS = (  # first match wins; kernel names of cuBLAS / CUTLASS / flash attention / cuDNN on Hopper
    ("matmul", re.compile(r"gemm|sm90_xmma|cutlass|wgmma|ampere_.*_s16816|nvjet", re.IGNORECASE)),
    ("attention", re.compile(r"flash|fmha|attention|sdpa|efficient_attention", re.IGNORECASE)),
)


def kind_of(kernel: str) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(kernel)), "other")


def profile_train(backbone: Backbone, case: Case, config: BenchConfig, label: str, top: int = 25) -> dict[str, Any]:
    """The training step ``hmtbench bench`` times for ``case`` (a training case of ``config``), under the profiler."""
    if backbone.device.type != "cuda":
        raise HmtbenchError("profile --mode train reads the kernels' device times: it needs a CUDA device "
                            "(--device cuda); profile the evaluation (--mode eval) on the CPU")
    model = build_case(backbone, case, config)
    accelerate(model, config.engine)  # compiles the blocks; the training step's graphs come with its workload
    if config.layer_checkpoint:
        checkpoint_blocks(backbone.model)
    step, _, text_tokens, graphed = case_workload(config, backbone, case, model, model)
    for _ in range(config.warmup):
        step()
    torch.cuda.synchronize()
    kernels, wall = device_kernels(backbone.device, step)
    busy = sum(seconds for seconds, _ in kernels.values())
    by_kind: dict[str, float] = {}
    for name, (seconds, _) in kernels.items():
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + seconds
    weights, _ = linear_weights(backbone.model)
    recompute = recomputed_forwards(config.grad_checkpoint, config.recompute_share, config.layer_checkpoint)
    flops = text_tokens * flops_per_token(weights, "train", config.train, recompute)
    share = checkpointed_share(config.grad_checkpoint, config.recompute_share)
    peaks = device_peaks(device_name(backbone.device))
    ranked = sorted(kernels.items(), key=lambda item: -item[1][0])[:top]
    return {
        "method": label, "backbone": config.backbone, "train": config.train, "batch_size": case.batch_size,
        "bptt_depth": case.length, "segment_length": config.segment_length, "grad_checkpoint": config.grad_checkpoint,
        "layer_checkpoint": config.layer_checkpoint, "recompute_share": share, "compile": config.engine.compile,
        "cuda_graphs": config.engine.cuda_graphs,
        "cuda_graph_failures": capture_failures(graphed),
        "wall_s": wall, "device_busy_s": busy, "device_idle_s": max(wall - busy, 0.0),
        "kernel_launches": int(sum(count for _, count in kernels.values())),
        "seconds_by_kind": by_kind,
        "model_tflops": flops / wall / 1e12,
        "peak_flops_pct": None if peaks is None else 100 * flops / wall / peaks.flops,
        "matmul_tflops_while_busy": flops / by_kind.get("matmul", float("nan")) / 1e12,
        "top_kernels": [{"kernel": name[:120], "seconds": seconds, "calls": int(calls), "kind": kind_of(name)}
                        for name, (seconds, calls) in ranked],
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
