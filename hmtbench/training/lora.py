"""LoRA adapters injected into the backbone in place (peft), with per-architecture default targets."""

from __future__ import annotations

from typing import Any

from torch import nn

from hmtbench.errors import HmtbenchError

FALLBACK_TARGETS = ["q_proj", "v_proj"]


def default_targets(model: nn.Module) -> list[str]:
    """peft's default LoRA targets for the backbone's architecture (q/v projections for Llama, OPT, Qwen2...)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    return list(TARGETS.get(getattr(model.config, "model_type", ""), FALLBACK_TARGETS))


def add_lora(model: nn.Module, settings: dict[str, Any]) -> list[str]:
    """Inject LoRA (r, alpha, dropout, targets) into ``model``; freeze its base weights; return the targets."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = settings.get("targets") or default_targets(model)
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=targets,
        bias="none",
    )
    try:
        inject_adapter_in_model(config, model)
    except ValueError as err:
        raise HmtbenchError(f"LoRA targets {targets} do not match this backbone ({err}); set lora.targets") from None
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    return targets
