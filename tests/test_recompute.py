"""--grad-checkpoint recomputes each segment in the backward pass: the same loss and gradients, less memory kept."""

from __future__ import annotations

import pytest
import torch

from hmtbench.training.config import TrainSettings
from hmtbench.training.objectives import window_loss
from tests.conftest import build_method


@pytest.mark.parametrize("name", ["rmt", "hmt", "overlap"])
def test_recomputed_segments_give_the_same_loss_and_gradients(name: str, llama: torch.nn.Module) -> None:
    ids = torch.randint(0, 256, (2, 4 * 20), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)  # the same initial memory both times
        model = build_method(name, llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16})
        model.backbone.requires_grad_(True)
        loss, _ = window_loss(model, ids[:, : 4 * model.segment_tokens], TrainSettings(grad_checkpoint=recompute))
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        model.zero_grad(set_to_none=True)
    (plain_loss, plain_grads), (recomputed_loss, recomputed_grads) = grads
    assert torch.equal(plain_loss, recomputed_loss) and plain_grads.keys() == recomputed_grads.keys()
    for key, value in plain_grads.items():
        torch.testing.assert_close(recomputed_grads[key], value, rtol=1e-5, atol=1e-7)
