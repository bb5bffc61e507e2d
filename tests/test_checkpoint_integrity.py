"""A checkpoint is used whole or not at all: every file it declares is there and matches its sha256 (older
checkpoints: the files their train mode needs, readable), for --checkpoint, --init-from and --resume alike; a
missing, truncated or changed file is one line naming it (exit 2), before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmtbench.checkpoints import ADAPTER_CONFIG, ADAPTER_TENSORS, FILES, META, TENSORS, read_meta
from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from hmtbench.training.state import STATE_JSON, STATE_TENSORS
from tests.conftest import one_error

TEXT = "the cat sat on the mat. the dog ate the bone. " * 120
COMMITTED = Path(__file__).resolve().parents[1] / "results" / "checkpoints"
TRAIN = ["--backbone", "random:llama", "--method", "rmt", "--train", "lora", "--batch-size", "2", "--bptt-depth", "2",
         "--segment-length", "24", "--lr", "0.01", "--seed", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step RMT + LoRA run on the tiny Llama: ``train/final`` and the resumable ``train/last`` (step 4)."""
    root = tmp_path_factory.mktemp("integrity")
    (root / "corpus.txt").write_text(TEXT)
    result = CliRunner().invoke(app, ["train", *TRAIN, "--steps", "4", "--set", "train.checkpoint_every=2", "--dataset",
                                      str(root / "corpus.txt"), "--output-dir", str(root / "run"),
                                      "--out", str(root / "results")])
    assert result.exit_code == 0, result.output
    return root / "run"


def damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # changed: same size, one byte different (a header that still parses, tensors that do not match)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def without_hashes(folder: Path) -> None:
    """The folder as a version that recorded no hashes wrote it."""
    meta = json.loads((folder / META).read_text())
    del meta[FILES]
    (folder / META).write_text(json.dumps(meta))


def evaluate(checkpoint: Path, tmp_path: Path):
    (tmp_path / "doc.txt").write_text(TEXT)
    return CliRunner().invoke(app, ["eval-ppl", "--backbone", "random:llama", "--method", "rmt", "--checkpoint",
                                    str(checkpoint), "--dataset", str(tmp_path / "doc.txt"), "--test-length", "48",
                                    "--out", str(tmp_path / "results")], env={"HMTBENCH_DEBUG": ""})


def start_from(checkpoint: Path, tmp_path: Path):
    (tmp_path / "doc.txt").write_text(TEXT)
    return CliRunner().invoke(app, ["train", *TRAIN, "--steps", "1", "--init-from", str(checkpoint), "--dataset",
                                    str(tmp_path / "doc.txt"), "--output-dir", str(tmp_path / "next"),
                                    "--out", str(tmp_path / "results")], env={"HMTBENCH_DEBUG": ""})


def test_a_checkpoint_records_the_sha256_of_each_file(run: Path) -> None:
    final = run / "train" / "final"
    declared = json.loads((final / META).read_text())[FILES]
    assert sorted(declared) == [ADAPTER_CONFIG, ADAPTER_TENSORS, TENSORS]
    for name, digest in declared.items():
        assert hashlib.sha256((final / name).read_bytes()).hexdigest() == digest
    state = json.loads((run / "train" / "last" / STATE_JSON).read_text())
    assert state["tensors_sha256"] == hashlib.sha256((run / "train" / "last" / STATE_TENSORS).read_bytes()).hexdigest()


def test_safetensors_are_as_readable_as_json(run: Path) -> None:
    mode = 0o666 & ~_umask()
    last = run / "train" / "last"
    for path in (last / TENSORS, last / ADAPTER_TENSORS, last / STATE_TENSORS, last / META, last / STATE_JSON):
        assert path.stat().st_mode & 0o777 == mode, path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("name", [TENSORS, ADAPTER_TENSORS])
@pytest.mark.parametrize("how", ["missing", "truncated", "changed"])
@pytest.mark.parametrize("use", ["checkpoint", "init-from"])
def test_a_damaged_file_is_refused_by_name(run: Path, tmp_path: Path, use: str, how: str, name: str) -> None:
    checkpoint = shutil.copytree(run / "train" / "final", tmp_path / "final")
    damage(checkpoint / name, how)
    result = (evaluate if use == "checkpoint" else start_from)(checkpoint, tmp_path)
    one_error(result, str(checkpoint / name), "missing" if how == "missing" else "sha256")
    assert not (tmp_path / "results").exists() and not (tmp_path / "next").exists()  # nothing written


