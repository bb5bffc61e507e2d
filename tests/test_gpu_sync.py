"""On a GPU, a language-modelling training step queues its work without waiting for the device.

``torch.cuda.set_sync_debug_mode("error")`` turns any host synchronisation (``.item()``, a copy from
pageable memory, a boolean read-back) into an error; the steps between two logged steps run under it.
"""

from __future__ import annotations

import pytest
import torch

from hmtbench.training.config import TrainSettings
from hmtbench.training.loop import train_stage
from hmtbench.training.objectives import LanguageModelling
from hmtbench.training.windows import WindowSampler
from tests.conftest import build_method, random_documents

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", ["rmt", "hmt"])
def test_steps_between_logs_never_wait_for_the_device(name: str, llama: torch.nn.Module, tmp_path) -> None:
    model = build_method(name, llama.cuda(), {"segment_length": 16, "sensory_tokens": 4})
    model.requires_grad_(True)
    model.backbone.requires_grad_(False)
    steps = 6
    settings = TrainSettings(steps=steps, batch_size=2, bptt_depth=3, log_every=steps, checkpoint_every=steps)
    documents = random_documents(4, 400).tolist()
    sampler = WindowSampler(documents, 3 * model.segment_tokens, model.segment_tokens, 0, "random")
    checked = []

    def watch(done: int, entry) -> None:  # steps 2 .. steps-1 run with any synchronisation an error
        torch.cuda.set_sync_debug_mode("error" if 1 <= done < steps - 1 else "default")
        checked.append(done)

    try:
        outcome = train_stage(model, LanguageModelling(sampler, settings), settings, steps, tmp_path, {}, watch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert checked == list(range(1, steps + 1)) and outcome.final_loss > 0
