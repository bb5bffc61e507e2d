"""--grad-checkpoint recomputes each segment in the backward pass, train.layer_checkpoint each decoder block: the same
loss and gradients, less memory kept."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from hmtbench.errors import HmtbenchError
from hmtbench.training.config import TrainSettings
from hmtbench.training.objectives import window_loss
from tests.conftest import build_method, exercised, registered


@pytest.mark.parametrize(("name", "own"), registered())
def test_recomputed_segments_give_the_same_loss_and_gradients(name: str, own: dict, llama: torch.nn.Module) -> None:
    ids = torch.randint(0, 256, (2, 4 * 20), generator=torch.Generator().manual_seed(0))
    grads = []
    for settings in (TrainSettings(), TrainSettings(grad_checkpoint=True),
                     TrainSettings(grad_checkpoint=True, recompute_share=0.5)):
        torch.manual_seed(0)  # the same initial memory every time
        model = exercised(build_method(name, llama, {**own, "segment_length": 24}))
        model.backbone.requires_grad_(True)
        loss, _ = window_loss(model, ids[:, : 4 * model.segment_tokens], settings)
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        model.zero_grad(set_to_none=True)
    (plain_loss, plain_grads), *recomputed = grads
    for recomputed_loss, recomputed_grads in recomputed:
        assert torch.equal(plain_loss, recomputed_loss) and plain_grads.keys() == recomputed_grads.keys()
        for key, value in plain_grads.items():
            torch.testing.assert_close(recomputed_grads[key], value, rtol=1e-5, atol=1e-7)


def test_a_recompute_share_checkpoints_the_earliest_segments(llama: torch.nn.Module, monkeypatch) -> None:
    import hmtbench.engine as engine

    model = build_method("rmt", llama, {"segment_length": 24})
    ids = torch.randint(0, 256, (2, 8 * model.segment_tokens), generator=torch.Generator().manual_seed(0))
    chosen: list[bool] = []
    real = engine.segment_step
    monkeypatch.setattr(engine, "segment_step", lambda recompute: (chosen.append(recompute), real(recompute))[1])
    for share, expected in ((1.0, [True] * 8), (0.5, [True] * 4 + [False] * 4), (0.4, [True] * 3 + [False] * 5)):
        chosen.clear()
        window_loss(model, ids, TrainSettings(grad_checkpoint=True, recompute_share=share))
        assert chosen == expected, share
    chosen.clear()
    window_loss(model, ids, TrainSettings(recompute_share=0.5))  # no --grad-checkpoint: the share does nothing
    assert chosen == [False] * 8
    with pytest.raises(HmtbenchError, match="--recompute-share"):
        TrainSettings(recompute_share=0)


def test_hmt_summaries_are_recomputed_with_their_segments(llama: torch.nn.Module, monkeypatch) -> None:
    """The summaries computed ahead follow the share: those of the checkpointed segments are recomputed, the rest
    keep their activations (so the share is that of every position the backbone runs, as the roofline counts)."""
    import hmtbench.methods.hmt as hmt

    model = build_method("hmt", llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16})
    ids = torch.randint(0, 256, (2, 8 * model.segment_tokens), generator=torch.Generator().manual_seed(0))
    recomputed_rows: list[int] = []
    real = hmt.checkpoint
    monkeypatch.setattr(hmt, "checkpoint", lambda run, ids, *rest, **kw: (recomputed_rows.append(len(ids)),
                                                                           real(run, ids, *rest, **kw))[1])
    for settings, expected in ((TrainSettings(grad_checkpoint=True), 7 * 2),  # segments 1-7 of both documents
                               (TrainSettings(grad_checkpoint=True, recompute_share=0.5), 3 * 2),  # 1-3 of 0-3
                               (TrainSettings(grad_checkpoint=True, recompute_share=0.1), 0),  # 1 segment: no summary
                               (TrainSettings(), 0)):
        recomputed_rows.clear()
        window_loss(model, ids, settings)
        assert sum(recomputed_rows) == expected, settings


def kept_bytes(model, segments: int, recompute: float) -> int:
    """Bytes autograd keeps for the backward pass of an HMT answer pass over ``segments`` segments."""
    from hmtbench.qa.answers import answer_pass, answer_segments, qa_rows

    S = model.segment_tokens
    prompts = [torch.randint(0, 256, (segments * S - 20,), generator=torch.Generator().manual_seed(row))
               for row in range(2)]
    batch = answer_segments(*qa_rows(prompts, [[65, 66]] * 2), S, model.sensory_tokens)
    assert batch.segments.shape[1] == segments
    with bytes_kept_for_backward() as kept:
        answer_pass(model, model, batch, None, recompute)
    return kept[0]


@contextlib.contextmanager
def bytes_kept_for_backward() -> Iterator[list[int]]:
    """Inside: the bytes autograd keeps for the backward pass, counted in the list's one item (a recomputed region
    keeps its own apart, so they are not counted)."""
    kept = [0]

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        yield kept


def test_the_activations_kept_fall_with_the_recompute_share(llama: torch.nn.Module) -> None:
    model = build_method("hmt", llama, {"segment_length": 32, "sensory_tokens": 4, "recall_hidden_dim": 16})
    kept = [kept_bytes(model, 12, share) for share in (0.0, 0.5, 1.0)]
    assert kept[0] > kept[1] > kept[2]


def test_recompute_keeps_no_summary_activations_so_memory_per_segment_is_the_state(llama: torch.nn.Module) -> None:
    """HMT's summaries are computed ahead, in batched passes; under --grad-checkpoint they are recomputed too. Before,
    their activations (half a segment step's each) were most of a long training context's memory: 98 GB for 64
    segments at batch 16 on SmolLM2 (results/h200-long-curriculum-64)."""
    model = build_method("hmt", llama, {"segment_length": 32, "sensory_tokens": 4, "recall_hidden_dim": 16})
    per_segment = {recompute: (kept_bytes(model, 12, recompute) - kept_bytes(model, 4, recompute)) / 8
                   for recompute in (False, True)}
    assert per_segment[True] < per_segment[False] / 8  # measured: 0.06 MB against 1.7 MB without recompute


@pytest.mark.parametrize(("name", "own"), registered())
def test_checkpointed_layers_give_the_same_loss_and_gradients(name: str, own: dict, llama: torch.nn.Module) -> None:
    """train.layer_checkpoint recomputes each decoder block in the backward pass: every method's loss and gradients are
    those of the plain backward, alone or under per-segment recomputation, and the blocks really run again."""
    from hmtbench.training.layer_recompute import checkpoint_blocks

    ids = torch.randint(0, 256, (2, 4 * 20), generator=torch.Generator().manual_seed(0))
    results, recomputed, saved = [], [], []
    for layers, settings in ((False, TrainSettings()), (True, TrainSettings()),
                             (True, TrainSettings(grad_checkpoint=True))):
        torch.manual_seed(0)
        model = exercised(build_method(name, llama, {**own, "segment_length": 24}))  # its blocks wrapped from run 2
        model.backbone.requires_grad_(True)
        if layers:
            assert checkpoint_blocks(model.backbone) == len(model.backbone.model.layers)
        calls: list[bool] = []  # inside the block, so a recomputation counts (a pre-hook: the recomputation stops
        hook = model.backbone.model.layers[0].mlp.register_forward_pre_hook(  # once it has what the backward needs)
            lambda module, args, calls=calls: calls.append(True))
        model.train()
        with bytes_kept_for_backward() as kept:
            loss, _ = window_loss(model, ids[:, : 4 * model.segment_tokens], settings)
        forward_calls = len(calls)
        loss.backward()
        model.eval()
        hook.remove()
        recomputed.append(len(calls) - forward_calls)
        saved.append(kept[0])
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        model.zero_grad(set_to_none=True)
    assert recomputed[0] == 0 and 0 < recomputed[1] < recomputed[2], recomputed
    assert saved[1] < 0.5 * saved[0], saved  # 0.19-0.41 of it on two blocks: their inputs, not their activations
    (plain_loss, plain_grads), *checkpointed = results
    for loss, grads in checkpointed:
        torch.testing.assert_close(loss, plain_loss, rtol=1e-6, atol=1e-7)
        assert grads.keys() == plain_grads.keys()
        for key, value in plain_grads.items():
            torch.testing.assert_close(grads[key], value, rtol=1e-5, atol=1e-7)


def test_train_with_layer_checkpoint_logs_the_same_steps_and_records_it(tmp_path: Path) -> None:
    """``hmtbench train --set train.layer_checkpoint=true``: the same losses and gradient norms step after step, and
    the setting in the run's config and record."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from hmtbench.cli import app

    (tmp_path / "corpus.txt").write_text("the cat sat on the mat. the dog ate the bone. " * 120)
    logs = {}
    for flag in ([], ["--set", "train.layer_checkpoint=true"]):
        out = tmp_path / ("layers" if flag else "plain")
        result = CliRunner().invoke(app, [
            "train", "--backbone", "random:llama", "--method", "rmt", "--train", "lora", "--batch-size", "2",
            "--bptt-depth", "2", "--segment-length", "24", "--lr", "0.01", "--seed", "0", "--device", "cpu",
            "--steps", "3", "--set", "train.log_every=1", "--dataset", str(tmp_path / "corpus.txt"),
            "--output-dir", str(out / "run"), "--out", str(out / "results"), *flag])
        assert result.exit_code == 0, result.output
        lines = (out / "run" / "train" / "log.jsonl").read_text().splitlines()
        logs[bool(flag)] = [json.loads(line)[key] for line in lines for key in ("loss", "grad_norm")]
        record = pd.concat(pd.read_parquet(p) for p in (out / "results").glob("*.parquet"))
        assert json.loads(record["config"].iloc[0])["train"]["layer_checkpoint"] is bool(flag)
    assert len(logs[True]) == 6 and logs[True] == pytest.approx(logs[False], rel=1e-5)
