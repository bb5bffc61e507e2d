"""`hmtbench eval-ppl`'s settings: the corpus, the protocol and the batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import DataSettings, EngineOptions, RunSettings
from hmtbench.resolve import named_runs, resolve


@dataclass
class EvalConfig(RunSettings):
    data: DataSettings = field(default_factory=DataSettings)
    protocol: str = "stream"  # stream | paper
    batch_size: int = 4
    max_windows: int | None = 200  # paper protocol: the reference's 100 batches x 2
    checkpoint: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    selected_on: str | None = None  # the split this configuration was chosen on (validation | test)


def eval_configs(given: dict[str, Any]) -> list[EvalConfig]:
    """One typed config per method asked for, the checkpoint's settings filling what was not given."""
    return named_runs(resolve(EvalConfig, given, given.get("checkpoint")))
