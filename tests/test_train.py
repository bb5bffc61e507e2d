"""hmtbench train: the loss falls, exactly the --train tensors learn, truncation, stages, exact resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from hmtbench.backbones import load_backbone
from hmtbench.checkpoints import load_tensors
from hmtbench.commands.train import build_for_training, load_run_config, run_train
from hmtbench.config import DataSettings, method_config
from hmtbench.errors import HmtbenchError
from hmtbench.results.ledger import read_ledger
from hmtbench.results.record_columns import checkpoint_columns
from hmtbench.training.config import TrainConfig, TrainSettings
from hmtbench.training.objectives import make_objective, window_loss

TEXT = "the cat sat on the mat. the dog ate the bone. " * 120
OWN_SETTINGS = {"hmt": {"sensory_tokens": 4, "recall_hidden_dim": 16}, "overlap": {"sensory_tokens": 4},
                "armt": {"memory_tokens": 2, "key_dim": 8}}


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def config_for(corpus: str, tmp_path: Path, method: str = "rmt", **train: object) -> TrainConfig:
    settings = {
        "steps": 6,
        "stage1_steps": 3,
        "bptt_depth": 3,
        "batch_size": 2,
        "lr": 1e-2,
        "log_every": 1,
        "checkpoint_every": 2,
        "seed": 0,
        **train,
    }
    own = OWN_SETTINGS.get(method, {})
    return TrainConfig(
        backbone="random:llama",
        method=method_config(method, own),
        segment_length=24,
        data=DataSettings(dataset=corpus),
        train=TrainSettings(**settings),
        output_dir=str(tmp_path / "run"),
        out=str(tmp_path / "results"),
    )


def losses(run_dir: Path, stage: str = "train") -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / stage / "log.jsonl").read_text().splitlines()]


def test_data_seed_fixes_the_training_data_whatever_the_run_seed(corpus: str, tmp_path: Path) -> None:
    """train.data_seed draws the windows and their order alone: two runs at seeds 1 and 2 with data seed 7 read the
    same batches (only their initialisation differs), as does a run at seed 7 without one; seed 1 alone does not."""
    documents = [list(range(start, start + 200)) for start in range(0, 2000, 200)]
    model = SimpleNamespace(segment_tokens=8, sensory_tokens=0)

    def first_batches(**train: object) -> torch.Tensor:
        objective = make_objective(config_for(corpus, tmp_path, **train), model, None, documents)
        return torch.cat([objective.batch(index, 2)[0] for index in range(3)])

    fixed = first_batches(seed=1, data_seed=7)
    assert torch.equal(first_batches(seed=2, data_seed=7), fixed)
    assert torch.equal(first_batches(seed=7), fixed)
    assert not torch.equal(first_batches(seed=1), fixed)


def test_lora_seed_draws_lora_alone_and_the_memory_follows_the_run_seed(corpus: str, tmp_path: Path) -> None:
    """train.lora_seed sets LoRA's initial matrices apart from the method's: seed 1 with LoRA of seed 7 has seed 7's
    LoRA and seed 1's memory; without it LoRA follows the run's seed."""
    def tensors(**train: object) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        model = build_for_training(load_backbone("random:llama", device="cpu"),
                                   config_for(corpus, tmp_path, train="lora", **train), None)
        named = dict(model.named_parameters())
        return {n: p.detach().clone() for n, p in named.items() if "lora_A" in n}, named["memory"].detach().clone()

    crossed_lora, crossed_memory = tensors(seed=1, lora_seed=7)
    own_lora, own_memory = tensors(seed=1)
    other_lora, _ = tensors(seed=7)
    assert crossed_lora and crossed_lora.keys() == other_lora.keys() == own_lora.keys()
    assert all(torch.equal(crossed_lora[n], other_lora[n]) for n in crossed_lora)
    assert not any(torch.equal(crossed_lora[n], own_lora[n]) for n in crossed_lora)
    assert torch.equal(crossed_memory, own_memory)


def test_loss_falls_and_first_losses_are_pinned(corpus: str, tmp_path: Path) -> None:
    config = config_for(corpus, tmp_path, steps=12, train="full", lr=3e-3)
    rows = run_train(config)
    values = losses(tmp_path / "run")
    assert rows[0]["status"] == "success" and rows[0]["steps"] == 12
    assert values[-1] < 0.8 * values[0]
    assert values[:3] == pytest.approx(GOLDEN_FIRST_LOSSES, rel=1e-4)


GOLDEN_FIRST_LOSSES = [5.636179, 5.245346, 4.901227]


@pytest.mark.parametrize("method", ["rmt", "armt"])
@pytest.mark.parametrize(
    ("mode", "expect"), [("memory", {"memory"}), ("lora", {"memory", "lora"}), ("full", {"memory", "all"})]
)
def test_gradients_reach_exactly_the_trained_tensors(corpus: str, tmp_path: Path, mode: str, expect: set,
                                                     method: str) -> None:
    config = config_for(corpus, tmp_path, method=method, train=mode)
    backbone = load_backbone("random:llama", device="cpu")
    model = build_for_training(backbone, config, None)
    ids = torch.randint(0, 256, (2, 3 * model.segment_tokens))
    loss, _ = window_loss(model, ids, config.train)
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}  # LoRA's A gets an exact zero at B = 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert "memory" in with_grad
    lora = {n for n in with_grad if "lora_" in n}
    backbone_plain = {n for n in with_grad if n.startswith("backbone.") and "lora_" not in n}
    assert bool(lora) == ("lora" in expect)
    assert bool(backbone_plain) == ("all" in expect)


def memory_grad(config: TrainConfig, truncate: int | None) -> torch.Tensor:
    backbone = load_backbone("random:llama", device="cpu")
    config.train.bptt_truncate = truncate
    model = build_for_training(backbone, config, None)
    ids = torch.randint(0, 256, (2, 3 * model.segment_tokens), generator=torch.Generator().manual_seed(1))
    window_loss(model, ids, config.train)[0].backward()
    return model.memory.grad


def test_truncation_cuts_gradient_to_the_first_segment(corpus: str, tmp_path: Path) -> None:
    config = config_for(corpus, tmp_path)
    assert memory_grad(config, None).abs().sum() > 0  # full BPTT: segment 0's memory learns from the last loss
    assert memory_grad(config, 3).abs().sum() > 0  # K = D keeps the whole window
    assert memory_grad(config, 2).abs().sum() == 0  # the initial memory is 3 segments back


def test_stage_two_starts_from_stage_one(corpus: str, tmp_path: Path) -> None:
    config = config_for(corpus, tmp_path, method="hmt", stages=[1, 2], train="lora")
    run_train(config)
    stage1 = load_tensors(tmp_path / "run" / "stage1" / "final")
    backbone = load_backbone("random:llama", device="cpu")
    stage2 = dataclasses.replace(config, method=dataclasses.replace(config.method, stage=2))
    fresh = build_for_training(backbone, stage2, None)
    started = build_for_training(
        load_backbone("random:llama", device="cpu"), stage2, str(tmp_path / "run" / "stage1" / "final")
    )
    state = started.state_dict()
    assert set(stage1) and all(torch.equal(state[k], v) for k, v in stage1.items())
    assert "summary_prompt" not in stage1 and not any(k.startswith("recall.") for k in stage1)
    for name in ("summary_prompt", "recall.wq.weight", "recall.wk.weight"):
        assert torch.equal(state[name], fresh.state_dict()[name])  # fresh, seeded initialisation
    # what an evaluation of this checkpoint records: the path, the tensors' hash (compare's identity), the mode
    folder = tmp_path / "run" / "stage1" / "final"
    columns = checkpoint_columns(str(folder))
    files = (folder / "trainable.safetensors").read_bytes() + (folder / "adapter_model.safetensors").read_bytes()
    assert columns == {"checkpoint": str(folder.resolve()), "train_mode": "lora",
                       "checkpoint_sha256": hashlib.sha256(files).hexdigest(),
                       "train_seed": 0, "train_data_seed": None, "train_lora_seed": None,
                       "train_recipe": columns["train_recipe"],
                       "train_budget": None,  # its training
                       "train_tokens": 3 * 2 * 3 * 18}  # steps x windows x D segments x S text tokens
    assert len(columns["train_recipe"]) == 16


def final_tensors(run_dir: Path, stage: str = "train") -> dict[str, torch.Tensor]:
    return load_tensors(run_dir / stage / "final")


@pytest.mark.parametrize(("method", "mode"), [("rmt", "lora"), ("armt", "lora"), ("armt", "full")])
def test_resume_after_stop_matches_uninterrupted(corpus: str, tmp_path: Path, method: str, mode: str) -> None:
    straight = config_for(corpus, tmp_path / "a", method=method, steps=6, train=mode)
    run_train(straight)
    first = config_for(corpus, tmp_path / "b", method=method, steps=4, train=mode)
    run_train(first)
    (tmp_path / "b" / "run" / "train" / "final").rename(tmp_path / "b" / "stopped")  # as if stopped at step 4
    config_yaml = tmp_path / "b" / "run" / "config.yaml"
    config_yaml.write_text(config_yaml.read_text().replace("steps: 4", "steps: 6"))
    from hmtbench.commands.train import load_run_config

    run_train(load_run_config(str(tmp_path / "b" / "run")), resume=str(tmp_path / "b" / "run"))
    a, b = final_tensors(tmp_path / "a" / "run"), final_tensors(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    if method == "armt":  # every layer's projections trained (the value projection starts at zero)
        assert {"query", "key", "value", "gate", "gate_bias", "memory"} <= set(a) and a["value"].abs().max() > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit


# `python -m hmtbench` whose steps take 0.5 s more each, so the kill lands between checkpoints: the package holds no
# test hook, this driver wraps the objective's loss (looked up at each call) before running the CLI.
SLOW_STEPS = """
import runpy
import time

