"""The trainer's position (optimizer, scheduler, step, RNG) in files that run no code when read.

A pickle (``trainer_state.pt``) would run whatever it holds under ``torch.load(weights_only=False)``, so one
found in a run folder is refused, never read. Every tensor (Adam's moments and step
counts, the RNG states) goes to ``trainer_state.safetensors`` and everything else (param groups,
scheduler state, step) to ``trainer_state.json``: neither format can hold code, so resuming a
folder of unknown origin is safe. safetensors keeps each tensor's dtype and bytes, and JSON writes
floats as their shortest exact repr, so a resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from hmtbench import tensorfiles
from hmtbench.errors import HmtbenchError
from hmtbench.files import read_json, sha256_file

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LEGACY_STATE = "trainer_state.pt"  # a pickled trainer state: refused, never read
FORMAT = 1
OPTIMIZER, RNG = "optimizer.", "rng."
CORRUPT = ("the resumable checkpoint cannot be read: delete that 'last' folder to restart its stage, or start a new "
           "run from a good checkpoint with --init-from")


def has_trainer_state(folder: Path) -> bool:
    """True for a resumable checkpoint, of this format or the refused pickled one."""
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE).is_file()


def save_trainer_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
                       rng: dict[str, torch.Tensor], objective: dict[str, Any] | None = None,
                       spent: dict[str, float] | None = None, max_file_bytes: int | None = None) -> None:
    """Write the optimizer's tensors and ``rng`` to safetensors (in parts over ``max_file_bytes``), the rest to JSON
    (written last: it marks the state, and records the sha256 of the tensor files). ``spent``: what the stage has
    used so far (tokens, seconds), so a resumed run adds to it."""
    state = optimizer.state_dict()
    tensors, values = _split_optimizer_state(state["state"])
    tensors.update({RNG + name: value for name, value in rng.items()})
    written = tensorfiles.save_tensor_file(tensors, folder / STATE_TENSORS, max_file_bytes)
    document = {
        "format": FORMAT,
        "step": step,
        "param_groups": state["param_groups"],
        "optimizer_values": values,
        "scheduler": scheduler.state_dict(),
        "objective": objective or {},  # where the objective stands: the curriculum's level (plain JSON values)
        **_tensor_hashes(written),
        "spent": spent or {},  # the stage's tokens and seconds up to this step, over every process that ran it
    }
    (folder / STATE_JSON).write_text(json.dumps(document, indent=1))


def load_trainer_state(folder: Path, optimizer: torch.optim.Optimizer,
                       scheduler: Any) -> tuple[int, dict[str, torch.Tensor], dict[str, Any], dict[str, float]]:
    """Restore ``optimizer`` and ``scheduler`` from ``folder``; return the step, the saved RNG states by name, the
    objective's position and what the stage had spent (tokens, seconds; empty for states saved before it was kept).

    The caller sets the RNG states, since only it knows which devices this process owns.
    """
    refuse_legacy(folder)
    document = read_trainer_state(folder)
    tensors = tensorfiles.load_tensor_file(folder / STATE_TENSORS, CORRUPT)  # on the CPU: not every rank owns GPU 0
    live = optimizer.param_groups
    groups = [_like(saved, live[i] if i < len(live) else {}) for i, saved in enumerate(document["param_groups"])]
    state = _join_optimizer_state(tensors, document["optimizer_values"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    scheduler.load_state_dict(document["scheduler"])
    rng = {name[len(RNG):]: value for name, value in tensors.items() if name.startswith(RNG)}
    return int(document["step"]), rng, document.get("objective", {}), document.get("spent", {})


def read_trainer_state(folder: Path) -> dict[str, Any]:
    """``trainer_state.json`` of this format, once the tensor files beside it match the sha256 it records."""
    document = read_json(folder / STATE_JSON, CORRUPT)
    if document.get("format") != FORMAT:
        raise HmtbenchError(f"{folder / STATE_JSON} has format {document.get('format')!r}; this hmtbench reads "
                            f"format {FORMAT}: resume it with the hmtbench version that wrote it")
    digests = document.get("tensor_files") or {STATE_TENSORS: document.get("tensors_sha256")}  # parts: each one's
    for name, value in digests.items():
        path = folder / name
        if not path.is_file():
            raise HmtbenchError(f"{path} is missing; {CORRUPT}")
        if value is not None and sha256_file(path) != value:
            raise HmtbenchError(f"{path} does not match the sha256 {STATE_JSON} records for it: truncated, corrupt or "
                                f"changed; {CORRUPT}")
    return document


def _tensor_hashes(written: list[Path]) -> dict[str, Any]:
    """What ``trainer_state.json`` records of the tensor files: the one file's sha256, or each part's (and the
    index's) by name."""
    if len(written) == 1:
        return {"tensors_sha256": sha256_file(written[0])}
    return {"tensor_files": {path.name: sha256_file(path) for path in written}}


def refuse_legacy(folder: Path) -> None:
    """A pickled ``trainer_state.pt`` is one clear error, and is never unpickled."""
    if (folder / LEGACY_STATE).is_file():
        raise HmtbenchError(
            f"{folder} was written by an older hmtbench ({LEGACY_STATE}, a pickle, is never loaded: it could run "
            f"code); it cannot be resumed: start a new run from its tensors with --init-from {folder}"
        )


def replace_folder(staging: Path, target: Path) -> None:
    """Put the complete ``staging`` folder at ``target``: a crash never leaves tensors without their trainer state."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _split_optimizer_state(state: dict[int, dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Per-parameter state as tensors named ``optimizer.<index>.<key>`` and the non-tensor values by index."""
    tensors, values = {}, {}
    for index, entries in state.items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER}{index}.{key}"] = value
            else:
                values.setdefault(str(index), {})[key] = value
    return tensors, values


def _join_optimizer_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The inverse of ``_split_optimizer_state``: integer parameter indices, as ``load_state_dict`` wants them."""
    state: dict[int, dict[str, Any]] = {int(index): dict(entries) for index, entries in values.items()}
    for name, value in tensors.items():
        if name.startswith(OPTIMIZER):
            index, key = name[len(OPTIMIZER):].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    return state


def _like(saved: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """A param group read from JSON with its tuples back (JSON has only lists), as the live group holds them."""
    return {key: tuple(value) if isinstance(live.get(key), tuple) else value for key, value in saved.items()}
