"""Every registered method through every command and the engine's invariants: a new method is covered on registration.

Parametrised over ``hmtbench.methods.method_names()``. Each test compares with a reference: a batch with its
documents one at a time, the eager path with the graph plumbing, a checkpoint with its own bytes, the declared
capabilities with what the method does (``check_state_reach``, ``check_layout``, ``check_hooks``). A method whose
declared capabilities lie fails these checks (``test_a_method_whose_capabilities_lie_fails_the_checks``), and a
method from outside the package, registered through an entry point, passes them touching nothing else
(tests/test_plugins.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hmtbench.backbones import load_backbone
from hmtbench.backbones.tiny import tiny_model
from hmtbench.build import build_method as build_for_checkpoint
from hmtbench.checkpoints import load_tensors, read_meta, save_checkpoint, tensors_sha256
from hmtbench.cli import app
from hmtbench.config import EngineOptions, method_config
from hmtbench.engine import score_segments, segment_batch
from hmtbench.errors import HmtbenchError
from hmtbench.fastpath import accelerate
from hmtbench.generation import greedy_generate
from hmtbench.methods import config_class, method_names
from hmtbench.methods.overlap import Overlap, OverlapConfig
from hmtbench.methods.rmt import RMT, RMTConfig
from hmtbench.results.schema import COLUMNS
from tests.conftest import METHOD_SETTINGS, build_method, exercised, random_documents

METHODS = method_names()
L = 32


def own_flags(name: str) -> list[str]:
    """The flags of METHOD_SETTINGS that this method has (a setting no asked-for method has is an error)."""
    own = {f.name for f in dataclasses.fields(config_class(name))}
    return [x for key, value in METHOD_SETTINGS.items() if key in own for x in (f"--{key.replace('_', '-')}",
                                                                                 str(value))]


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
    torch.manual_seed(0)
    return exercised(build_method(name, backbone, {**METHOD_SETTINGS, "segment_length": L})).eval()


# ----- the commands --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("protocol", ["stream", "paper"])
def test_eval_ppl(name: str, protocol: str, corpus: Path, tmp_path: Path) -> None:
    """The record's ppl is its own segments' exp(sum NLL / tokens), and the same whatever the batch size."""
    rows = []
    for batch_size in (1, 3):
        out = tmp_path / str(batch_size)
        run("eval-ppl", "--method", name, "--dataset", str(corpus), "--segment-length", str(L), "--test-length", "128",
            "--protocol", protocol, "--max-windows", "3", "--batch-size", str(batch_size), "--out", str(out),
            *own_flags(name))
        rows.append(records(out).iloc[0])
    row = rows[0]
    assert row["method"] == name and row["status"] == "success"
    assert row["tokens_scored"] == sum(row["segment_tokens"])
    assert row["ppl"] == pytest.approx(math.exp(sum(row["segment_nll"]) / row["tokens_scored"]), rel=1e-9)
    assert rows[1]["ppl"] == pytest.approx(row["ppl"], rel=1e-5)  # a batch scores as its documents one at a time
    assert json.loads(row["config"])["method"]["name"] == name


@pytest.mark.parametrize("name", METHODS)
def test_eval_qa(name: str, tmp_path: Path) -> None:
    """Answer perplexity and greedy answers are the same scored together (teacher-forced, in one batch) and one
    sample at a time."""
    found = []
    for batch_size in (1, 3):
        out = tmp_path / str(batch_size)
        run("eval-qa", "--task", "passkey", "--context-length", "300", "--limit", "3", "--method", name,
            "--segment-length", str(L), "--batch-size", str(batch_size), "--out", str(out), *own_flags(name))
        row = records(out).iloc[0]
        answers = [json.loads(line) for line in Path(row["predictions_file"]).read_text().splitlines()]
        found.append((row, [a["prediction"] for a in answers]))
    (row, answers), (together, answers_together) = found
    assert row["method"] == name and row["docs"] == 3
    assert together["answer_ppl"] == pytest.approx(row["answer_ppl"], rel=1e-5) and answers_together == answers


@pytest.mark.parametrize("name", METHODS)
def test_train_then_evaluate_the_checkpoint(name: str, corpus: Path, tmp_path: Path) -> None:
    """A few LoRA steps; the checkpoint evaluates with the settings it was trained with, the record says so, and its
    tensors load and save back bit for bit."""
    run("train", "--method", name, "--train", "lora", "--steps", "2", "--stage1-steps", "1", "--batch-size", "2",
        "--bptt-depth", "2", "--segment-length", str(L), "--dataset", str(corpus), "--output-dir",
        str(tmp_path / "run"), "--out", str(tmp_path / "train"), *own_flags(name))
    trained = records(tmp_path / "train")
    assert (trained["status"] == "success").all() and (trained["method"] == name).all()
    final = sorted((tmp_path / "run").glob("*/final"))[-1]
    run("eval-ppl", "--method", name, "--checkpoint", str(final), "--dataset", str(corpus), "--test-length", "128",
        "--out", str(tmp_path / "eval"))  # no settings given: all come from the checkpoint
    row = records(tmp_path / "eval").iloc[0]
    meta = read_meta(final)
    config = json.loads(row["config"])
    assert config["method"] == meta["method"]  # the effective settings, as built and trained
    assert config["segment_length"] == L == meta["segment_length"]
    assert row["checkpoint_sha256"] == tensors_sha256(final)
    # the round trip: load the checkpoint into a fresh model, save what it holds, and get the same bytes
    saved = load_tensors(final)
    model = build_for_checkpoint(load_backbone("random:llama", device="cpu"), method_config(name, meta["method"]), L,
                                 seed=1, checkpoint=str(final))
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in saved.items())
    save_checkpoint(tmp_path / "again", {key: state[key] for key in saved}, meta)
    assert tensors_sha256(tmp_path / "again") == tensors_sha256(final)


@pytest.mark.parametrize("name", METHODS)
def test_bench(name: str, tmp_path: Path) -> None:
    """Every case measured; the eager rows' losses are those the graph plumbing (CPU: the same calls) gives."""
    found = {}
    for graphs in ("--no-cuda-graphs", "--cuda-graphs"):
        out = tmp_path / graphs
        run("bench", "--method", name, "--segment-length", str(L), "--lengths", "96", "--mode", "eval,train",
            "--bptt-depth", "2", "--warmup", "0", "--repeat", "1", "--out", str(out), graphs, *own_flags(name))
        found[graphs] = records(out).set_index("protocol")
    rows, graphed = found.values()
    # memory training: a method with nothing of its own to train is a skipped row, not a failure
    expect = "success" if build(name, tiny_model("llama")).added_parameters() else "skipped"
    assert rows.loc["bench-eval", "status"] == "success" and rows.loc["bench-train", "status"] == expect
    assert graphed.loc["bench-eval", "nll_mean"] == rows.loc["bench-eval", "nll_mean"]
    assert pd.isna(rows.loc["bench-train", "final_loss"]) or (
        graphed.loc["bench-train", "final_loss"] == rows.loc["bench-train", "final_loss"])


