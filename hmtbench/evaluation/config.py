"""`hmtbench eval-ppl`'s settings: the corpus, the protocol and the batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import DataSettings, EngineOptions, RunSettings, selected_on_field
from hmtbench.methods.config import setting
from hmtbench.resolve import gridded, resolve


@dataclass
class EvalConfig(RunSettings):
    data: DataSettings = field(default_factory=DataSettings)
    protocol: str = setting("stream", "stream: each token scored once | paper: the reference's windows.")
    batch_size: int = setting(4, "Documents (paper: windows) per batch.")
    max_windows: int | None = setting(200, "Paper protocol: windows to score (the reference's 100 batches x 2).")
    checkpoint: str | None = setting(None, "Folder written by `hmtbench train`: its tensors, and the settings you "
                                           "do not give (backbone too).")
    engine: EngineOptions = field(default_factory=EngineOptions)
    selected_on: str | None = selected_on_field()


def eval_configs(given: dict[str, Any], grid: Sequence[str] | None = None) -> list[EvalConfig]:
    """One typed config per method asked for, the checkpoint's settings filling what was not given; with ``grid``,
    one per combination of its values (``resolve.gridded``)."""
    return gridded(given, grid, lambda settings: resolve(EvalConfig, settings, settings.get("checkpoint")))
