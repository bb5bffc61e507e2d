"""Checkpoints hold exactly the tensors a method trained (safetensors) plus the resolved config.

A folder: ``checkpoint.json`` (method, backbone, memory settings, what of the backbone trained, LoRA
settings, and the sha256 of every other file in the folder) and ``trainable.safetensors`` (the method's
own tensors: memory, summary prompt, recall; the backbone's for --train full). LoRA, when trained, is a
peft adapter in the same folder (``adapter_config.json`` + ``adapter_model.safetensors``, peft's names),
so ``PeftModel.from_pretrained(backbone, folder)`` reads it as is. A checkpoint without recorded hashes (the
layout that keeps LoRA's tensors in ``trainable.safetensors`` under the method module's names) loads unchanged,
checked for the files its train mode needs. It works for GGUF-loaded backbones, which
cannot ``save_pretrained``. Folders are written to a temporary name and renamed, so a crash never leaves a
half-written checkpoint that looks complete; a file missing or changed since is refused before it is used.
With a file limit (``train.max_file_mb``) a tensor file that would exceed it is written in parts with an index
(``hmtbench.tensorfiles``); every reader here takes either form, peft only the single file.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hmtbench import tensorfiles
from hmtbench.errors import HmtbenchError
from hmtbench.files import read_json, safetensors_keys, sha256_file
from hmtbench.lora import adapted_modules, from_peft_names, is_lora, lora_config, to_peft_names

if TYPE_CHECKING:
    from peft import LoraConfig

TENSORS = "trainable.safetensors"
META = "checkpoint.json"
ADAPTER_CONFIG = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_TENSORS = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME
TENSOR_FILES = (TENSORS, ADAPTER_TENSORS)  # what tensors_sha256 reads, in this order
FILES = "files"  # checkpoint.json's {file name: sha256} of every file save_checkpoint wrote beside it
FIX = "copy the checkpoint folder again, whole, or train it again"
_verified: dict[str, tuple[tuple, dict[str, Any]]] = {}  # folder: (its files' stats, meta) once checked


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    max_file_bytes: int | None = None) -> Path:
    """Write tensors + meta atomically to ``directory``; LoRA as a peft adapter; meta records each file's sha256.
    ``max_file_bytes``: a tensor file larger than this is written in parts (``hmtbench.tensorfiles``)."""
    target = Path(directory)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # LoRA without its settings in meta (--train full over a LoRA checkpoint) stays with the rest: no adapter config
    # can be written for it
    lora = {k: v for k, v in tensors.items() if is_lora(k)} if meta.get("lora") else {}
    tensorfiles.save_tensor_file({k: v for k, v in tensors.items() if k not in lora}, tmp / TENSORS, max_file_bytes)
    if lora:
        save_adapter(tmp, lora, meta, max_file_bytes)
    files = {path.name: sha256_file(path) for path in sorted(tmp.iterdir())}
    (tmp / META).write_text(json.dumps({**meta, FILES: files}, indent=2, sort_keys=True))
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)
    return target


def save_adapter(folder: Path, lora: dict[str, torch.Tensor], meta: dict[str, Any],
                 max_file_bytes: int | None = None) -> None:
    """LoRA's tensors (method-module names) and ``meta["lora"]`` as a peft adapter folder: the files and keys
    ``PeftModel.save_pretrained`` writes (in parts where ``max_file_bytes`` asks, which peft cannot read)."""
    settings = meta["lora"]
    # the targets as given, else the modules LoRA sits on (peft's per-architecture default, resolved)
    targets = settings.get("targets") or adapted_modules(list(lora))
    lora_config(settings, targets, adapter_base_model(meta)).save_pretrained(str(folder))
    tensorfiles.save_tensor_file(to_peft_names(lora), folder / ADAPTER_TENSORS, max_file_bytes, {"format": "pt"})


def adapter_base_model(meta: dict[str, Any]) -> str | None:
    """The adapter's ``base_model_name_or_path``: the backbone as resolved where transformers loads that name
    (hub id, model folder), else as given (a GGUF alias, ``random:llama``), which ``--backbone`` accepts."""
    given, resolved = meta.get("backbone"), meta.get("backbone_resolved")
    if not resolved or str(meta.get("backbone_identity", "")).startswith("random:") or resolved.endswith(".gguf"):
        return given
    return resolved


def read_meta(directory: str | Path) -> dict[str, Any]:
    """``checkpoint.json``, once every file the checkpoint needs is there and intact (``verify``); checked once
    per process while the folder's files stay as they were."""
    folder = Path(directory)
    if not (folder / META).is_file():
        raise HmtbenchError(f"'{directory}' is not an hmtbench checkpoint (needs {META} and {TENSORS})")
    key, stats = str(folder.resolve()), _stats(folder)
    if key not in _verified or _verified[key][0] != stats:
        _verified[key] = (stats, verify(folder))
    return copy.deepcopy(_verified[key][1])


