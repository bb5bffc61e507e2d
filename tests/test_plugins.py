"""The registry checks what it registers, and a method from outside the package, registered through an entry point,
passes the conformance suite (tests/test_conformance.py) touching nothing else."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hmtbench import methods
from hmtbench.errors import HmtbenchError
from hmtbench.generation import greedy_generate
from hmtbench.methods import method_names
from hmtbench.methods.base import SegmentMethod
from hmtbench.methods.rmt import RMT, RMTConfig
from hmtbench.results.schema import COLUMNS, record_schema
from tests.conftest import random_documents
from tests.test_conformance import (
    CHECKS,
    Forgetful,
    ForgetfulConfig,  # noqa: F401 (registered by name below)
    L,
    build,
    corpus,  # noqa: F401 (a fixture: test_methods_from_a_plugin_pass_the_suite takes it)
    records,
    run,
)


def test_the_registry_checks_what_it_registers(monkeypatch) -> None:
    def register(name: str, target: str) -> None:
        monkeypatch.setitem(methods.METHODS, name, target)

    register("forgetful", f"{__name__}:Forgetful")
    assert methods.method_class("forgetful") is Forgetful  # a well-formed method loads
    register("renamed", f"{__name__}:Forgetful")
    with pytest.raises(HmtbenchError, match="declares name = 'forgetful'; its class must say 'renamed'"):
        methods.method_class("renamed")
    register("not-a-method", f"{__name__}:ForgetfulConfig")
    with pytest.raises(HmtbenchError, match="not a SegmentMethod subclass"):
        methods.method_class("not-a-method")
    register("half", f"{__name__}:Half")
    with pytest.raises(HmtbenchError, match="does not define next_state"):
        methods.method_class("half")
    register("unexplained", f"{__name__}:Unexplained")
    with pytest.raises(HmtbenchError, match=r"settings \['depth'\] have no help"):
        methods.method_class("unexplained")


class Half(RMT):
    name = "half"
    label = "half"
    config_class = dataclasses.make_dataclass("HalfConfig", [], bases=(RMTConfig,))
    next_state = SegmentMethod.next_state  # the abstract one: not defined


@dataclasses.dataclass
class UnexplainedConfig(RMTConfig):
    depth: int = 3


class Unexplained(RMT):
    name = "unexplained"
    label = "unexplained"
    config_class = UnexplainedConfig


# ----- a method from outside the package ------------------------------------------------------------------------
PLUGIN = '''
"""Two methods as a third-party package writes them: per-layer state, with and without a read slot."""

from dataclasses import dataclass

import torch
from torch import Tensor

from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod, setting, trained_field
from hmtbench.methods.memory import init_memory


@dataclass
class EchoConfig(MethodConfig):
    memory_tokens: int = trained_field(1, "m: write slots after the text")
    echo_scale: float = setting(0.5, "How much of each layer's remembered output every position reads")


@dataclass(frozen=True)
class EchoState(MemoryState):
    echo: Tensor  # (B, n_layers, d) each block's output at the write slots, averaged over them


class Echo(SegmentMethod):
    """Every block's input gains the block's own output at the previous segment's write slots."""

    name = "echo"
    label = "Echo"
    config_class = EchoConfig
    read_slot = False
    per_layer = True

    def __init__(self, backbone, config, segment_length):
        super().__init__(backbone, config, segment_length)
        self.memory = init_memory(backbone, config.memory_tokens)
        self.width = (backbone.config.num_hidden_layers, backbone.config.hidden_size)

    @property
    def memory_tokens(self):
        return self.config.memory_tokens

    def initial_state(self, batch_size):
        return EchoState(batch_size, echo=torch.zeros(batch_size, *self.width, device=self.device))

    def read_memory(self, state, summary):
        return self.memory.expand(state.batch_size, -1, -1), None

    def read_layer(self, state, layer, hidden):
        return hidden + self.config.echo_scale * state.echo[:, layer, None].to(hidden.dtype)

    def next_state(self, state, written, segment_ids, side=None, layers=None):
        return EchoState(state.batch_size, echo=layers.float().mean(2))


@dataclass
class EchoSlotConfig(EchoConfig):
    pass


class EchoSlot(Echo):
    """Echo with RMT's read slot as well: the learned memory is read before the text too."""

    name = "echo-slot"
    label = "Echo+slot"
    config_class = EchoSlotConfig
    read_slot = True
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch) -> list[str]:
    """The plugin module on the path and registered through the entry-point group, as an installed package's."""
    from importlib import metadata

    (tmp_path / "echo_methods.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    points = [metadata.EntryPoint(name, f"echo_methods:{cls}", methods.ENTRY_POINTS)
              for name, cls in (("echo", "Echo"), ("echo-slot", "EchoSlot"))]
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: points if group == methods.ENTRY_POINTS else [])
    methods._plugins.cache_clear()
    from hmtbench.commands import flags as method_flags

    method_flags.settings_table.cache_clear()
    method_flags.method_params.cache_clear()
    yield ["echo", "echo-slot"]
    methods._plugins.cache_clear()
    method_flags.settings_table.cache_clear()
    method_flags.method_params.cache_clear()
    sys.modules.pop("echo_methods", None)


def test_methods_from_a_plugin_pass_the_suite(plugin: list[str], llama: torch.nn.Module, corpus: Path,  # noqa: F811
                                              tmp_path: Path) -> None:
    """A seventh and eighth method, registered from outside the package: the registry lists them, the checks pass,
    decoding equals teacher forcing, and the CLI runs them with their own settings as flags (--echo-scale)."""
    from hmtbench.generation import prompt_layout
    from tests.test_generation import teacher_forced_logits

    assert method_names()[-2:] == plugin
    for name in plugin:
        model = build(name, llama)
        for check in CHECKS:
            check(model)
        prompt = random_documents(1, 40, seed=5)
        out = greedy_generate(model, prompt[0], 2 * model.segment_tokens, keep_logits=True)
        ids = torch.cat([prompt, torch.tensor([out.token_ids[:-1]])], dim=1)
        expected = teacher_forced_logits(model, ids, first=prompt_layout(model, 40).first)[39:]
        torch.testing.assert_close(torch.stack(out.logits), expected, atol=2e-4, rtol=1e-4)
        run("eval-ppl", "--method", name, "--dataset", str(corpus), "--segment-length", str(L), "--test-length", "96",
            "--echo-scale", "0.25", "--out", str(tmp_path / name))
        row = records(tmp_path / name).iloc[0]
        assert row["status"] == "success" and json.loads(row["config"])["method"]["echo_scale"] == 0.25
        assert [c.name for c in record_schema(name)] == [c.name for c in COLUMNS]
