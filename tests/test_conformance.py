"""Every registered method through every command and the engine's invariants: a new method is covered on registration.

Parametrised over ``hmtbench.methods.method_names()``: eval-ppl (stream and paper), eval-qa, train, bench,
the fast path's CPU-testable plumbing, a checkpoint round trip whose record names the settings the method
was built with, padding invariance and a batch equal to its documents one at a time.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hmtbench.backbones.tiny import tiny_model
from hmtbench.cli import app
from hmtbench.config import EngineOptions, method_config
from hmtbench.engine import score_segments, segment_batch
from hmtbench.fastpath import accelerate
from hmtbench.methods import config_class, method_class, method_names
from tests.conftest import random_documents

METHODS = method_names()
L = 32
SETTINGS = {"sensory_tokens": 4, "recall_context": 4, "recall_hidden_dim": 16, "memory_tokens": 1}


def own_flags(name: str) -> list[str]:
    """The flags of SETTINGS that this method has (a setting no asked-for method has is an error)."""
    own = {f.name for f in dataclasses.fields(config_class(name))}
    return [x for key, value in SETTINGS.items() if key in own for x in (f"--{key.replace('_', '-')}", str(value))]


def run(*args: str) -> None:
    result = CliRunner().invoke(app, [*args, "--backbone", "random:llama", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def records(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(f) for f in sorted(folder.glob("*.parquet"))], ignore_index=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    for i, words in enumerate([300, 220, 180]):
        (folder / f"doc{i}.txt").write_text(" ".join(f"w{(i * 7 + j) % 23}" for j in range(words)))
    return folder


def build(name: str, backbone: torch.nn.Module):
    own = {f.name for f in dataclasses.fields(config_class(name))}
    torch.manual_seed(0)
    return method_class(name)(backbone, method_config(name, {k: v for k, v in SETTINGS.items() if k in own}), L)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("protocol", ["stream", "paper"])
def test_eval_ppl(name: str, protocol: str, corpus: Path, tmp_path: Path) -> None:
    run("eval-ppl", "--method", name, "--dataset", str(corpus), "--segment-length", str(L), "--test-length", "128",
        "--protocol", protocol, "--max-windows", "3", "--out", str(tmp_path), *own_flags(name))
    row = records(tmp_path).iloc[0]
    assert row["method"] == name and row["status"] == "success" and row["tokens_scored"] > 0
    assert 100 < row["ppl"] < 600  # a random model over 259 tokens is near uniform
    assert json.loads(row["config"])["method"]["name"] == name


@pytest.mark.parametrize("name", METHODS)
def test_eval_qa(name: str, tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [{"context": "the key is " + "x y z " * (20 + i), "question": "what is the key?", "answer": "abc"}
            for i in range(2)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    run("eval-qa", "--task", str(data), "--method", name, "--segment-length", str(L), "--max-new-tokens", "3",
        "--out", str(tmp_path / "out"), *own_flags(name))
    row = records(tmp_path / "out").iloc[0]
    assert row["method"] == name and row["docs"] == 2 and row["answer_ppl"] > 1


@pytest.mark.parametrize("name", METHODS)
def test_train_then_evaluate_the_checkpoint(name: str, corpus: Path, tmp_path: Path) -> None:
    """A few LoRA steps; the checkpoint evaluates with the settings it was trained with, and the record says so."""
    run("train", "--method", name, "--train", "lora", "--steps", "2", "--stage1-steps", "1", "--batch-size", "2",
        "--bptt-depth", "2", "--segment-length", str(L), "--dataset", str(corpus), "--output-dir",
        str(tmp_path / "run"), "--out", str(tmp_path / "train"), *own_flags(name))
    trained = records(tmp_path / "train")
    assert (trained["status"] == "success").all() and (trained["method"] == name).all()
    final = sorted((tmp_path / "run").glob("*/final"))[-1]
    run("eval-ppl", "--method", name, "--checkpoint", str(final), "--dataset", str(corpus), "--test-length", "128",
        "--out", str(tmp_path / "eval"))  # no settings given: all come from the checkpoint
    row = records(tmp_path / "eval").iloc[0]
    meta = json.loads((final / "checkpoint.json").read_text())
    config = json.loads(row["config"])
    assert config["method"] == meta["method"]  # the effective settings, as built and trained
    assert config["segment_length"] == L == meta["segment_length"] and row["checkpoint_sha256"]


@pytest.mark.parametrize("name", METHODS)
def test_bench(name: str, tmp_path: Path) -> None:
    run("bench", "--method", name, "--segment-length", str(L), "--lengths", "96", "--mode", "eval,train",
        "--bptt-depth", "2", "--warmup", "0", "--repeat", "1", "--out", str(tmp_path), *own_flags(name))
    rows = records(tmp_path).set_index("protocol")
    assert rows.loc["bench-eval", "status"] == "success" and rows.loc["bench-eval", "tokens_per_s"] > 0
    # memory training: a method with nothing of its own to train is a skipped row, not a failure
    expect = "success" if build(name, tiny_model("llama")).added_parameters() else "skipped"
    assert rows.loc["bench-train", "status"] == expect


@pytest.mark.parametrize("name", METHODS)
def test_padding_batching_and_the_fast_path_keep_every_score(name: str, llama: torch.nn.Module) -> None:
    """A batch of documents of different lengths scores each exactly as alone; graph plumbing changes nothing."""
    model = build(name, llama).eval()
    lengths = torch.tensor([100, 57, 81])
    ids = random_documents(3, 100)
    with torch.no_grad():
        batch = segment_batch(ids, lengths, model.segment_tokens)
        nll, tokens = score_segments(model, batch)
        graphed, _ = score_segments(accelerate(model, EngineOptions(cuda_graphs=True)), batch)
        for row in range(3):
            n = int(lengths[row])
            alone = segment_batch(ids[row : row + 1, :n], lengths[row : row + 1], model.segment_tokens)
            one, count = score_segments(model, alone)
            torch.testing.assert_close(one.sum(), nll[row].sum(), rtol=1e-5, atol=1e-4)
            assert int(count.sum()) == int(tokens[row].sum()) == n - 1  # every token but the first, once
    torch.testing.assert_close(graphed, nll, rtol=0, atol=0)
