"""`hmtbench eval-ppl`'s settings: the corpus, the protocol and the batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import DataSettings, EngineOptions, method_field
from hmtbench.resolve import named_runs, resolve


@dataclass
class EvalConfig:
    backbone: str = "smollm2-135m"
    method: Any = method_field()  # the method's config dataclass (hmtbench.methods)
    segment_length: int = 256  # L: positions per backbone step, memory and sensory included (every method)
    data: DataSettings = field(default_factory=DataSettings)
    protocol: str = "stream"  # stream | paper
    batch_size: int = 4
    max_windows: int | None = 200  # paper protocol: the reference's 100 batches x 2
    checkpoint: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 3407  # the reference's seed
    out: str = "results"
    name: str | None = None  # the run's short name in tables and legends (one per method: resolve.named_runs)
    selected_on: str | None = None  # the split this configuration was chosen on (validation | test)


def eval_configs(given: dict[str, Any]) -> list[EvalConfig]:
    """One typed config per method asked for, the checkpoint's settings filling what was not given."""
    return named_runs(resolve(EvalConfig, given, given.get("checkpoint")))
