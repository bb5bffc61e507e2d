"""--grad-checkpoint recomputes each segment in the backward pass: the same loss and gradients, less memory kept."""

from __future__ import annotations

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
    kept = [0]

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        kept[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        answer_pass(model, model, batch, None, recompute)
    return kept[0]


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
