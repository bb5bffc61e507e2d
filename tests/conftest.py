"""Shared fixtures: tiny random backbones of real architectures, built in memory (no network)."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path
from types import ModuleType

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from hmtbench.backbones.tiny import TINY_CONFIGS, tiny_model  # noqa: E402

ARCHITECTURES = list(TINY_CONFIGS)
# Small settings for every registered method: each takes the fields it has (build_method), so a suite that loops
# over hmtbench.methods.method_names() covers a method the moment it is registered.
METHOD_SETTINGS = {"memory_tokens": 1, "sensory_tokens": 4, "recall_context": 3, "recall_hidden_dim": 16, "key_dim": 8}

# Tiny models gain nothing from intra-op threads, and on a small shared CPU the thread pool's
# contention makes the suite ~10x slower (measured: 105 s -> 10 s for the RMT/HMT tests).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def no_network():
    """Any attempt to reach another machine fails the test that makes it (loopback stays allowed)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(sock: socket.socket, address) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"tests run offline: refused a connection to {address}")

    socket.socket.connect = lambda sock, address: (refuse(sock, address), real_connect(sock, address))[1]
    socket.socket.connect_ex = lambda sock, address: (refuse(sock, address), real_connect_ex(sock, address))[1]
    yield
    socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex


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


def registered(*cases: tuple[str, dict, str]) -> list:
    """pytest params (name, settings) for every registered method with ``METHOD_SETTINGS``, then ``variants``."""
    from hmtbench.methods import method_names

    return [pytest.param(name, dict(METHOD_SETTINGS), id=name) for name in method_names()] + variants(*cases)


def variants(*cases: tuple[str, dict, str]) -> list:
    """pytest params (name, settings) for (name, settings over ``METHOD_SETTINGS``, id) cases."""
    return [pytest.param(name, {**METHOD_SETTINGS, **settings}, id=case) for name, settings, case in cases]


def build_method(name: str, backbone: torch.nn.Module, settings: dict | None = None):
    """Method ``name`` around ``backbone`` from flat settings: ``segment_length`` and any method's fields
    (each method takes its own, so one dict serves a parametrised test over methods)."""
    import dataclasses

    from hmtbench.config import method_config
    from hmtbench.methods import config_class, method_class

    values = dict(settings or {})
    segment_length = values.pop("segment_length", 256)
    own = {f.name for f in dataclasses.fields(config_class(name))}
    config = method_config(name, {k: v for k, v in values.items() if k in own})
    return method_class(name)(backbone, config, segment_length)


def one_error(result, *phrases: str) -> str:
    """The CLI ``result`` of bad input: exit code 2, no traceback, one ``error:`` line holding every phrase."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def exercised(method):
    """``method`` with every added parameter that starts at zero drawn at random (seeded), so its memory acts.

    An untrained ARMT writes nothing (its value projection starts at zero, as the official code's), which would
    make any test of what its memory carries pass trivially.
    """
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in method.added_parameters().values():
            if not param.any():
                values = torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5
                param.copy_(values.to(param.dtype))
    return method


def load_script(name: str) -> ModuleType:
    """scripts/NAME.py as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
