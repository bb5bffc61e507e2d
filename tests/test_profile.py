"""`hmtbench profile`: bench's cases, settings, recipe and --set, looked into. A method setting goes to the methods
that have it (the method is asked, never named); a training step's kernels need a CUDA device."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from hmtbench.cli import app

TINY = ["--backbone", "random:llama", "--segment-length", "64", "--device", "cpu", "--warmup", "0", "--repeat", "1"]


def test_profile_reads_bench_cases_and_gives_each_method_its_own_settings(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    result = CliRunner().invoke(app, ["profile", *TINY, "--method", "plain,hmt", "--set", "lengths=256,300",
                                      "--mode", "eval", "--sensory-tokens", "4", "--recall-hidden-dim", "16",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    methods = {m["name"]: m for m in report["config"]["method"]}
    assert methods["hmt"]["sensory_tokens"] == 4 and "sensory_tokens" not in methods["plain"]
    profiles = {(p["method"], p["length"]): p for p in report["eval"]}
    assert sorted(profiles) == [("hmt", 256), ("hmt", 300), ("plain", 256), ("plain", 300)]
    hmt_text = 64 - 2 * 1 - 4  # S = L - 2m - k
    for length in (256, 300):
        assert profiles["plain", length]["segments"] == math.ceil(length / 64)
        assert profiles["hmt", length]["segments"] == math.ceil(length / hmt_text)
        assert profiles["hmt", length]["summary_kernels"] > 0 == profiles["plain", length]["summary_kernels"]
    assert "x plain" in result.output and f"wrote {out}" in result.output


def test_profiling_a_training_step_needs_a_cuda_device() -> None:
    result = CliRunner().invoke(app, ["profile", *TINY, "--method", "rmt", "--mode", "train", "--bptt-depth", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "needs a CUDA device" in result.stderr