@pytest.mark.parametrize(("name", "how", "phrase"), [
    (TENSORS, "truncated", "not a readable safetensors file"),
    (ADAPTER_TENSORS, "truncated", "not a readable safetensors file"),
    (ADAPTER_TENSORS, "missing", "the checkpoint trained LoRA"),
])
@pytest.mark.parametrize("use", ["checkpoint", "init-from"])
def test_a_checkpoint_without_hashes_is_checked_for_what_its_train_mode_needs(
        run: Path, tmp_path: Path, use: str, name: str, how: str, phrase: str) -> None:
    checkpoint = shutil.copytree(run / "train" / "final", tmp_path / "final")
    without_hashes(checkpoint)
    damage(checkpoint / name, how)
    result = (evaluate if use == "checkpoint" else start_from)(checkpoint, tmp_path)
    one_error(result, str(checkpoint / name), phrase)


def test_a_checkpoint_without_hashes_still_evaluates(run: Path, tmp_path: Path) -> None:
    checkpoint = shutil.copytree(run / "train" / "final", tmp_path / "final")
    without_hashes(checkpoint)
    result = evaluate(checkpoint, tmp_path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("name", "how", "phrase"), [
    (STATE_TENSORS, "truncated", "sha256"),
    (STATE_TENSORS, "missing", "missing"),
    (STATE_JSON, "truncated", "not readable JSON"),
    (TENSORS, "truncated", "sha256"),
    (ADAPTER_TENSORS, "missing", "missing"),
])
def test_a_damaged_resumable_checkpoint_is_refused_before_anything_runs(
        run: Path, tmp_path: Path, name: str, how: str, phrase: str) -> None:
    folder = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(folder / "train" / "final")  # as if stopped after step 4 of more
    damage(folder / "train" / "last" / name, how)
    log = (folder / "train" / "log.jsonl").read_text()
    result = CliRunner().invoke(app, ["train", "--resume", str(folder)], env={"HMTBENCH_DEBUG": ""})
    one_error(result, str(folder / "train" / "last" / name), phrase)
    assert (folder / "train" / "log.jsonl").read_text() == log  # nothing written


def test_a_trainer_state_without_its_hash_is_still_checked_for_readability(run: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(run, tmp_path / "run")
    shutil.rmtree(folder / "train" / "final")
    state = folder / "train" / "last" / STATE_JSON
    state.write_text(json.dumps({k: v for k, v in json.loads(state.read_text()).items() if k != "tensors_sha256"}))
    damage(folder / "train" / "last" / STATE_TENSORS, "truncated")
    result = CliRunner().invoke(app, ["train", "--resume", str(folder)], env={"HMTBENCH_DEBUG": ""})
    one_error(result, str(folder / "train" / "last" / STATE_TENSORS), "not a readable safetensors file")


def test_a_file_changed_after_a_first_read_is_caught(run: Path, tmp_path: Path) -> None:
    checkpoint = shutil.copytree(run / "train" / "final", tmp_path / "final")
    read_meta(checkpoint)  # checked once, and remembered while the files stay as they are
    damage(checkpoint / TENSORS, "truncated")
    with pytest.raises(HmtbenchError, match="sha256"):
        read_meta(checkpoint)


def committed_checkpoints() -> list[Path]:
    return sorted(meta.parent for meta in COMMITTED.rglob(META))


@pytest.mark.parametrize("folder", committed_checkpoints(), ids=lambda p: str(p.relative_to(COMMITTED)))
def test_committed_checkpoints_load_unless_their_adapter_was_left_out(folder: Path) -> None:
    """The retrieval checkpoints under passkey/ were committed without their LoRA adapter (its size): refused, as
    evaluating them without it would measure another model."""
    if folder.parent.name == "passkey":
        with pytest.raises(HmtbenchError, match=f"{ADAPTER_TENSORS} is missing: the checkpoint trained LoRA"):
            read_meta(folder)
    else:
        assert read_meta(folder)["train_mode"] in ("lora", "memory")


def test_the_content_hash_reads_a_checkpoint_once_and_again_once_it_changes(run: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """tensors_sha256 is asked for in every record and resumable batch of an evaluation: it reads the files once,
    and again when one of them is written anew."""
    import builtins

    from hmtbench.checkpoints import tensors_sha256

    final = tmp_path / "final"
    shutil.copytree(run / "train" / "final", final)
    opened: list[str] = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda file, *a, **k: (opened.append(str(file)), real_open(file, *a, **k))[1])
    first = tensors_sha256(final)
    reads = len(opened)
    assert reads > 0 and tensors_sha256(final) == first and len(opened) == reads
    tensors = final / TENSORS
    data = tensors.read_bytes()
    tensors.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    os.utime(tensors, ns=(tensors.stat().st_atime_ns, tensors.stat().st_mtime_ns + 1))  # a later write, always
    reads = len(opened)
    assert tensors_sha256(final) != first and len(opened) > reads
