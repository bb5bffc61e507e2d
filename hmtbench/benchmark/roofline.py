"""How close a measured step is to the device's limits: matmul FLOP/s and, at batch 1, weight bandwidth.

Model FLOPs count the backbone's linear layers only (every ``nn.Linear``, the LM head included; the
attention scores add under 1% at L = 256 and are left out), per *text* token: memory, sensory and
summary positions are the method's overhead, so a method that spends more positions per text token
shows a lower share. ``backbone_flops_pct`` counts every position the backbone runs instead (the
method's ``positions_per_segment``): how busy the engine keeps the GPU with the arithmetic the method
asks for, whatever that costs per text token.

A forward costs 2 x W FLOPs per token (W: linear weights); a training step with a frozen backbone
(memory or LoRA training) adds 2 x W for the activation gradients, full fine-tuning 4 x W (weight
gradients too), activation checkpointing one more forward (times the share of segments recomputed).

A segment step reads every weight once however many rows it carries, so at batch B the step cannot
take less than ``weight bytes / memory bandwidth``: at most ``B x L_text x bandwidth / weight bytes``
text tokens per second. Peaks are the vendors' dense bf16 numbers (no sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

# device name substring -> (dense bf16 FLOP/s, memory bandwidth bytes/s), from the vendors' data sheets
DEVICE_PEAKS: dict[str, tuple[float, float]] = {
    "H200": (989.4e12, 4.8e12),
    "H100 NVL": (835.5e12, 3.9e12),
    "H100 PCIe": (756.5e12, 2.0e12),
    "H100": (989.4e12, 3.35e12),  # SXM
    "A100": (312e12, 2.0e12),  # 80 GB SXM
}


@dataclass(frozen=True)
class Peaks:
    flops: float  # dense bf16 FLOP/s
    bandwidth: float  # bytes/s


def device_peaks(device_name: str | None) -> Peaks | None:
    """The data-sheet peaks of a GPU by name (first matching entry), None for a CPU or an unknown device."""
    for key, (flops, bandwidth) in DEVICE_PEAKS.items():
        if device_name and key in device_name:
            return Peaks(flops, bandwidth)
    return None


def linear_weights(backbone: nn.Module) -> tuple[int, int]:
    """(elements, bytes) of the backbone's linear-layer weights (a tied LM head counted once, as the matmul it is)."""
    seen: set[int] = set()
    elements = size = 0
    for module in backbone.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            elements += module.weight.numel()
            size += module.weight.numel() * module.weight.element_size()
    return elements, size


def flops_per_token(weights: int, mode: str, train: str | None = None, recompute: float = 0.0) -> float:
    """Matmul FLOPs per text token of an evaluation step or a training step (forward + backward); ``recompute``: the
    forwards the backward runs again (``recomputed_forwards``: a share of the segments, plus one for recomputed
    blocks)."""
    if mode == "eval":
        return 2.0 * weights
    passes = {"memory": 4.0, "lora": 4.0, "full": 6.0}[train or "memory"]
    return (passes + 2.0 * float(recompute)) * weights


def roofline_columns(
    backbone: nn.Module, device_name: str | None, mode: str, train: str | None, recompute: float,
    tokens_per_s: float, batch_size: int, text_tokens_per_segment: int, positions_per_segment: int | None = None,
) -> dict[str, float | None]:
    """Achieved TFLOP/s and, on a known GPU, its share of the peak (per text token, and per position the backbone
    runs) and (evaluation) of the weight-bandwidth bound."""
    weights, weight_bytes = linear_weights(backbone)
    achieved = tokens_per_s * flops_per_token(weights, mode, train, recompute)
    peaks = device_peaks(device_name)
    columns: dict[str, float | None] = {"model_tflops": achieved / 1e12, "peak_flops_pct": None,
                                        "backbone_flops_pct": None, "bandwidth_bound_pct": None}
    if peaks is None:
        return columns
    columns["peak_flops_pct"] = 100 * achieved / peaks.flops
    positions = positions_per_segment or text_tokens_per_segment
    columns["backbone_flops_pct"] = columns["peak_flops_pct"] * positions / text_tokens_per_segment
    if mode == "eval":
        bound = batch_size * text_tokens_per_segment * peaks.bandwidth / weight_bytes
        columns["bandwidth_bound_pct"] = 100 * tokens_per_s / bound
    return columns
