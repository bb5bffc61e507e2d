"""Shared fixtures: tiny random backbones of real architectures, built in memory (no network)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hmtbench.backbones.tiny import TINY_CONFIGS, tiny_model  # noqa: E402

ARCHITECTURES = list(TINY_CONFIGS)


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
