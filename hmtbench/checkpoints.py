"""Checkpoints hold exactly the tensors a method trained (safetensors) plus the resolved config.

A folder: ``trainable.safetensors`` and ``checkpoint.json`` (method, backbone, memory settings,
what of the backbone trained, LoRA settings). It works for GGUF-loaded backbones, which cannot
``save_pretrained``. Folders are written to a temporary name and renamed, so a crash never
leaves a half-written checkpoint that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from hmtbench.errors import HmtbenchError

TENSORS = "trainable.safetensors"
META = "checkpoint.json"


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    extra_files: dict[str, Any] | None = None) -> Path:
    """Write tensors + meta (+ extra torch-saved objects) atomically to ``directory``."""
    from safetensors.torch import save_file

    target = Path(directory)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / TENSORS))
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


def read_meta(directory: str | Path) -> dict[str, Any]:
    folder = Path(directory)
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        raise HmtbenchError(f"'{directory}' is not an hmtbench checkpoint (needs {META} and {TENSORS})")
    return json.loads((folder / META).read_text())


def tensors_sha256(directory: str | Path) -> str:
    """sha256 of a checkpoint's tensor file: names the same trained tensors on any machine, under any path."""
    digest = hashlib.sha256()
    with open(Path(directory) / TENSORS, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / TENSORS))


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
