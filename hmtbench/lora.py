"""LoRA adapters injected into the backbone in place (peft), with per-architecture default targets.

Inside a method module the adapters are named ``backbone.<path>.lora_A.default.weight``; a peft adapter
folder names the same tensor ``base_model.model.<path>.lora_A.weight`` (what ``PeftModel.save_pretrained``
writes). The two translations here let a checkpoint hold LoRA as a real peft adapter while the method
module, the optimizer and resume keep their own names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hmtbench.errors import HmtbenchError

if TYPE_CHECKING:
    from peft import LoraConfig

FALLBACK_TARGETS = ["q_proj", "v_proj"]
ADAPTER = "default"  # the adapter name inject_adapter_in_model gives; a peft folder stores names without it
BACKBONE = "backbone."  # the method module's prefix of the backbone's parameters
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> the backbone
_OURS = re.compile(rf"^{re.escape(BACKBONE)}(?P<path>.+\.lora_[^.]+)\.{ADAPTER}(?P<tail>\..+)?$")
_PEFT = re.compile(rf"^{re.escape(PEFT_PREFIX)}(?P<path>.+\.lora_[^.]+)(?P<tail>\..+)?$")


def default_targets(model: nn.Module) -> list[str]:
    """peft's default LoRA targets for the backbone's architecture (q/v projections for Llama, OPT, Qwen2...)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    return list(TARGETS.get(getattr(model.config, "model_type", ""), FALLBACK_TARGETS))


def lora_config(settings: dict[str, Any], targets: list[str], base_model: str | None = None) -> LoraConfig:
    """Our LoRA settings (r, alpha, dropout) as peft's config: the one used to inject and the one saved."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )


def add_lora(model: nn.Module, settings: dict[str, Any]) -> list[str]:
    """Inject LoRA (r, alpha, dropout, targets) into ``model``; freeze its base weights; return the targets."""
    targets = settings.get("targets") or default_targets(model)
    inject_lora(model, lora_config(settings, targets))
    return targets


def inject_lora(model: nn.Module, config: LoraConfig) -> None:
    """Inject the adapter ``config`` describes (ours, or a checkpoint's adapter_config.json); freeze the rest."""
    from peft import inject_adapter_in_model

    try:
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    except ValueError as err:
        targets = config.target_modules
        shown = targets if isinstance(targets, str) else sorted(targets or [])
        raise HmtbenchError(f"LoRA targets {shown} do not match this backbone ({err}); set lora.targets") from None
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)


def is_lora(name: str) -> bool:
    """A method module's tensor name that belongs to a LoRA adapter on the backbone."""
    return name.startswith(BACKBONE) and ".lora_" in name


def to_peft_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Method-module LoRA names -> the keys ``PeftModel.save_pretrained`` writes (adapter name dropped)."""
    return {_rename(name, _OURS, PEFT_PREFIX + "{path}{tail}"): value for name, value in tensors.items()}


def from_peft_names(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``to_peft_names``: an adapter file's keys as the method module names its LoRA tensors."""
    return {_rename(key, _PEFT, BACKBONE + "{path}." + ADAPTER + "{tail}"): value for key, value in tensors.items()}


def _rename(name: str, pattern: re.Pattern[str], template: str) -> str:
    found = pattern.match(name)
    if found is None:
        raise HmtbenchError(f"'{name}' is not a LoRA tensor name hmtbench can translate ({pattern.pattern})")
    return template.format(path=found["path"], tail=found["tail"] or "")


def adapted_modules(names: list[str]) -> list[str]:
    """The leaf module names LoRA sits on (``q_proj``...), read from its tensor names: the adapter's targets."""
    paths = [found["path"] for found in map(_OURS.match, names) if found]
    return sorted({path.rsplit(".", 2)[-2] for path in paths})
