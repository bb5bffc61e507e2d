"""Trainer state: a bit-exact round trip that unpickles nothing, and pickled state of older versions refused unread."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from hmtbench.training.state import (
    LEGACY_STATE,
    STATE_JSON,
    STATE_TENSORS,
    load_trainer_state,
    save_trainer_state,
)


class WritesMarker:
    """Unpickling this creates ``path``: stands for any code a pickled trainer state could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def trained_optimizer(seed: int = 0, steps: int = 3):
    """AdamW + LambdaLR after ``steps`` steps over fp32 and bf16 parameters (Adam's state keeps each dtype)."""
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(5, 3, generator=generator)),
              torch.nn.Parameter(torch.randn(4, generator=generator).bfloat16())]
    optimizer = torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9**step)
    for _ in range(steps):
        step_once(params, optimizer, scheduler)
    return params, optimizer, scheduler


def step_once(params: list[torch.nn.Parameter], optimizer, scheduler) -> None:
    sum((p.float() ** 2).sum() for p in params).backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def fresh_like(params: list[torch.nn.Parameter]):
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    optimizer = torch.optim.AdamW(copies, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    return copies, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9**step)


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for index, entries in a["state"].items():
        assert entries.keys() == b["state"][index].keys()
        for key, value in entries.items():
            other = b["state"][index][key]
            assert value.dtype == other.dtype and torch.equal(value, other), (index, key)


def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path: Path) -> None:
    params, optimizer, scheduler = trained_optimizer()
    rng = {"cpu": torch.get_rng_state()}
    save_trainer_state(tmp_path, optimizer, scheduler, 3, rng)
    copies, restored, restored_scheduler = fresh_like(params)
    step, rng_back, _, _ = load_trainer_state(tmp_path, restored, restored_scheduler)
    assert step == 3 and torch.equal(rng_back["cpu"], rng["cpu"])
    assert_same_optimizer_state(optimizer.state_dict(), restored.state_dict())
    assert isinstance(restored.param_groups[0]["betas"], tuple)  # JSON's list turned back into the tuple
    assert restored_scheduler.state_dict() == scheduler.state_dict()
    step_once(params, optimizer, scheduler)
    step_once(copies, restored, restored_scheduler)
    for p, q in zip(params, copies, strict=True):
        assert torch.equal(p, q)


def test_a_state_in_parts_and_what_the_stage_spent_round_trip_exactly(tmp_path: Path) -> None:
    """Over a file limit the optimizer's tensors go to parts (hmtbench.tensorfiles); the stage's tokens and seconds
    come back as saved."""
    params, optimizer, scheduler = trained_optimizer()
    spent = {"tokens": 123_456, "seconds": 61.25}
    save_trainer_state(tmp_path, optimizer, scheduler, 3, {"cpu": torch.get_rng_state()}, spent=spent,
                       max_file_bytes=8 * 1024)
    assert (tmp_path / "trainer_state.safetensors.index.json").is_file()
    assert all(p.stat().st_size <= 8 * 1024 for p in tmp_path.glob("trainer_state-*.safetensors"))
    _, restored, restored_scheduler = fresh_like(params)
    assert load_trainer_state(tmp_path, restored, restored_scheduler)[3] == spent
    assert_same_optimizer_state(optimizer.state_dict(), restored.state_dict())


def test_loading_unpickles_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, optimizer, scheduler = trained_optimizer()
    save_trainer_state(tmp_path, optimizer, scheduler, 3, {"cpu": torch.get_rng_state()})

    def refuse(*args, **kwargs):
        raise AssertionError("the trainer state was unpickled")

    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    _, restored, restored_scheduler = fresh_like(trained_optimizer()[0])
    assert load_trainer_state(tmp_path, restored, restored_scheduler)[0] == 3


def test_pickled_state_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": WritesMarker(marker)}, tmp_path / LEGACY_STATE)
    _, optimizer, scheduler = trained_optimizer(steps=0)
    with pytest.raises(HmtbenchError, match="older hmtbench.*--init-from"):
        load_trainer_state(tmp_path, optimizer, scheduler)
    assert not marker.exists()
    torch.load(tmp_path / LEGACY_STATE, weights_only=False)  # what resume did before: the payload really runs
    assert marker.exists()


def test_resume_of_an_old_run_folder_is_one_line_error(tmp_path: Path) -> None:
    """Through the CLI: a run whose last checkpoint holds a crafted pickle stops with one line, the code unrun."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200)
    run = tmp_path / "run"
    args = ["train", "--backbone", "random:llama", "--method", "rmt", "--train", "memory", "--dataset", str(corpus),
            "--segment-length", "16", "--bptt-depth", "2", "--steps", "2", "--set", "train.checkpoint_every=1",
            "--device", "cpu", "--output-dir", str(run), "--out", str(tmp_path / "results")]
    assert CliRunner().invoke(app, args).exit_code == 0
    last = run / "train" / "last"
    assert {p.name for p in last.iterdir()} >= {STATE_JSON, STATE_TENSORS}
    assert not list(run.rglob("*.pt")) and not list(run.rglob(".*staging"))
    (last / STATE_JSON).unlink()
    (last / STATE_TENSORS).unlink()
    (run / "train" / "final").rename(run / "train" / "stopped")  # as if killed before the end
    marker = tmp_path / "code-ran"
    torch.save({"optimizer": WritesMarker(marker)}, last / LEGACY_STATE)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2
    assert "written by an older hmtbench" in result.output and f"--init-from {last}" in result.output
    assert not marker.exists()