import hmtbench.training.objectives as objectives

real_window_loss = objectives.window_loss


def slow_window_loss(*args, **kwargs):
    time.sleep(0.5)
    return real_window_loss(*args, **kwargs)


objectives.window_loss = slow_window_loss
runpy.run_module("hmtbench", run_name="__main__")
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(corpus: str, tmp_path: Path) -> None:
    args = [
        "--backbone",
        "random:llama",
        "--method",
        "rmt",
        "--dataset",
        corpus,
        "--segment-length",
        "24",
        "--steps",
        "8",
        "--bptt-depth",
        "3",
        "--lr",
        "0.01",
        "--set",
        "train.checkpoint_every=2",
        "--seed",
        "0",
        "--train",
        "lora",
    ]
    cli = [sys.executable, "-m", "hmtbench", "train"]
    subprocess.run(
        [*cli, *args, "--output-dir", str(tmp_path / "a"), "--out", str(tmp_path / "r")],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", SLOW_STEPS, "train", *args, "--output-dir", str(tmp_path / "b"), "--out",
         str(tmp_path / "r")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    meta = tmp_path / "b" / "train" / "last" / "checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (meta.is_file() and json.loads(meta.read_text())["step"] >= 4):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "b" / "train" / "final").exists()
    subprocess.run([*cli, "--resume", str(tmp_path / "b")], check=True, capture_output=True)
    a, b = final_tensors(tmp_path / "a"), final_tensors(tmp_path / "b")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_a_run_records_its_status(corpus: str, tmp_path: Path) -> None:
    run_train(config_for(corpus, tmp_path))
    frame = pd.concat(pd.read_parquet(p) for p in (tmp_path / "results").glob("*.parquet"))
    assert frame["status"].tolist() == ["success"]
    assert frame["train_mode"].tolist() == ["memory"] and frame["steps"].tolist() == [6]


def test_a_time_budget_ends_the_stage_at_a_logged_step_with_its_final_checkpoint(corpus: str, tmp_path: Path) -> None:
    rows = run_train(config_for(corpus, tmp_path, steps=50, log_every=3, max_minutes=1e-9))  # spent at once
    assert rows[0]["status"] == "success" and rows[0]["steps"] == 3  # the first step that checks the clock
    final = tmp_path / "run" / "train" / "final"
    assert json.loads((final / "checkpoint.json").read_text())["step"] == 3
    logged = (tmp_path / "run" / "train" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [3]


def test_a_stage_ended_by_its_time_budget_resumes_to_its_steps(corpus: str, tmp_path: Path) -> None:
    run_train(config_for(corpus, tmp_path, steps=6, log_every=2, checkpoint_every=2, max_minutes=1e-9))
    again = config_for(corpus, tmp_path, steps=6, log_every=2, checkpoint_every=2)  # the same run, no budget
    rows = run_train(again, resume=again.output_dir)
    assert rows[0]["status"] == "success" and rows[0]["steps"] == 4  # steps 3..6, from the checkpoint of step 2
    final = tmp_path / "run" / "train" / "final"
    assert json.loads((final / "checkpoint.json").read_text())["step"] == 6
    assert run_train(again, resume=again.output_dir) == []  # complete now: nothing left to train


def test_out_of_memory_keeps_the_steps_done_and_the_run_resumes_to_the_uninterrupted_result(
        corpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4th step runs out of memory: steps 1-3 are saved as the resumable checkpoint (no periodic one exists),
    the error says where and how to go on, the record says failed after 3 steps; resumed, the run ends where an
    uninterrupted run ends."""
    import hmtbench.training.objectives as objectives

    run_train(config_for(corpus, tmp_path / "a", checkpoint_every=100, train="lora"))
    real, calls = objectives.window_loss, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(objectives, "window_loss", failing)
    config = config_for(corpus, tmp_path / "b", checkpoint_every=100, train="lora")
    with pytest.raises(HmtbenchError) as error:
        run_train(config)
    last, run = tmp_path / "b" / "run" / "train" / "last", tmp_path / "b" / "run"
    assert str(error.value) == (
        f"out of memory with --batch-size 2 and --bptt-depth 3; lower --batch-size (and raise --grad-accum) or "
        f"--bptt-depth, or add --grad-checkpoint or --set train.layer_checkpoint=true; the 3 steps done are saved in "
        f"{last}: set batch_size / grad_accum in {run / 'config.yaml'} and continue with --resume {run}")
    assert json.loads((last / "checkpoint.json").read_text())["step"] == 3
    record = pd.concat(pd.read_parquet(p) for p in (tmp_path / "b" / "results").glob("*.parquet"))
    assert record["status"].tolist() == ["failed"] and record["steps"].tolist() == [3]
    assert record["train_tokens"].tolist() == [json.loads((last / "checkpoint.json").read_text())["train_tokens"]]
    ledger = read_ledger(tmp_path / "b" / "results")  # the 3 steps' tokens and minutes are spent budget too
    assert [(row["steps_from"], row["steps_to"]) for row in ledger] == [("0", "3")]
    assert int(ledger[0]["tokens"]) == record["train_tokens"].iloc[0] > 0
    monkeypatch.setattr(objectives, "window_loss", real)
    rows = run_train(config, resume=str(run))
    assert rows[0]["status"] == "success" and rows[0]["steps"] == 3  # steps 4..6
    a, b = final_tensors(tmp_path / "a" / "run"), final_tensors(run)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)


def test_halve_on_oom_goes_on_with_half_the_micro_batch_to_the_uninterrupted_result(
        corpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.halve_on_oom: micro-batches of 2 windows run out of memory from the 4th step on; the stage goes on from
    step 3 with micro-batches of 1, two a step, to the tensors of the uninterrupted run (the same windows a step,
    summed in another order); the failed part has its record, and config.yaml keeps the micro-batch that fit."""
    import hmtbench.training.objectives as objectives

    def without_dropout(config: TrainConfig) -> TrainConfig:  # dropout draws other masks for other micro-batches
        return dataclasses.replace(config, lora=dataclasses.replace(config.lora, dropout=0.0))

    run_train(without_dropout(config_for(corpus, tmp_path / "a", checkpoint_every=100, train="lora")))
    real, rows_read = objectives.window_loss, []

    def failing(model, ids, settings):
        rows_read.append(ids.shape[0])
        if ids.shape[0] == 2 and len(rows_read) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, ids, settings)

    monkeypatch.setattr(objectives, "window_loss", failing)
    config = without_dropout(config_for(corpus, tmp_path / "b", checkpoint_every=100, train="lora", halve_on_oom=True))
    [row] = run_train(config)
    assert row["status"] == "success" and (row["first_step"], row["end_step"]) == (3, 6)
    assert rows_read == [2, 2, 2, 2] + [1] * 6
    record = pd.concat(pd.read_parquet(p) for p in (tmp_path / "b" / "results").glob("*.parquet"))
    assert sorted(zip(record["status"], record["steps"], record["batch_size"], strict=True)) == [
        ("failed", 3, 2), ("success", 3, 1)]
    saved = load_run_config(config.output_dir)
    assert (saved.train.batch_size, saved.train.grad_accum) == (1, 2)
    a, b = final_tensors(tmp_path / "a" / "run"), final_tensors(tmp_path / "b" / "run")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)


def test_bad_training_input(corpus: str, tmp_path: Path) -> None:
    with pytest.raises(HmtbenchError, match="--steps"):
        TrainSettings(steps=0)
    with pytest.raises(HmtbenchError, match="--bptt-depth"):
        TrainSettings(bptt_depth=0)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a few words only")
    with pytest.raises(HmtbenchError, match="fewer than one training window"):
        run_train(config_for(str(tiny), tmp_path))
    assert not (tmp_path / "run" / "train" / "final").exists()


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(corpus: str, tmp_path: Path) -> None:
    """--compile (Inductor on the CPU) through LoRA layers and activation checkpointing: the same losses and gradient
    norms as eager to float rounding, step after step (LoRA dropout 0: compiled dropout draws other masks)."""
    from torch._dynamo.utils import counters

    from hmtbench.training.config import LoraSettings

    runs = {}
    for compiled in (False, True):
        counters.clear()
        config = config_for(corpus, tmp_path / str(compiled), method="hmt", stages=[2], steps=4, train="lora",
                            lr=3e-3, grad_checkpoint=True, compile=compiled)
        config = dataclasses.replace(config, lora=LoraSettings(dropout=0.0))
        row = run_train(config)[0]
        assert row["status"] == "success"
        assert json.loads(row["config"])["train"]["compile"] is compiled
        log = (tmp_path / str(compiled) / "run" / "stage2" / "log.jsonl").read_text().splitlines()
        runs[compiled] = [json.loads(line)[key] for line in log for key in ("loss", "grad_norm")]
        assert (counters["stats"]["unique_graphs"] > 0) is compiled  # the blocks did run compiled
    assert len(runs[True]) == 8
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
    assert runs[True][-2] < runs[True][0]  # and it learns
