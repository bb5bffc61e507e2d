"""Checkpoints hold exactly the tensors a method trained (safetensors) plus the resolved config.

A folder: ``checkpoint.json`` (method, backbone, memory settings, what of the backbone trained, LoRA
settings) and ``trainable.safetensors`` (the method's own tensors: memory, summary prompt, recall; the
backbone's for --train full). LoRA, when trained, is a peft adapter in the same folder
(``adapter_config.json`` + ``adapter_model.safetensors``, peft's names), so
``PeftModel.from_pretrained(backbone, folder)`` reads it as is. Checkpoints of earlier versions kept
LoRA's tensors in ``trainable.safetensors`` under the method module's names; they load unchanged.
It works for GGUF-loaded backbones, which cannot ``save_pretrained``. Folders are written to a
temporary name and renamed, so a crash never leaves a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hmtbench.errors import HmtbenchError

if TYPE_CHECKING:
    from peft import LoraConfig

TENSORS = "trainable.safetensors"
META = "checkpoint.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_TENSORS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
TENSOR_FILES = (TENSORS, ADAPTER_TENSORS)  # what tensors_sha256 reads, in this order


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    extra_files: dict[str, Any] | None = None) -> Path:
    """Write tensors + meta (+ extra torch-saved objects) atomically to ``directory``; LoRA as a peft adapter."""
    from hmtbench.training.lora import is_lora

    target = Path(directory)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # LoRA without its settings in meta (--train full over a LoRA checkpoint) stays with the rest, as before
    lora = {k: v for k, v in tensors.items() if is_lora(k)} if meta.get("lora") else {}
    _save_tensors({k: v for k, v in tensors.items() if k not in lora}, tmp / TENSORS)
    if lora:
        save_adapter(tmp, lora, meta)
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    for name, obj in (extra_files or {}).items():
        torch.save(obj, tmp / name)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def save_adapter(folder: Path, lora: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """LoRA's tensors (method-module names) and ``meta["lora"]`` as a peft adapter folder: the files and keys
    ``PeftModel.save_pretrained`` writes."""
    from hmtbench.training.lora import adapted_modules, lora_config, to_peft_names

    settings = meta["lora"]
    # the targets as given, else the modules LoRA sits on (peft's per-architecture default, resolved)
    targets = settings.get("targets") or adapted_modules(list(lora))
    lora_config(settings, targets, adapter_base_model(meta)).save_pretrained(str(folder))
    _save_tensors(to_peft_names(lora), folder / ADAPTER_TENSORS, {"format": "pt"})


def adapter_base_model(meta: dict[str, Any]) -> str | None:
    """The adapter's ``base_model_name_or_path``: the backbone as resolved where transformers loads that name
    (hub id, model folder), else as given (a GGUF alias, ``random:llama``), which ``--backbone`` accepts."""
    given, resolved = meta.get("backbone"), meta.get("backbone_resolved")
    if not resolved or str(meta.get("backbone_identity", "")).startswith("random:") or resolved.endswith(".gguf"):
        return given
    return resolved


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def read_meta(directory: str | Path) -> dict[str, Any]:
    folder = Path(directory)
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        raise HmtbenchError(f"'{directory}' is not an hmtbench checkpoint (needs {META} and {TENSORS})")
    return json.loads((folder / META).read_text())


def read_adapter_config(directory: str | Path) -> LoraConfig | None:
    """The checkpoint's peft adapter config (None without an adapter, as in every checkpoint of earlier versions)."""
    folder = Path(directory)
    if not (folder / ADAPTER_CONFIG).is_file():
        return None
    from peft import LoraConfig

    return LoraConfig.from_pretrained(str(folder))


def tensors_sha256(directory: str | Path) -> str:
    """sha256 of a checkpoint's tensor files (method tensors, then adapter): names the same trained tensors on any
    machine, under any path. A folder without an adapter hashes as its one file always did, so the records of
    earlier checkpoints keep their identity (compare groups rows by it)."""
    digest = hashlib.sha256()
    for name in TENSOR_FILES:
        path = Path(directory) / name
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def load_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every trained tensor by the method module's names: the method's own, then the adapter's (if any)."""
    from safetensors.torch import load_file

    from hmtbench.training.lora import from_peft_names

    folder = Path(directory)
    tensors = load_file(str(folder / TENSORS))
    if (folder / ADAPTER_TENSORS).is_file():
        tensors.update(from_peft_names(load_file(str(folder / ADAPTER_TENSORS))))
    return tensors


def apply_tensors(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy checkpoint tensors into ``module`` by name; names or shapes that do not fit are one clear error."""
    own = module.state_dict()
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise HmtbenchError(
            f"checkpoint '{source}' holds tensors this model lacks ({', '.join(unknown[:3])}); "
            "evaluate it with the method, backbone and LoRA settings it was trained with"
        )
    for name, value in tensors.items():
        if own[name].shape != value.shape:
            raise HmtbenchError(
                f"checkpoint '{source}' does not fit this backbone: '{name}' is {tuple(value.shape)} there but "
                f"{tuple(own[name].shape)} here; use the backbone and memory settings it was trained with"
            )
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value.to(own[name].dtype))
