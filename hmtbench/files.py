"""Files hmtbench writes and reads back: safetensors as readable as any file open() makes, content hashes, and a
one-line error naming the file when one cannot be read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from hmtbench.errors import HmtbenchError

if TYPE_CHECKING:
    import torch


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_readable(path: str | Path) -> None:
    """The permissions open() gives a new file (0644 under the usual umask): safetensors and mkstemp make 0600."""
    os.chmod(path, 0o666 & ~umask())


def umask() -> int:
    """The process umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)
    make_readable(path)


def load_safetensors(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """Every tensor of ``path`` on the CPU; a missing, truncated or foreign file is one error naming it and ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise HmtbenchError(f"{path} is missing; {fix}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise HmtbenchError(f"{path} is not a readable safetensors file ({err}): truncated or corrupt; {fix}") from None


def safetensors_keys(path: Path, fix: str) -> list[str]:
    """The tensor names in ``path``'s header (nothing else is read); errors as ``load_safetensors``."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise HmtbenchError(f"{path} is missing; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except (SafetensorError, OSError, ValueError) as err:
        raise HmtbenchError(f"{path} is not a readable safetensors file ({err}): truncated or corrupt; {fix}") from None


def read_json(path: Path, fix: str) -> dict:
    """A JSON object from ``path``; missing or unreadable is one error naming it and ``fix``."""
    import json

    if not path.is_file():
        raise HmtbenchError(f"{path} is missing; {fix}")
    try:
        value = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise HmtbenchError(f"{path} is not readable JSON ({err}): truncated or corrupt; {fix}") from None
    if not isinstance(value, dict):
        raise HmtbenchError(f"{path} does not hold a JSON object; {fix}")
    return value
