"""Facts about the code and machine a run used: versions, git commit, device, peak memory, start time.

The commit is read, never typed: from the git checkout that holds the running package, or, for a
copy without ``.git`` (a GPU machine), from ``HMTBENCH_GIT_COMMIT``/``HMTBENCH_GIT_DIRTY`` made on
the launching machine by ``launch_environment()`` (``eval "$(python -m hmtbench.results.provenance)"``).
Free text about a run goes to ``HMTBENCH_RUN_LABEL``, never into the commit.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import resource
import secrets
import shlex
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import hmtbench
from hmtbench.errors import HmtbenchError

COMMIT_ENV, DIRTY_ENV, LABEL_ENV = "HMTBENCH_GIT_COMMIT", "HMTBENCH_GIT_DIRTY", "HMTBENCH_RUN_LABEL"
_FULL_SHA = re.compile(r"[0-9a-fA-F]{40}")
_DIRTY_VALUES = {"0": False, "false": False, "1": True, "true": True}


def package_root() -> Path:
    """The folder holding the ``hmtbench`` package: the checkout's root when it runs from one."""
    return Path(hmtbench.__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    """``git ARGS`` in ``root``: its stripped stdout, or None if git is missing or fails."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def checkout_state(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD, dirty) of the repository whose top level is ``root``; (None, None) otherwise.

    ``root`` must BE the top level: a copy of the package inside another repository (or a
    site-packages inside a project's venv) would otherwise record that repository's HEAD.
    Dirty = tracked files changed (``git status --porcelain --untracked-files=no``).
    """
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != Path(root).resolve():
        return None, None
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit is None or status is None:
        return None, None
    return commit, bool(status)


def environment_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) from HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY; (None, None) when neither is set.

    Both are required together and checked, so a typo or a free-text note cannot pose as a commit.
    """
    commit, dirty = os.environ.get(COMMIT_ENV, "").strip(), os.environ.get(DIRTY_ENV, "").strip().lower()
    if not commit and not dirty:
        return None, None
    hint = 'set both with eval "$(python -m hmtbench.results.provenance)" in the checkout that launches the run'
    if not _FULL_SHA.fullmatch(commit):
        raise HmtbenchError(f"{COMMIT_ENV} must be a full 40-hex commit sha, got '{commit}' (free text goes in "
                            f"{LABEL_ENV}); {hint}")
    if dirty not in _DIRTY_VALUES:
        raise HmtbenchError(f"{DIRTY_ENV} must be 0, 1, true or false alongside {COMMIT_ENV}, got '{dirty}'; {hint}")
    return commit.lower(), _DIRTY_VALUES[dirty]


def git_state(root: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that runs: its own checkout first, else the launcher's environment variables.

    The checkout wins when there is one: it cannot be hand-set, and a variable left over in the
    shell must not relabel a local run. Bad variables are an error even then, so they are fixed once.
    """
    from_env = environment_state()
    commit, dirty = checkout_state(root or package_root())
    return (commit, dirty) if commit is not None else from_env


def launch_environment(root: Path | None = None) -> dict[str, str]:
    """HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY of this checkout, for a run on a copy without ``.git``."""
    root = root or package_root()
    commit, dirty = checkout_state(root)
    if commit is None:
        raise HmtbenchError(f"{root} is not the top of a git checkout with a commit; launch from a clone of hmtbench")
    return {COMMIT_ENV: commit, DIRTY_ENV: "1" if dirty else "0"}


def run_label() -> str | None:
    """The free-text label of the run (HMTBENCH_RUN_LABEL), or None."""
    return os.environ.get(LABEL_ENV, "").strip() or None


def tokens_sha256(documents: Sequence[Sequence[int]]) -> str:
    """sha256 of the evaluated token ids, the same on every machine for the same data and tokenizer.

    Canonical bytes: for each document in order, its length then its ids, all as little-endian
    int64 (``struct`` ``<q``); the length prefix keeps [[1, 2], [3]] and [[1], [2, 3]] apart.
    """
    import numpy as np

    digest = hashlib.sha256()
    for document in documents:
        ids = np.asarray(document, dtype="<i8").reshape(-1)
        digest.update(struct.pack("<q", ids.size))
        digest.update(ids.tobytes())
    return digest.hexdigest()


_code_at_start: list[tuple[str | None, bool | None]] = []  # git_state() at the process's first run_start()


def run_start() -> datetime:
    """The moment a run starts (UTC): take it first thing and pass it to ``provenance(started_at=...)``.

    The first call of a process also notes the checkout's state: files edited while a run goes on do not
    change the code it imported, so its record must not call them its own (nor the tree dirty for them).
    """
    if not _code_at_start:
        _code_at_start.append(git_state())
    return datetime.now(timezone.utc)


def new_run_id(command: str, method: str, started_at: datetime | None = None) -> str:
    """UTC time (the run's start when given), command, method and a random suffix: unique and sortable."""
    stamp = _utc(started_at).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{command}-{method}-{secrets.token_hex(3)}"


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def peak_host_mem_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _utc(moment: datetime | None) -> datetime:
    """``moment`` in UTC (a naive one is taken as local time), or now."""
    return datetime.now(timezone.utc) if moment is None else moment.astimezone(timezone.utc)


def provenance(command_line: list[str] | None = None, started_at: datetime | None = None) -> dict[str, Any]:
    """The record's provenance columns; ``created_at`` is ``started_at`` (the run's start), or now if not given."""
    import torch
    import transformers

    commit, dirty = _code_at_start[0] if _code_at_start else git_state()
    return {
        "created_at": _utc(started_at).isoformat(timespec="seconds"),
        "run_label": run_label(),
        "command_line": " ".join(command_line if command_line is not None else sys.argv),
        "hmtbench_version": hmtbench.__version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or None,
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


def main() -> int:
    """``eval "$(python -m hmtbench.results.provenance)"``: export this checkout's commit for a run elsewhere."""
    try:
        variables = launch_environment()
    except HmtbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
