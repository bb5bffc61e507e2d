"""--cuda-graphs for training: a micro-batch's forward and backward replayed, gradients accumulated in place.

On the CPU nothing is captured and the same calls run eagerly on the same persistent gradients, so a run
with --cuda-graphs must equal an eager one exactly; on a GPU the replayed steps must follow the eager ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hmtbench.commands.train import run_train
from hmtbench.errors import HmtbenchError
from hmtbench.methods import method_class, method_names
from hmtbench.training.config import CurriculumSettings, TrainConfig, TrainSettings
from hmtbench.training.graphed import GraphedSteps, micro_step
from hmtbench.training.loop import train_stage
from hmtbench.training.objectives import LanguageModelling, StepLoss, window_loss
from hmtbench.training.windows import WindowSampler
from tests.conftest import METHOD_SETTINGS, build_method, random_documents
from tests.test_train import TEXT, config_for, final_tensors

SETTINGS = {**METHOD_SETTINGS, "segment_length": 16}


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT)
    return str(path)


def trainable(name: str, backbone: torch.nn.Module):
    model = build_method(name, backbone, SETTINGS)
    model.requires_grad_(True)
    model.backbone.requires_grad_(False)
    return model


def test_gradients_accumulate_in_place_over_micro_batches(llama: torch.nn.Module) -> None:
    model = trainable("hmt", llama)
    settings = TrainSettings(bptt_depth=3)
    params = [p for p in model.parameters() if p.requires_grad]
    windows = random_documents(4, 3 * model.segment_tokens)
    step = micro_step(lambda ids: StepLoss(*window_loss(model, ids, settings)), contextlib.nullcontext(), 2)
    graphed = GraphedSteps(step, params)
    held = [p.grad for p in params]
    assert all(g is not None and not g.any() for g in held)  # zeroed gradients exist before any capture
    first = graphed(windows[:2]).loss.clone()
    second = graphed(windows[2:]).loss.clone()

    eager = [torch.zeros_like(p) for p in params]
    for p in params:
        p.grad = None
    for half in (windows[:2], windows[2:]):
        loss, _ = window_loss(model, half, settings)
        for total, grad in zip(eager, torch.autograd.grad(loss / 2, params), strict=True):
            total += grad
    assert torch.equal(first, window_loss(model, windows[:2], settings)[0].detach())
    assert torch.equal(second, window_loss(model, windows[2:], settings)[0].detach())
    for grad, expected in zip(graphed.grads, eager, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)
    assert graphed.grads[0].abs().sum() > 0
    graphed.zero_grad()
    assert all(g is h and not g.any() for g, h in zip(graphed.grads, held, strict=True))  # the same tensors, zeroed
    assert len(graphed.captured) == 1  # both halves share one signature


@pytest.mark.parametrize("name", method_names())
def test_training_with_graphs_equals_eager_training_exactly(name: str, corpus: str, tmp_path: Path) -> None:
    """Every method with LoRA (dropout on), two micro-batches per step, on the CPU: every logged loss and gradient
    norm, and the final tensors, bit for bit: the graphed path keeps its gradients in place and zeroes them, where
    eager drops them. (On a GPU the capture's warm-up calls draw dropout masks, so the runs' masks differ from there
    on.)"""
    logs, tensors = {}, {}
    stage = method_class(name).training_stages[-1:]  # the last stage of a staged method (HMT: 2)
    for graphs in (False, True):
        config = config_for(corpus, tmp_path / str(graphs), method=name, steps=4, train="lora", lr=3e-3,
                            grad_accum=2, cuda_graphs=graphs, **({"stages": list(stage)} if stage else {}))
        config = dataclasses.replace(config, device="cpu")
        row = run_train(config)[0]
        assert row["status"] == "success"
        assert json.loads(row["config"])["train"]["cuda_graphs"] is graphs
        folder = f"stage{stage[0]}" if stage else "train"
        log = (tmp_path / str(graphs) / "run" / folder / "log.jsonl").read_text().splitlines()
        logs[graphs] = [(json.loads(line)["loss"], json.loads(line)["grad_norm"]) for line in log]
        tensors[graphs] = final_tensors(tmp_path / str(graphs) / "run", folder)
    assert len(logs[True]) == 4 and logs[True] == logs[False]
    assert logs[True][-1][0] < logs[True][0][0]
    for name, value in tensors[False].items():
        assert torch.equal(value, tensors[True][name]), name


def test_answer_training_refuses_graphs() -> None:
    with pytest.raises(HmtbenchError, match="--cuda-graphs captures language-modelling windows"):
        TrainConfig(train=TrainSettings(cuda_graphs=True), curriculum=CurriculumSettings(task="passkey"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", method_names())
def test_replayed_training_steps_follow_the_eager_steps(name: str, llama: torch.nn.Module, tmp_path: Path) -> None:
    """The captured step runs the eager step's kernels: the same losses and gradient norms, step after step, with
    gradient accumulation, and nothing left eager."""
    documents = random_documents(4, 400).tolist()
    if not build_method(name, llama, SETTINGS).added_parameters():
        pytest.skip(f"{name} has nothing of its own to train with a frozen backbone")
    logs = {}
    for graphs in (False, True):
        torch.manual_seed(0)
        model = trainable(name, llama.cuda())
        settings = TrainSettings(steps=5, batch_size=2, grad_accum=2, bptt_depth=3, log_every=1, checkpoint_every=5,
                                 lr=3e-3, cuda_graphs=graphs)
        sampler = WindowSampler(documents, 3 * model.segment_tokens, model.segment_tokens, 0, "random")
        with_graphs = tmp_path / str(graphs)
        train_stage(model, LanguageModelling(sampler, settings), settings, settings.steps, with_graphs, {})
        logs[graphs] = [json.loads(line) for line in (with_graphs / "log.jsonl").read_text().splitlines()]
    for key in ("loss", "grad_norm"):
        assert [e[key] for e in logs[True]] == pytest.approx([e[key] for e in logs[False]], rel=1e-4), key


def test_bench_train_with_graphs_records_the_eager_loss(tmp_path: Path) -> None:
    from tests.test_bench import bench

    args = ("--mode", "train", "--bptt-depth", "3", "--batch-size", "2")  # every registered method
    _, _, eager = bench(tmp_path / "eager", *args)
    _, _, graphed = bench(tmp_path / "graphed", *args, "--cuda-graphs")
    eager, graphed = eager.set_index("method").sort_index(), graphed.set_index("method").sort_index()
    assert (eager["status"] == graphed["status"]).all() and (eager["status"] == "success").sum() >= 3
    trained = eager["status"] == "success"  # a method with nothing of its own to train is a skipped row
    assert (eager.loc[trained, "final_loss"] == graphed.loc[trained, "final_loss"]).all()
    assert all(json.loads(c)["engine"]["cuda_graphs"] for c in graphed["config"])


def test_the_train_command_takes_cuda_graphs(corpus: str, tmp_path: Path) -> None:
    """`hmtbench train --cuda-graphs` reaches the record's config; with --task it is one clear error."""
    from typer.testing import CliRunner

    from hmtbench.cli import app

    common = ["train", "--backbone", "random:llama", "--method", "rmt", "--segment-length", "24", "--steps", "2",
              "--bptt-depth", "2", "--batch-size", "2", "--device", "cpu", "--cuda-graphs"]
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [*common, "--dataset", corpus, "--output-dir", str(run),
                                      "--out", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    assert "cuda_graphs: true" in (run / "config.yaml").read_text()
    refused = CliRunner().invoke(app, [*common, "--task", "passkey", "--output-dir", str(tmp_path / "qa")])
    assert refused.exit_code == 2
    assert "--cuda-graphs captures language-modelling windows" in refused.output
