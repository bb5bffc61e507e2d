"""Pieces every command shares: building a method on a backbone, checkpoints, progress, the record."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from hmtbench.backbones import Backbone
from hmtbench.checkpoints import apply_tensors, load_tensors, read_meta, tensors_sha256
from hmtbench.config import MemorySettings
from hmtbench.errors import HmtbenchError
from hmtbench.methods import SegmentMethod, build_method, method_class
from hmtbench.progress import console


def prepare_method(
    backbone: Backbone, method: str, memory: MemorySettings, test_length: int, checkpoint: str | None, seed: int
) -> SegmentMethod:
    """Build ``method`` around the backbone with a seeded init, then load ``checkpoint`` if given."""
    import torch

    settings = dataclasses.asdict(memory)
    meta = None
    if checkpoint is not None:
        meta = read_meta(checkpoint)
        check_checkpoint_fits(meta, checkpoint, method, backbone)
        trained = {k: v for k, v in meta.get("memory", {}).items() if k in settings}
        changed = {k: v for k, v in trained.items() if settings[k] != v}
        if changed:
            console.print(f"using the checkpoint's memory settings: {changed}")
        settings.update(trained)
        if meta.get("lora"):
            from hmtbench.training.lora import add_lora

            add_lora(backbone.model, meta["lora"])
    cls = method_class(method)
    torch.manual_seed(seed)
    model = build_method(method, backbone.model, cls.settings_for(settings, test_length))
    if checkpoint is not None:
        apply_tensors(model, load_tensors(checkpoint), checkpoint)
    elif model.added_parameters():
        console.print(
            f"[yellow]warning:[/] {method} has untrained memory parameters (no --checkpoint): its scores measure "
            "a random memory, not the method; train one with `hmtbench train`"
        )
    return model.eval()


def check_checkpoint_fits(meta: dict[str, Any], source: str, method: str, backbone: Backbone) -> None:
    if meta.get("method") != method:
        raise HmtbenchError(
            f"checkpoint '{source}' was trained for --method {meta.get('method')}, not {method}; "
            f"use --method {meta.get('method')} or another checkpoint"
        )
    trained_on = meta.get("backbone_identity")
    if trained_on and trained_on != backbone.resolved.identity:
        raise HmtbenchError(
            f"checkpoint '{source}' was trained on backbone {trained_on}, not {backbone.resolved.description}; "
            f"use --backbone {meta.get('backbone', trained_on)}"
        )


def run_columns(
    command: str, seed: int, backbone: Backbone, method: str, model: SegmentMethod, command_line: list[str] | None
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
        "method": method,
        **parameter_counts(model),
        "device": backbone.device.type,
        "device_name": device_name(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
        **method_columns(model),
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


def method_columns(model: SegmentMethod) -> dict[str, Any]:
    """The record's segment/memory columns, as this method actually runs them."""
    config = model.config
    is_hmt = hasattr(config, "recall_context")
    return {
        "segment_length": config.segment_length,
        "text_tokens": model.segment_tokens,
        "memory_tokens": model.memory_tokens,
        "sensory_tokens": model.sensory_tokens,
        "recall_context": config.recall_context if is_hmt else None,
        "recall_hidden_dim": config.recall_hidden_dim if is_hmt else None,
        "sum_fraction": config.sum_fraction if is_hmt else None,
        "hmt_stage": config.stage if is_hmt else None,
    }


def quiet_transformers() -> None:
    """Keep third-party chatter (GGUF conversion bars, deprecations) off the user's terminal."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF de-quantization bar is a bare tqdm
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
