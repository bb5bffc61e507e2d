"""Provenance that cannot be hand-set: the package's own commit, checked environment variables, the start time."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

import hmtbench
from hmtbench.errors import HmtbenchError
from hmtbench.results.provenance import (
    git_state,
    launch_environment,
    new_run_id,
    package_root,
    provenance,
    tokens_sha256,
)

SHA = "0123456789abcdef0123456789abcdef01234567"
ENV_NAMES = ("HMTBENCH_GIT_COMMIT", "HMTBENCH_GIT_DIRTY", "HMTBENCH_RUN_LABEL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def git(folder: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=folder,
                          env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def checkout_or_skip() -> Path:
    root = package_root()
    try:
        top = git(root, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("hmtbench is not running from a git checkout")
    if Path(top).resolve() != root:
        pytest.skip("hmtbench is not running from its own git checkout")
    return root


def test_the_real_checkout_gives_its_head_and_dirty_state() -> None:
    root = checkout_or_skip()
    dirty = bool(git(root, "status", "--porcelain", "--untracked-files=no"))
    assert git_state() == (git(root, "rev-parse", "HEAD"), dirty)
    assert launch_environment() == {"HMTBENCH_GIT_COMMIT": git(root, "rev-parse", "HEAD"),
                                    "HMTBENCH_GIT_DIRTY": "1" if dirty else "0"}


def run_state(package_parent: Path, env: dict[str, str] | None = None) -> str:
    """git_state() as a copy of the package at ``package_parent/hmtbench`` sees it, in a fresh interpreter."""
    code = "from hmtbench.results.provenance import git_state; print(git_state())"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "HMTBENCH_"))}
    done = subprocess.run([sys.executable, "-c", code], cwd=package_parent, capture_output=True, text=True,
                          env={**base, "PYTHONPATH": str(package_parent), **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def copy_package(parent: Path) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(hmtbench.__file__).parent, parent / "hmtbench", ignore=shutil.ignore_patterns("__pycache__"))
    return parent


def test_a_copy_inside_another_repository_records_no_commit(tmp_path: Path) -> None:
    repo = tmp_path / "other"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "file.txt").write_text("not hmtbench")
    git(repo, "add", "file.txt")
    git(repo, "commit", "-q", "-m", "unrelated")
    parent = copy_package(repo / "vendor")
    assert run_state(parent) == "(None, None)"  # not the other repository's HEAD
    assert run_state(parent, {"HMTBENCH_GIT_COMMIT": SHA, "HMTBENCH_GIT_DIRTY": "0"}) == f"('{SHA}', False)"


def test_the_environment_speaks_for_a_copy_without_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_state(tmp_path) == (None, None)
    for dirty, expected in (("0", False), ("1", True), ("true", True), ("False", False)):
        monkeypatch.setenv("HMTBENCH_GIT_COMMIT", SHA.upper())
        monkeypatch.setenv("HMTBENCH_GIT_DIRTY", dirty)
        assert git_state(tmp_path) == (SHA, expected)


def test_the_checkout_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    root = checkout_or_skip()
    monkeypatch.setenv("HMTBENCH_GIT_COMMIT", SHA)
    monkeypatch.setenv("HMTBENCH_GIT_DIRTY", "0")
    assert git_state()[0] == git(root, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    ("commit", "dirty", "message"),
    [
        ("v1.2 rerun on the H200", "0", "full 40-hex"),
        (SHA[:12], "0", "full 40-hex"),
        (SHA, None, "HMTBENCH_GIT_DIRTY must be"),
        (SHA, "maybe", "HMTBENCH_GIT_DIRTY must be"),
        (None, "1", "full 40-hex"),
    ],
)
def test_bad_environment_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit: str | None,
                                             dirty: str | None, message: str) -> None:
    for name, value in (("HMTBENCH_GIT_COMMIT", commit), ("HMTBENCH_GIT_DIRTY", dirty)):
        if value is not None:
            monkeypatch.setenv(name, value)
    with pytest.raises(HmtbenchError, match=message) as caught:
        git_state(tmp_path)
    assert "\n" not in str(caught.value)


def test_launch_environment_refuses_a_folder_outside_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(HmtbenchError, match="not the top of a git checkout"):
        launch_environment(tmp_path)


def test_the_module_prints_exports_that_a_copy_reads_back(tmp_path: Path) -> None:
    root = checkout_or_skip()
    done = subprocess.run([sys.executable, "-m", "hmtbench.results.provenance"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("export ") and "\n" not in line
    exported = dict(part.split("=", 1) for part in line.removeprefix("export ").split())
    assert exported == launch_environment()
    copy = copy_package(tmp_path / "copy")
    expected = (exported["HMTBENCH_GIT_COMMIT"], exported["HMTBENCH_GIT_DIRTY"] == "1")
    assert run_state(copy, exported) == str(expected)


def test_created_at_is_the_start_of_the_run_and_the_label_is_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    started = datetime(2024, 5, 6, 7, 8, 9, 999, tzinfo=timezone(timedelta(hours=2)))
    monkeypatch.setenv("HMTBENCH_RUN_LABEL", "H200 sweep, seed 1")
    record = provenance(["hmtbench", "eval-ppl"], started_at=started)
    assert record["created_at"] == "2024-05-06T05:08:09+00:00"
    assert record["run_label"] == "H200 sweep, seed 1" and record["command_line"] == "hmtbench eval-ppl"
    assert new_run_id("eval-ppl", "hmt", started).startswith("20240506T050809-eval-ppl-hmt-")
    monkeypatch.delenv("HMTBENCH_RUN_LABEL")
    before = datetime.now(timezone.utc).replace(microsecond=0)
    unstarted = provenance([])  # callers that pass no start: the time of the call
    assert before <= datetime.fromisoformat(unstarted["created_at"]) <= datetime.now(timezone.utc)
    assert unstarted["run_label"] is None


def test_the_record_names_the_cuda_allocator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """They change peak memory (expandable segments: 3.4 GB less at 7B, D = 24, B 8), so a record states them."""
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    assert provenance([])["cuda_alloc_conf"] is None
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert provenance([])["cuda_alloc_conf"] == "expandable_segments:True"


def test_tokens_sha256_hashes_the_documented_bytes() -> None:
    by_hand = hashlib.sha256(struct.pack("<q", 2) + struct.pack("<2q", 1, 2) + struct.pack("<q", 1)
                             + struct.pack("<q", 3)).hexdigest()
    assert tokens_sha256([[1, 2], [3]]) == by_hand
    assert tokens_sha256([[1], [2, 3]]) != by_hand  # the length prefix keeps the split apart
    assert tokens_sha256([torch.tensor([1, 2]), (3,)]) == by_hand  # tensors, tuples: the same ids, the same hash
    assert tokens_sha256([]) == hashlib.sha256(b"").hexdigest()
    assert tokens_sha256([[]]) == hashlib.sha256(struct.pack("<q", 0)).hexdigest()
    assert tokens_sha256([[50_000, 2**40]]) == hashlib.sha256(struct.pack("<3q", 2, 50_000, 2**40)).hexdigest()


def test_the_record_names_the_checkout_as_it_was_when_the_run_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file edited while a run goes on is not the run's code: the state is noted at the first run_start()."""
    from hmtbench.results import provenance as module

    states = iter([("a" * 40, False), ("b" * 40, True)])
    monkeypatch.setattr(module, "_code_at_start", [])
    monkeypatch.setattr(module, "git_state", lambda: next(states))
    module.run_start()
    module.run_start()  # a later run of the same process (eval-qa: one per method) keeps the first state
    row = module.provenance([])
    assert (row["git_commit"], row["git_dirty"]) == ("a" * 40, False)
