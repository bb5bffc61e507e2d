"""A run's life on the command line: a failed start leaves its folder free, a checkpoint supplies its settings,
Ctrl-C says what was kept and how to go on, a resumed stage logs each step once and says where it ended."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.cli import app

TEXT = "the cat sat on the mat. the dog ate the bone. " * 120
TRAIN = ["--backbone", "random:llama", "--method", "rmt", "--batch-size", "2", "--bptt-depth", "2", "--lr", "0.01",
         "--seed", "0", "--device", "cpu", "--set", "train.log_every=1"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"HMTBENCH_DEBUG": ""})


def train(corpus: Path, folder: Path, *extra: str):
    return invoke("train", *TRAIN, "--dataset", str(corpus), "--output-dir", str(folder),
                  "--out", str(folder.parent / "results"), *extra)


def logged_steps(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train" / "log.jsonl").read_text().splitlines()]


# ----- a failed start-up leaves the folder free ----------------------------------------------------
@pytest.mark.parametrize(("bad", "message"), [
    (["--segment-length", "2"], "--segment-length 2 leaves no room for text"),
    (["--segment-length", "24", "--bptt-depth", "400"], "fewer than one training window"),
])
def test_a_run_that_fails_at_start_up_leaves_its_folder_free(corpus: Path, tmp_path: Path, bad: list[str],
                                                             message: str) -> None:
    folder = tmp_path / "run"
    failed = train(corpus, folder, "--steps", "2", *bad)
    assert failed.exit_code == 2 and message in failed.stderr, failed.output
    assert not folder.exists()  # nothing written: no config.yaml that would block the retry
    fixed = train(corpus, folder, "--steps", "2", "--segment-length", "24")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads((folder / "train" / "final" / "checkpoint.json").read_text())["step"] == 2


# ----- a checkpoint supplies what is not given ----------------------------------------------------
def test_a_checkpoint_supplies_its_backbone_method_and_settings(corpus: Path, tmp_path: Path) -> None:
    trained = train(corpus, tmp_path / "run", "--steps", "2", "--segment-length", "24", "--memory-tokens", "2")
    assert trained.exit_code == 0, trained.output
    checkpoint = tmp_path / "run" / "train" / "final"
    out = tmp_path / "eval"
    result = invoke("eval-ppl", "--checkpoint", str(checkpoint), "--dataset", str(corpus), "--test-length", "96",
                    "--out", str(out))
    assert result.exit_code == 0, result.output
    [row] = [pd.read_parquet(f).iloc[0] for f in out.glob("*.parquet")]
    assert (row["backbone"], row["backbone_resolved"], row["method"]) == ("random:llama", "random:llama", "rmt")
    assert (row["segment_length"], row["memory_tokens"]) == (24, 2)
    # and what is given still wins where the checkpoint allows it
    given = invoke("eval-ppl", "--checkpoint", str(checkpoint), "--dataset", str(corpus), "--test-length", "96",
                   "--segment-length", "32", "--out", str(out))
    assert given.exit_code == 0, given.output
    assert sorted(pd.read_parquet(f).iloc[0]["segment_length"] for f in out.glob("*.parquet")) == [24, 32]


def test_a_random_backbone_is_named_as_given(corpus: Path, tmp_path: Path) -> None:
    trained = train(corpus, tmp_path / "run", "--steps", "1", "--segment-length", "24")
    assert trained.exit_code == 0, trained.output
    meta = json.loads((tmp_path / "run" / "train" / "final" / "checkpoint.json").read_text())
    assert meta["backbone_resolved"] == "random:llama"
    result = invoke("eval-ppl", "--backbone", "random:opt", "--checkpoint", str(tmp_path / "run" / "train" / "final"),
                    "--dataset", str(corpus), "--out", str(tmp_path / "eval"))
    assert result.exit_code == 2
    assert "trained on backbone random:llama, not random:opt" in result.stderr, result.stderr
    plain = invoke("eval-ppl", "--backbone", "random:opt", "--dataset", str(corpus), "--test-length", "96",
                   "--segment-length", "24", "--out", str(tmp_path / "eval"))
    assert plain.exit_code == 0, plain.output
    [row] = [pd.read_parquet(f).iloc[0] for f in (tmp_path / "eval").glob("*.parquet")]
    assert (row["backbone"], row["backbone_resolved"]) == ("random:opt", "random:opt")


# ----- Ctrl-C, then --resume -------------------------------------------------------------------------
def interrupt_at(monkeypatch: pytest.MonkeyPatch, module, name: str, call: int) -> None:
    """``module.name`` raises KeyboardInterrupt (Ctrl-C) on its ``call``-th call, and works otherwise."""
    real, calls = getattr(module, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


def test_ctrl_c_names_the_record_and_the_resume_command_and_the_resumed_log_has_each_step_once(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmtbench.training.objectives as objectives

    args = ("--steps", "8", "--set", "train.checkpoint_every=4", "--segment-length", "24")
    straight = train(corpus, tmp_path / "a" / "run", *args)
    assert straight.exit_code == 0, straight.output
    assert "rmt complete: final loss" in straight.stdout and "at step 8\n" in straight.stdout

    folder = tmp_path / "b" / "run"
    interrupt_at(monkeypatch, objectives, "window_loss", 7)  # Ctrl-C in step 7: steps 1-6 logged, 4 saved
    canceled = train(corpus, folder, *args)
    assert canceled.exit_code == 130
    [record] = (tmp_path / "b" / "results").glob("*.parquet")
    assert pd.read_parquet(record)["status"].tolist() == ["canceled"]
    assert f"canceled; records written: {record}" in canceled.stderr, canceled.stderr
    resume_line = canceled.stderr.strip().splitlines()[-1]
    assert resume_line == f"continue with: hmtbench train --resume {shlex.quote(str(folder))}"
    assert [entry["step"] for entry in logged_steps(folder)] == [1, 2, 3, 4, 5, 6]

    monkeypatch.undo()
    resumed = invoke(*shlex.split(resume_line.removeprefix("continue with: hmtbench ")))
    assert resumed.exit_code == 0, resumed.output
    assert "rmt complete: final loss" in resumed.stdout
    assert "at step 8 (4 run now, resumed at step 4)" in resumed.stdout, resumed.stdout
    steps = logged_steps(folder)
    assert [entry["step"] for entry in steps] == list(range(1, 9))  # steps 5 and 6 once, from the resumed run
    assert [e["loss"] for e in steps] == pytest.approx([e["loss"] for e in logged_steps(tmp_path / "a" / "run")],
                                                      abs=1e-6)


def test_a_resumed_run_moved_elsewhere_goes_on_where_it_is(corpus: Path, tmp_path: Path) -> None:
    first = train(corpus, tmp_path / "old", "--steps", "4", "--set", "train.checkpoint_every=2",
                  "--segment-length", "24")
    assert first.exit_code == 0, first.output
    shutil.rmtree(tmp_path / "old" / "train" / "final")  # stopped after step 4
    moved = shutil.move(tmp_path / "old", tmp_path / "new")
    resumed = invoke("train", "--resume", str(moved))
    assert resumed.exit_code == 0, resumed.output
    assert (moved / "train" / "final").is_dir() and not (tmp_path / "old").exists()


def test_ctrl_c_in_eval_ppl_names_the_records_written(corpus: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import hmtbench.commands.eval_ppl as eval_ppl

    interrupt_at(monkeypatch, eval_ppl, "evaluate", 2)  # the second method
    out = tmp_path / "results"
    result = invoke("eval-ppl", "--backbone", "random:llama", "--method", "plain,rmt", "--dataset", str(corpus),
                    "--test-length", "96", "--segment-length", "24", "--out", str(out))
    assert result.exit_code == 130
    [record] = out.glob("*.parquet")
    assert "plain" in record.name
    assert result.stderr.strip().splitlines()[-1] == f"canceled; records written: {record}"
    interrupt_at(monkeypatch, eval_ppl, "evaluate", 1)
    result = invoke("eval-ppl", "--backbone", "random:llama", "--dataset", str(corpus), "--test-length", "96",
                    "--segment-length", "24", "--out", str(out))
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == "canceled; no record was written"
