"""Building a method around a loaded backbone: the one place every command path makes one."""

from __future__ import annotations

from typing import Any

import torch

from hmtbench.backbones import Backbone
from hmtbench.checkpoints import apply_tensors, load_tensors, read_adapter_config, read_meta
from hmtbench.errors import HmtbenchError
from hmtbench.lora import add_lora, inject_lora
from hmtbench.methods import method_class
from hmtbench.methods.base import MethodConfig, SegmentMethod
from hmtbench.progress import console


def build_method(
    backbone: Backbone,
    config: MethodConfig,
    segment_length: int,
    *,
    seed: int,
    lora_seed: int | None = None,
    document_length: int | None = None,
    checkpoint: str | None = None,
    lora: dict[str, Any] | None = None,
    most_tokens: int | None = None,
) -> SegmentMethod:
    """Method ``config.name`` around ``backbone`` with a seeded initialisation, then ``checkpoint``'s tensors.

    ``document_length``: the tokens one backbone call must hold for a method that reads whole documents. ``lora``:
    LoRA settings to inject into the backbone first, drawn from ``lora_seed`` (default ``seed``); a checkpoint's own
    LoRA, if it has one, is injected instead: from its peft adapter config, or for checkpoints of earlier versions
    from its meta. The backbone is modified in place only by LoRA. ``most_tokens``: the longest document (prompt and
    answer) the run will read, where the command knows it (``SegmentMethod.most_tokens``).
    """
    cls = method_class(config.name)
    if document_length is not None:
        segment_length = cls.segment_length_for(segment_length, document_length)
    meta = read_meta(checkpoint) if checkpoint is not None else None
    if meta is not None:
        check_backbone(meta, checkpoint, backbone)
        lora = meta.get("lora") or lora
    if not has_lora(backbone.model):
        torch.manual_seed(seed if lora_seed is None else lora_seed)  # LoRA's A matrices: never the process's state
        inject_lora_for(backbone.model, checkpoint, lora)
    torch.manual_seed(seed)
    model = cls(backbone.model, config, segment_length)
    model.most_tokens = most_tokens
    if checkpoint is not None:
        apply_tensors(model, load_tensors(checkpoint), checkpoint)
    return model


def inject_lora_for(model: Any, checkpoint: str | None, lora: dict[str, Any] | None) -> None:
    """The checkpoint's adapter exactly as peft saved it (targets included), else LoRA from ``lora`` settings."""
    adapter = read_adapter_config(checkpoint) if checkpoint is not None else None
    if adapter is not None:
        inject_lora(model, adapter)
    elif lora:
        add_lora(model, lora)


def make_trainable(model: SegmentMethod, mode: str) -> None:
    """Exactly the tensors ``--train`` names train: the method's own (fp32 master weights even on a bf16
    backbone), plus LoRA (``lora``) or the whole backbone (``full``)."""
    model.requires_grad_(mode == "full")
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(mode == "full" or (mode == "lora" and "lora_" in name))
    for param in model.added_parameters().values():
        param.data = param.data.float()
        param.requires_grad_(True)


def warn_if_untrained(model: SegmentMethod, checkpoint: str | None) -> None:
    if checkpoint is None and model.added_parameters():
        console.print(
            f"[yellow]warning:[/] {model.name} has untrained memory parameters (no --checkpoint): its scores measure "
            "a random memory, not the method; train one with `hmtbench train`"
        )


def has_lora(model: Any) -> bool:
    return any("lora_" in name for name, _ in model.named_parameters())


def check_backbone(meta: dict[str, Any], source: str, backbone: Backbone) -> None:
    trained_on = meta.get("backbone_identity")
    if trained_on and trained_on != backbone.resolved.identity:
        raise HmtbenchError(
            f"checkpoint '{source}' was trained on backbone {trained_on}, not {backbone.resolved.description}; "
            f"use --backbone {meta.get('backbone', trained_on)}"
        )