# ----- the engine's invariants ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS)
def test_padding_batching_and_the_fast_path_keep_every_score(name: str, llama: torch.nn.Module) -> None:
    """A batch of documents of different lengths scores each exactly as alone; graph plumbing changes nothing."""
    model = build(name, llama)
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


# ----- declared capabilities against behaviour -------------------------------------------------------------------
def observed_reach(model, segments: int = 4) -> int | None:
    """How many segments back a change still moves the last segment's NLL (None: from the first, as far as seen).

    Measured on one document: a method whose reach depends on the data must reach all the way on it (retrieval
    retrieves top_k = 3 segments here, every earlier one)."""
    size = model.segment_tokens
    ids = random_documents(1, segments * size, seed=7)
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), size)
    with torch.no_grad():
        base = score_segments(model, batch)[0][0, -1]
        reach = 0
        for back in range(1, segments):
            changed = ids.clone()
            start = (segments - 1 - back) * size
            changed[0, start : start + size] = (changed[0, start : start + size] + 101) % 256
            again = segment_batch(changed, torch.tensor([ids.shape[1]]), size)
            if (score_segments(model, again)[0][0, -1] - base).abs() > 1e-5:
                reach = back
    return None if reach == segments - 1 else reach


def check_state_reach(model) -> None:
    observed = observed_reach(model)
    assert observed == model.state_reach, (
        f"{model.name} declares state_reach = {model.state_reach}, but a segment's output depends on segments "
        f"{observed if observed is not None else 'all the way'} back")


def check_layout(model) -> None:
    """The backbone sees at most L positions a step: exactly [read m | sensory k | S | write m] (no read slot:
    [k | S | m]) for a method on the shared layout (retrieval lays out its own room); and next_state gets layers
    exactly when the method is per-layer."""
    size, seen, given = model.segment_tokens, [], []
    hook = model.backbone.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    real_next = model.next_state
    model.next_state = lambda *args, **kwargs: (given.append(kwargs.get("layers", args[4] if len(args) > 4 else None)),
                                                real_next(*args, **kwargs))[1]
    try:
        ids = random_documents(1, 3 * size)
        with torch.no_grad():
            score_segments(model, segment_batch(ids, torch.tensor([3 * size]), size))
    finally:
        hook.remove()
        del model.next_state
    expected = model.memory_slots * model.memory_tokens + model.sensory_tokens + size
    assert max(seen) <= model.segment_length, (model.name, seen)
    shared = model.segment_length == expected  # S = L - slots x m - k
    assert seen[-1] == expected or not shared, (model.name, seen, expected)
    assert all((layers is not None) == model.per_layer for layers in given), model.name


