"""Pieces every command shares: checkpoints, warnings, the record's common columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hmtbench.backbones import Backbone
from hmtbench.checkpoints import read_meta, tensors_sha256
from hmtbench.methods.base import SegmentMethod
from hmtbench.progress import console


def read_checkpoint_meta(checkpoint: str | None) -> dict[str, Any] | None:
    return None if checkpoint is None else read_meta(checkpoint)


def warn_if_untrained(model: SegmentMethod, checkpoint: str | None) -> None:
    if checkpoint is None and model.added_parameters():
        console.print(
            f"[yellow]warning:[/] {model.name} has untrained memory parameters (no --checkpoint): its scores measure "
            "a random memory, not the method; train one with `hmtbench train`"
        )


def run_columns(
    command: str, seed: int, backbone: Backbone, model: SegmentMethod, command_line: list[str] | None
) -> dict[str, Any]:
    """The record columns every command fills the same way: provenance, backbone, method, parameters, device."""
    from hmtbench import distributed
    from hmtbench.results.provenance import device_name, provenance

    return {
        **provenance(command_line),
        "command": command,
        "seed": seed,
        "backbone": backbone.resolved.given,
        "backbone_resolved": backbone.resolved.description,
        "method": model.name,
        **parameter_counts(model),
        "device": backbone.device.type,
        "device_name": device_name(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
        **model.record_columns(),
    }


def checkpoint_columns(checkpoint: str | None) -> dict[str, Any]:
    """The record's checkpoint (path and content hash) and how its tensors were trained (null = untrained memory)."""
    if checkpoint is None:
        return {"checkpoint": None, "checkpoint_sha256": None, "train_mode": None}
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": tensors_sha256(checkpoint),
        "train_mode": read_meta(checkpoint).get("train_mode"),
    }


def parameter_counts(model: SegmentMethod) -> dict[str, int]:
    backbone = sum(p.numel() for p in model.backbone.parameters())
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    added = sum(p.numel() for p in model.added_parameters().values()) + lora
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"backbone_params": backbone - lora, "added_params": added, "trainable_params": trainable}