def verify(folder: Path) -> dict[str, Any]:
    """The checkpoint's meta after checking its files: each one ``checkpoint.json`` lists is there with the sha256
    recorded; a checkpoint without hashes has the files its train mode needs, each readable."""
    meta = read_json(folder / META, FIX)
    declared = meta.get(FILES)
    if declared is None:
        _verify_unhashed(folder, meta)
        return meta
    for name, digest in sorted(declared.items()):
        path = folder / name
        if not path.is_file():
            raise HmtbenchError(f"{path} is missing: {META} lists it; {FIX}")
        if sha256_file(path) != digest:
            raise HmtbenchError(f"{path} does not match the sha256 {META} records for it: truncated, corrupt or "
                                f"changed; {FIX}")
    if not tensorfiles.listed(TENSORS, declared):
        raise HmtbenchError(f"'{folder}' is not an hmtbench checkpoint (needs {META} and {TENSORS})")
    return meta


def _verify_unhashed(folder: Path, meta: dict[str, Any]) -> None:
    """A checkpoint without hashes: its tensor files readable, and LoRA's tensors somewhere if it trained LoRA
    (the adapter, or ``trainable.safetensors`` under the method's names)."""
    if not (folder / TENSORS).is_file():
        raise HmtbenchError(f"'{folder}' is not an hmtbench checkpoint (needs {META} and {TENSORS})")
    names = safetensors_keys(folder / TENSORS, FIX)
    if (folder / ADAPTER_TENSORS).is_file():
        safetensors_keys(folder / ADAPTER_TENSORS, FIX)
    elif meta.get("train_mode") == "lora" and ((folder / ADAPTER_CONFIG).is_file() or
                                               not any("lora_" in name for name in names)):
        raise HmtbenchError(f"{folder / ADAPTER_TENSORS} is missing: the checkpoint trained LoRA (train_mode lora) "
                            f"and {TENSORS} holds none of its tensors; {FIX}")


def _stats(folder: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


def _has(folder: Path, name: str, meta: dict[str, Any]) -> bool:
    """Whether the checkpoint holds ``name``: as ``checkpoint.json`` lists it, or as found (no hashes recorded)."""
    declared = meta.get(FILES)
    return tensorfiles.listed(name, declared) if declared is not None else tensorfiles.exists(folder / name)


def read_adapter_config(directory: str | Path) -> LoraConfig | None:
    """The checkpoint's peft adapter config (None without one: no LoRA, or LoRA kept in ``trainable.safetensors``)."""
    folder = Path(directory)
    if not _has(folder, ADAPTER_CONFIG, read_meta(folder)):
        return None
    from peft import LoraConfig

    try:
        return LoraConfig.from_pretrained(str(folder))
    except (ValueError, TypeError, OSError) as err:
        raise HmtbenchError(f"{folder / ADAPTER_CONFIG} is not a readable peft adapter config ({err}); {FIX}") from None


def tensors_sha256(directory: str | Path) -> str:
    """sha256 of a checkpoint's tensor files (method tensors, then adapter; a file in parts: its index, then its
    parts): names the same trained tensors on any machine, under any path. A folder without an adapter hashes its
    one tensor file alone, whichever layout wrote it, so records keep matching the checkpoints they name (compare
    groups rows by this hash)."""
    paths = [path for name in TENSOR_FILES for path in tensorfiles.files(Path(directory) / name)]
    return _files_sha256(tuple((str(path.resolve()), *_size_and_time(path)) for path in paths))


def _size_and_time(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _files_sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over the bytes of ``files`` (path, size, modification time) in order. Cached on those: an evaluation
    names its checkpoint in every record and in its resumable batches, and a large checkpoint is read once, not at
    each; a file written again has another time, so it is read again."""
    digest = hashlib.sha256()
    for path, _, _ in files:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def load_tensors(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every trained tensor by the method module's names: the method's own, then the adapter's (if any)."""
    folder = Path(directory)
    meta = read_meta(folder)
    tensors = tensorfiles.load_tensor_file(folder / TENSORS, FIX)
    if _has(folder, ADAPTER_TENSORS, meta):
        tensors.update(from_peft_names(tensorfiles.load_tensor_file(folder / ADAPTER_TENSORS, FIX)))
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
