"""scripts/gpu/official-chunks.sh pack on a CPU: the resumable state travels, and each level's final comes back once,
in parts of its own, also a level that ended inside a stage (the HMT recipe's curriculum runs in one stage)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from hmtbench.commands.train import run_train
from tests.test_chunks import passkey_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu" / "official-chunks.sh"


def chunks(*args: str) -> str:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # python3: this interpreter's
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env={**os.environ, "PATH": path},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_pack_brings_each_level_final_back_once(tmp_path: Path) -> None:
    work, out, again, carried = (tmp_path / name for name in ("work", "out", "again", "carried"))
    config = passkey_config(tmp_path, level_steps=[2, 1])  # one stage over both levels: train/level1/final
    run_train(dataclasses.replace(config, output_dir=str(work / "runs" / "tiny-official"), out=str(work / "results")))
    (work / "logs").mkdir()
    log = chunks("pack", str(work), "tiny", str(out))
    assert "packed runs/tiny-official/train/final" in log and "packed runs/tiny-official/train/level1/final" in log
    assert sorted(p.name for p in (out / "finals").iterdir()) == ["tiny-train-final.tgz.0",
                                                                   "tiny-train-level1-final.tgz.0"]
    assert "packed" not in chunks("pack", str(work), "tiny", str(again))  # each final travels once
    assert not (again / "finals").exists() and (again / "tiny-state.tgz.0").is_file()
    chunks("unpack", str(out / "finals"), str(carried))
    meta = json.loads((carried / "runs" / "tiny-official" / "train" / "level1" / "final" / "checkpoint.json")
                      .read_text())
    assert meta["step"] == 2  # the first level's last step


def packed_call(tmp_path: Path) -> Path:
    """What a call returns after a tiny run's chunk: its state (``tiny/``, level finals in ``tiny/finals/``) and the
    shared part (``shared/``), packed as a call packs them."""
    work, out = tmp_path / "work", tmp_path / "out"
    config = passkey_config(tmp_path, level_steps=[2, 1])
    run_train(dataclasses.replace(config, output_dir=str(work / "runs" / "tiny-official"), out=str(work / "results")))
    (work / "logs").mkdir()
    (work / "logs" / "train-tiny.log").write_text("a chunk's console\n")
    chunks("pack", str(work), "tiny", str(out / "tiny"))
    chunks("pack-shared", str(work), str(out / "shared"))
    return out


def test_a_state_holds_the_run_alone_and_the_shared_part_the_records(tmp_path: Path) -> None:
    """Each run's state carries what it resumes from, its config and logs; the records, ledger and console logs
    both runs write to one place travel once, in the shared part (two states that each held them overwrote each
    other's ledger when unpacked in turn)."""
    out, carried = packed_call(tmp_path), tmp_path / "carried"

    def names(parts: Path) -> set[str]:
        joined = b"".join(part.read_bytes() for part in sorted(parts.iterdir()) if part.is_file())
        with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
            return set(tar.getnames())

    state = names(out / "tiny")
    assert "runs/tiny-official/config.yaml" in state and "runs/tiny-official/train/log.jsonl" in state
    assert not any(name.startswith(("results", "logs")) for name in state)
    shared = names(out / "shared")
    assert {"results/ledger.csv", "logs/train-tiny.log"} <= shared and not any(n.startswith("runs") for n in shared)
    chunks("unpack", str(out / "shared"), str(carried))
    assert (carried / "logs" / "train-tiny.log").read_text() == "a chunk's console\n"


def test_adopt_puts_a_calls_parts_where_the_committed_folder_keeps_them(tmp_path: Path) -> None:
    """adopt, run here after a call: the state parts replace the committed ones, and the run's config and log, the
    shared records, ledger and logs, and each level final land in the committed folder's places."""
    got, dest = packed_call(tmp_path), tmp_path / "dest"
    (dest / "state" / "tiny").mkdir(parents=True)
    (dest / "state" / "tiny" / "tiny-state.tgz.1").write_text("a part of the state before")
    log = chunks("adopt", str(got), str(dest))
    assert "adopted tiny" in log and "adopted shared" in log and "adopted finals/tiny-train-level1" in log
    assert sorted(p.name for p in (dest / "state" / "tiny").iterdir()) == sorted(
        p.name for p in (got / "tiny").iterdir() if p.is_file())
    run = dest / "runs" / "tiny-official"
    assert (run / "config.yaml").is_file() and (run / "train" / "log.jsonl").read_text()
    assert not (run / "train" / "last").exists()  # the checkpoints stay in the state's parts
    assert (dest / "results" / "ledger.csv").is_file() and (dest / "logs" / "train-tiny.log").is_file()
    assert (dest / "finals" / "tiny-train-level1" / "tiny-train-level1-final.tgz.0").is_file()
