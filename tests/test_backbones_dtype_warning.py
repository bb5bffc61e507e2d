"""A CPU run in a half precision the CPU only emulates says so (fp32 is several times faster there)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import hmtbench.backbones as backbones


@pytest.mark.parametrize(("flags", "dtype", "device", "warned"), [
    ({"avx", "avx2"}, torch.bfloat16, "cpu", True),  # emulated: the development machine's case
    ({"avx2", "avx512_bf16"}, torch.bfloat16, "cpu", False),  # native bf16
    ({"avx2", "amx_bf16"}, torch.bfloat16, "cpu", False),
    ({"avx2"}, torch.float16, "cpu", True),
    ({"avx2"}, torch.float32, "cpu", False),  # fp32 is never emulated
    ({"avx2"}, torch.bfloat16, "cuda", False),  # a GPU's own affair
    (None, torch.bfloat16, "cpu", False),  # a system that does not say: no guess
])
def test_a_half_precision_the_cpu_emulates_is_warned_of(flags, dtype, device, warned, monkeypatch, capsys) -> None:
    monkeypatch.setattr(backbones, "cpu_flags", lambda: flags)
    backbones.warn_if_slow_on_cpu(dtype, torch.device(device))
    err = capsys.readouterr().err
    assert ("several times slower than --dtype float32" in err) is warned


def test_cpu_flags_are_read_from_every_flags_line_of_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2\nmodel name\t: x\n\nprocessor\t: 1\n"
                       "flags\t\t: fpu avx512_bf16\n")
    assert backbones.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert backbones.cpu_flags(tmp_path / "absent") is None
