"""Facts about the code and machine a run used: versions, git commit, device, peak memory."""

from __future__ import annotations

import os
import platform
import resource
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hmtbench


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout hmtbench runs from; HMTBENCH_GIT_COMMIT overrides (copies without .git)."""
    if os.environ.get("HMTBENCH_GIT_COMMIT"):
        return os.environ["HMTBENCH_GIT_COMMIT"], None
    root = Path(hmtbench.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=5)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def new_run_id(command: str, method: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{command}-{method}-{secrets.token_hex(3)}"


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def peak_host_mem_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def provenance(command_line: list[str] | None = None) -> dict[str, Any]:
    import torch
    import transformers

    commit, dirty = git_state()
    return {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": " ".join(command_line if command_line is not None else sys.argv),
        "hmtbench_version": hmtbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
    }


class Measure:
    """Wall time and peak GPU memory of a block: ``with Measure(device) as m: ...; m.wall_s, m.peak_gpu_mb``."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.wall_s = 0.0
        self.peak_gpu_mb: float | None = None

    def __enter__(self) -> Measure:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        self.wall_s = time.perf_counter() - self._start
