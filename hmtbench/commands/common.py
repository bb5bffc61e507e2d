"""Pieces every command shares: checkpoints, warnings, the record's common columns."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from hmtbench.backbones import Backbone
from hmtbench.checkpoints import read_meta, tensors_sha256
from hmtbench.errors import HmtbenchError, unknown_choice
from hmtbench.methods.base import SegmentMethod
from hmtbench.progress import console
from hmtbench.results.columns import training_columns

C = TypeVar("C")
SPLITS = ("train", "validation", "test")  # what --selected-on names


def read_checkpoint_meta(checkpoint: str | None) -> dict[str, Any] | None:
    return None if checkpoint is None else read_meta(checkpoint)


def warn_if_untrained(model: SegmentMethod, checkpoint: str | None) -> None:
    if checkpoint is None and model.added_parameters():
        console.print(
            f"[yellow]warning:[/] {model.name} has untrained memory parameters (no --checkpoint): its scores measure "
            "a random memory, not the method; train one with `hmtbench train`"
        )


def run_columns(
    command: str, seed: int, backbone: Backbone, model: SegmentMethod, command_line: list[str] | None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """The record columns every command fills the same way: provenance, backbone, method, parameters, device."""
    return {
        **backbone_columns(command, seed, backbone, command_line, started_at),
        "method": model.name,
        **parameter_counts(model),
        **model.record_columns(),
    }


def backbone_columns(
    command: str, seed: int, backbone: Backbone, command_line: list[str] | None, started_at: datetime | None = None
) -> dict[str, Any]:
    """Provenance, the backbone and the device: the columns of a run whether or not a method could be built."""
    from hmtbench import distributed
    from hmtbench.results.provenance import device_name, provenance

    return {
        **provenance(command_line, started_at),
        "command": command,
        "seed": seed,
        "backbone": backbone.resolved.given,
        "backbone_resolved": backbone.resolved.description,
        "weights": "random" if backbone.resolved.random_weights else "pretrained",
        "device": backbone.device.type,
        "device_name": device_name(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
    }


def checkpoint_columns(checkpoint: str | None) -> dict[str, Any]:
    """The record's checkpoint (path and content hash), how its tensors were trained (null = untrained memory), the
    seed and recipe of that training, and on how many tokens (``train_tokens``)."""
    if checkpoint is None:
        return {"checkpoint": None, "checkpoint_sha256": None, "train_mode": None, "train_tokens": None,
                **training_columns(None)}
    meta = read_meta(checkpoint)
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": tensors_sha256(checkpoint),
        "train_mode": meta.get("train_mode"),
        **training_columns(meta.get("config"), meta),
        "train_tokens": meta.get("train_tokens"),
    }


def named_runs(configs: Sequence[C]) -> list[C]:
    """Each config with its own ``name``: --name gives one name per --method, comma-separated in its order (one name
    for one method); the configs of one method (at several context lengths, say) share its name. A --selected-on
    that names no split is refused here, before anything loads."""
    configs = list(configs)
    chosen = getattr(configs[0], "selected_on", None) if configs else None
    if chosen is not None and chosen not in SPLITS:
        raise unknown_choice("--selected-on", chosen, SPLITS)
    if not configs or configs[0].name is None:
        return configs
    own = names_per_method(configs[0].name, [c.method.name for c in configs])
    return [dataclasses.replace(c, name=own[c.method.name]) for c in configs]


def names_per_method(text: str | None, methods: Sequence[str]) -> dict[str, str | None]:
    """--name as {method: name}: one name per method, comma-separated in the order the methods were asked for."""
    methods = list(dict.fromkeys(methods))
    if text is None:
        return dict.fromkeys(methods)
    names = [part.strip() for part in str(text).split(",")]
    if len(names) != len(methods) or not all(names):
        raise HmtbenchError(f"--name takes one name per --method, comma-separated in its order ({len(methods)}: "
                            f"{', '.join(methods)}); got '{text}'")
    return dict(zip(methods, names, strict=True))


def parameter_counts(model: SegmentMethod) -> dict[str, int]:
    backbone = sum(p.numel() for p in model.backbone.parameters())
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    added = sum(p.numel() for p in model.added_parameters().values()) + lora
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"backbone_params": backbone - lora, "added_params": added, "trainable_params": trainable}