def check_hooks(model) -> None:
    """Every call into the backbone (scoring, forward, answers, generation, summaries) runs inside backbone_hooks."""
    depth, calls, outside = [0], [], []
    real = model.backbone_hooks

    @contextlib.contextmanager
    def counted(*args, **kwargs):
        depth[0] += 1
        try:
            with real(*args, **kwargs) as capture:
                yield capture
        finally:
            depth[0] -= 1

    def spy(module, args, kwargs):
        calls.append(1)
        if depth[0] == 0:
            outside.append(module.__class__.__name__)

    model.backbone_hooks = counted
    hooks = [m.register_forward_pre_hook(spy, with_kwargs=True) for m in (model.backbone, model.backbone.base_model)]
    try:
        size = model.segment_tokens
        ids = random_documents(2, 3 * size)
        batch = segment_batch(ids, torch.tensor([3 * size, 2 * size + 5]), size)
        with torch.no_grad():
            score_segments(model, batch)
            state = model.initial_state(2)
            model(state, batch.segments[:, 0], batch.lengths[:, 0])
            model.predict(state, batch.segments[:, 0], batch.lengths[:, 0], batch.targets[:, 0])
        greedy_generate(model, ids[0, : 2 * size], size + 3)
    finally:
        for hook in hooks:
            hook.remove()
        del model.backbone_hooks
    assert calls and outside == [], f"{model.name}: backbone calls outside backbone_hooks: {outside}"
    assert not any(block._forward_pre_hooks or block._forward_hooks for block in model._blocks)


def check_record_columns(model) -> None:
    shared = {c.name for c in COLUMNS}
    declared = {c.name for c in model.record_schema}
    columns = set(model.record_columns())
    assert columns <= shared | declared, f"{model.name} records undeclared columns {columns - shared - declared}"
    assert declared <= columns, f"{model.name} declares columns it never fills: {declared - columns}"


def check_compared_with(model) -> None:
    references = model.compared_with
    assert isinstance(references, tuple), f"{model.name}.compared_with must be a tuple of method names"
    assert set(references) <= set(METHODS) - {model.name}, f"{model.name} is compared with unregistered {references}"


CHECKS = [check_state_reach, check_layout, check_hooks, check_record_columns, check_compared_with]


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
@pytest.mark.parametrize("name", METHODS)
def test_declared_capabilities_are_what_the_method_does(name: str, check, llama: torch.nn.Module) -> None:
    check(build(name, llama))


@dataclasses.dataclass
class ForgetfulConfig(RMTConfig):
    pass


class Forgetful(RMT):
    """Says nothing passes between segments (the answer pass would then skip the context), but carries a memory."""

    name = "forgetful"
    label = "forgetful"
    config_class = ForgetfulConfig
    state_reach = 0


@dataclasses.dataclass
class LongSightedConfig(OverlapConfig):
    pass


class LongSighted(Overlap):
    """Says it carries a memory, but its overlap reaches one segment back only."""

    name = "long-sighted"
    label = "long-sighted"
    config_class = LongSightedConfig
    state_reach = None


class Miscounted(RMT):
    """Says m = 1 but reads two memory rows."""

    name = "miscounted"
    label = "miscounted"
    config_class = dataclasses.make_dataclass("MiscountedConfig", [], bases=(RMTConfig,))

    def read_memory(self, state, summary):
        return torch.cat([state.memory, state.memory], dim=1), None


def test_a_method_whose_capabilities_lie_fails_the_checks(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    forgetful = Forgetful(llama, ForgetfulConfig(), L).eval()
    with pytest.raises(AssertionError, match="state_reach = 0"):
        check_state_reach(forgetful)
    long_sighted = LongSighted(llama, LongSightedConfig(sensory_tokens=4), L).eval()
    with pytest.raises(AssertionError, match="state_reach = None"):
        check_state_reach(long_sighted)
    with pytest.raises(HmtbenchError, match="declares m = 1"):
        check_layout(Miscounted(llama, Miscounted.config_class(), L).eval())
    with pytest.raises(TypeError, match="per_layer but does not define read_layer"):
        type("Hookless", (RMT,), {"per_layer": True})
    with pytest.raises(TypeError, match="names 'next_state', which is not a static method"):
        type("Uncompilable", (RMT,), {"compiled_parts": ("next_state",)})  # it reads self: no shared compilation
