"""A converted copy of each GGUF backbone, so that only the first load in a machine pays for the conversion.

transformers reads a GGUF file three times (config, tokenizer, weights) and dequantises every tensor in Python:
about 15 s for SmolLM2-135M on two CPU cores, in every process that loads it. The first load here saves the
dequantised fp32 weights, the config and the tokenizer in a folder named by the file (its path, size and mtime) and
the transformers version; every later load reads that folder in well under a second, and gets bit for bit the
weights and token ids the GGUF file gives, in any dtype (tests/test_gguf_cache.py). ``HMTBENCH_GGUF_CACHE=0`` turns
it off; ``HMTBENCH_CACHE_DIR`` moves it (default ``~/.cache/hmtbench``). A folder that cannot be written is skipped:
the load then reads the GGUF file as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DONE = "hmtbench-gguf.json"  # written last: a folder without it is incomplete and never read


def cache_root() -> Path | None:
    """Where converted copies live; None when the cache is turned off."""
    if os.environ.get("HMTBENCH_GGUF_CACHE", "1").strip().lower() in ("0", "off", "no", "false"):
        return None
    return Path(os.environ.get("HMTBENCH_CACHE_DIR") or Path.home() / ".cache" / "hmtbench") / "gguf"


def folder_for(source: str, gguf_file: str) -> Path | None:
    """The converted copy's folder for ``source/gguf_file`` (whether or not it exists yet); None when off."""
    import transformers

    root = cache_root()
    if root is None:
        return None
    path = (Path(source) / gguf_file).resolve()
    stat = path.stat()
    identity = f"{path}|{stat.st_size}|{stat.st_mtime_ns}|transformers {transformers.__version__}"
    return root / f"{path.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def existing(source: str, gguf_file: str) -> Path | None:
    """The converted copy's folder when one is complete; None otherwise."""
    folder = folder_for(source, gguf_file)
    return folder if folder is not None and (folder / DONE).is_file() else None


def converted(source: str, gguf_file: str, local_files_only: bool) -> Path | None:
    """The folder of ``gguf_file``'s converted copy, made now when missing; None when off or not writable."""
    folder = folder_for(source, gguf_file)
    if folder is None or (folder / DONE).is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError:
        return None
    try:
        _convert(source, gguf_file, local_files_only, staging)
        staging.rename(folder)  # atomic: a process converting beside this one either wins or finds it there
    except OSError:
        pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder if (folder / DONE).is_file() else None


def _convert(source: str, gguf_file: str, local_files_only: bool, staging: Path) -> None:
    """Config (without the GGUF quantisation entry), fp32 weights and tokenizer of the GGUF file into ``staging``."""
    import torch
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": local_files_only, "gguf_file": gguf_file}
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights saved are plain fp32 tensors
    type(model.config).from_dict(config).save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))  # tied embeddings stored once
    tokenizer.save_pretrained(staging)
    (staging / DONE).write_text(json.dumps({"gguf": str((Path(source) / gguf_file).resolve())}) + "\n")


def load(folder: Path, torch_dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) from a converted copy, the weights cast to ``torch_dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True), tokenizer
