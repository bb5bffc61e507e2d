"""safetensors files of bounded size: tensors that do not fit are cut into parts, read back bit for bit.

A checkpoint a GPU machine can hand back and git can hold needs every file under a limit (16 MiB there:
``train.max_file_mb``), and one tensor alone can exceed it (SmolLM2's embedding matrix is 113 MB in fp32).
``save_tensor_file(tensors, folder / "x.safetensors", limit)`` writes ``x.safetensors`` as always when the
tensors fit in one file; otherwise ``x-00001-of-00004.safetensors`` ... and ``x.safetensors.index.json``,
which says for each tensor its shape, its dtype and the (file, key) of each part: a tensor too large for the
room left in a file is flattened and cut into consecutive pieces. ``load_tensor_file`` reads either form;
each piece holds the tensor's own bytes, so the tensors come back exactly as saved.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path

import torch

from hmtbench.errors import HmtbenchError
from hmtbench.files import load_safetensors, read_json, save_safetensors

INDEX_SUFFIX = ".index.json"
FORMAT = "hmtbench-parts/1"
HEADER_ROOM = 4096  # bytes kept free in each file for the safetensors header's fixed part and metadata
ENTRY_ROOM = 160  # header bytes per tensor beyond its name (dtype, shape, offsets)


def index_path(path: Path) -> Path:
    return path.with_name(path.name + INDEX_SUFFIX)


def exists(path: str | Path) -> bool:
    """Whether ``path`` was written by ``save_tensor_file``, in one file or in parts."""
    path = Path(path)
    return path.is_file() or index_path(path).is_file()


def listed(name: str, names: Collection[str]) -> bool:
    """Whether the names of a folder's files (a checkpoint's recorded hashes) hold tensor file ``name``, either form."""
    return name in names or name + INDEX_SUFFIX in names


def files(path: str | Path) -> list[Path]:
    """The files that hold ``path``'s tensors, in a fixed order (the index first): what a content hash reads."""
    path = Path(path)
    if path.is_file():
        return [path]
    index = index_path(path)
    if not index.is_file():
        return []
    return [index, *(path.with_name(name) for name in json.loads(index.read_text())["files"])]


def save_tensor_file(tensors: dict[str, torch.Tensor], path: str | Path, limit: int | None = None,
                     metadata: dict[str, str] | None = None) -> list[Path]:
    """Write ``tensors`` to ``path``, or (where they need more than ``limit`` bytes) to parts of at most ``limit``
    bytes each plus an index; return the files written."""
    path = Path(path)
    tensors = {name: value.detach().contiguous().cpu() for name, value in tensors.items()}
    if limit is None or _file_size(tensors) <= limit:
        save_safetensors(tensors, path, metadata)
        return [path]
    if limit < HEADER_ROOM + 2 * ENTRY_ROOM + 1024:
        raise ValueError(f"a file limit of {limit} bytes leaves no room for tensors")
    shards, entries = _pack(tensors, limit)
    names = [f"{path.stem}-{i + 1:05d}-of-{len(shards):05d}{path.suffix}" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        save_safetensors(shard, path.with_name(name), metadata)
        size = path.with_name(name).stat().st_size
        if size > limit:  # the room kept for headers was too small: a bug, never a silent oversize file
            raise RuntimeError(f"{name} is {size} bytes, over the limit of {limit}")
    for entry in entries.values():
        entry["parts"] = [[names[shard], key] for shard, key in entry["parts"]]
    index = {"format": FORMAT, "files": names, "tensors": entries}
    index_path(path).write_text(json.dumps(index, indent=1))
    return [index_path(path), *(path.with_name(name) for name in names)]


def load_tensor_file(path: str | Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors ``save_tensor_file`` wrote to ``path``, in one file or in parts, exactly as saved; a missing or
    unreadable file is one error naming it and ``fix``."""
    path = Path(path)
    if not index_path(path).is_file():
        return load_safetensors(path, fix)
    index = read_json(index_path(path), fix)
    if index.get("format") != FORMAT:
        raise HmtbenchError(f"{index_path(path)} is not an index this hmtbench reads ({index.get('format')!r}); "
                            f"{fix}")
    loaded = {name: load_safetensors(path.with_name(name), fix) for name in index["files"]}
    tensors = {}
    for name, entry in index["tensors"].items():
        pieces = [loaded[file][key] for file, key in entry["parts"]]
        whole = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        tensors[name] = whole.reshape(entry["shape"])
    return tensors


def _file_size(tensors: dict[str, torch.Tensor]) -> int:
    """An upper bound on the size of one safetensors file holding ``tensors``."""
    return HEADER_ROOM + sum(_bytes(t) + len(name) + ENTRY_ROOM for name, t in tensors.items())


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _pack(tensors: dict[str, torch.Tensor], limit: int) -> tuple[list[dict[str, torch.Tensor]], dict[str, dict]]:
    """Tensors into shards of at most ``limit`` bytes (header room counted): whole where they fit the room left,
    else flattened and cut. Returns the shards and, per tensor, its shape and its parts as (shard, key)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = HEADER_ROOM
    entries: dict[str, dict] = {}
    for name, tensor in tensors.items():
        entry = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."), "parts": []}
        entries[name] = entry
        whole = _bytes(tensor) + len(name) + ENTRY_ROOM
        if whole <= limit - HEADER_ROOM:  # fits a file of its own: stays whole
            if used + whole > limit:
                shards.append({})
                used = HEADER_ROOM
            shards[-1][name] = tensor
            entry["parts"].append((len(shards) - 1, name))
            used += whole
            continue
        flat, start, piece = tensor.reshape(-1), 0, 0
        while start < flat.numel():
            key = f"{name}#part{piece}"
            room = (limit - used - len(key) - ENTRY_ROOM) // tensor.element_size()
            if room < 1:
                shards.append({})
                used = HEADER_ROOM
                continue
            end = min(flat.numel(), start + room)
            shards[-1][key] = flat[start:end].clone()
            entry["parts"].append((len(shards) - 1, key))
            used += (end - start) * tensor.element_size() + len(key) + ENTRY_ROOM
            start, piece = end, piece + 1
    return shards, entries
