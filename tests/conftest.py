"""Shared fixtures: tiny random backbones of real architectures, built in memory (no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hmtbench.backbones.tiny import TINY_CONFIGS, tiny_model  # noqa: E402

ARCHITECTURES = list(TINY_CONFIGS)

# Tiny models gain nothing from intra-op threads, and on a small shared CPU the thread pool's
# contention makes the suite ~10x slower (measured: 105 s -> 10 s for the RMT/HMT tests).
torch.set_num_threads(1)


@pytest.fixture(params=ARCHITECTURES)
def architecture(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backbone(architecture: str) -> torch.nn.Module:
    return tiny_model(architecture)


@pytest.fixture
def llama() -> torch.nn.Module:
    return tiny_model("llama")


def random_documents(count: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, length), generator=generator)
