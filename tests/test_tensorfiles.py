"""Tensor files of bounded size: each file under the limit, each tensor back bit for bit, one file under the limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hmtbench import tensorfiles
from hmtbench.checkpoints import META, load_tensors, read_meta, save_checkpoint, tensors_sha256

KIB = 1024


def mixed_tensors() -> dict[str, torch.Tensor]:
    """A large fp32 matrix (over three limits' worth), bf16 and int64 tensors, a scalar and small ones."""
    generator = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(300, 257, generator=generator),  # 308,400 bytes
        "memory": torch.randn(3, 17, generator=generator).to(torch.bfloat16),
        "step": torch.tensor(7.0),
        "counts": torch.arange(5000, dtype=torch.int64),  # 40,000 bytes
        "head.bias": torch.randn(11, generator=generator),
    }


def test_tensors_that_fit_make_the_one_file_safetensors_writes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = mixed_tensors()
    written = tensorfiles.save_tensor_file(tensors, tmp_path / "x.safetensors", limit=1 << 20, metadata={"a": "b"})
    save_file(tensors, str(tmp_path / "direct.safetensors"), metadata={"a": "b"})
    assert written == [tmp_path / "x.safetensors"]
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "direct.safetensors").read_bytes()
    assert tensorfiles.files(tmp_path / "x.safetensors") == [tmp_path / "x.safetensors"]


def test_parts_stay_under_the_limit_and_load_back_bit_for_bit(tmp_path: Path) -> None:
    tensors = mixed_tensors()
    limit = 100 * KIB
    written = tensorfiles.save_tensor_file(tensors, tmp_path / "x.safetensors", limit=limit)
    index = json.loads((tmp_path / "x.safetensors.index.json").read_text())
    assert not (tmp_path / "x.safetensors").exists() and tensorfiles.exists(tmp_path / "x.safetensors")
    assert written == tensorfiles.files(tmp_path / "x.safetensors")
    assert [p.name for p in written[1:]] == [f"x-{i:05d}-of-{len(written) - 1:05d}.safetensors"
                                             for i in range(1, len(written))]
    assert all(path.stat().st_size <= limit for path in written[1:])
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    assert len(written) - 1 == pytest.approx(total / limit, abs=1.0)  # parts filled, not one per tensor
    assert len(index["tensors"]["embed.weight"]["parts"]) >= 3  # one tensor cut across files
    back = tensorfiles.load_tensor_file(tmp_path / "x.safetensors", "write it again")
    assert list(back) == list(tensors)
    for name, value in tensors.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        assert torch.equal(back[name], value), name


def test_a_checkpoint_in_parts_reads_as_the_one_file_checkpoint(tmp_path: Path) -> None:
    tensors, meta = mixed_tensors(), {"method": {"name": "rmt"}, "step": 3}
    save_checkpoint(tmp_path / "one", tensors, meta)
    save_checkpoint(tmp_path / "parts", tensors, meta, max_file_bytes=64 * KIB)
    meta_one, meta_parts = read_meta(tmp_path / "one"), read_meta(tmp_path / "parts")
    assert {k: v for k, v in meta_parts.items() if k != "files"} == {k: v for k, v in meta_one.items() if k != "files"}
    assert sorted(meta_parts["files"]) == sorted(p.name for p in (tmp_path / "parts").iterdir() if p.name != META)
    one, parts = load_tensors(tmp_path / "one"), load_tensors(tmp_path / "parts")
    assert one.keys() == parts.keys() and all(torch.equal(one[k], parts[k]) for k in one)
    assert all(p.stat().st_size <= 64 * KIB for p in (tmp_path / "parts").iterdir())
    assert tensors_sha256(tmp_path / "parts") == tensors_sha256(tmp_path / "parts")
    assert tensors_sha256(tmp_path / "parts") != tensors_sha256(tmp_path / "one")  # other files, another identity


def test_a_limit_without_room_for_a_tensor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leaves no room"):
        tensorfiles.save_tensor_file({"w": torch.zeros(10_000)}, tmp_path / "x.safetensors", limit=2048)


def test_a_part_changed_or_missing_is_refused_by_name(tmp_path: Path) -> None:
    """A checkpoint in parts records each part's sha256 as any checkpoint records its files."""
    from hmtbench.errors import HmtbenchError

    save_checkpoint(tmp_path / "parts", mixed_tensors(), {"step": 3}, max_file_bytes=64 * KIB)
    part = tmp_path / "parts" / "trainable-00002-of-00006.safetensors"
    part.write_bytes(part.read_bytes()[:-8])
    with pytest.raises(HmtbenchError, match="trainable-00002-of-00006.safetensors does not match the sha256"):
        load_tensors(tmp_path / "parts")
    part.unlink()
    with pytest.raises(HmtbenchError, match="trainable-00002-of-00006.safetensors is missing"):
        load_tensors(tmp_path / "parts")
