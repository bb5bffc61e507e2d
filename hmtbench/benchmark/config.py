"""`hmtbench bench`'s settings: the cases to measure and how to time them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import EngineOptions, RunSettings, from_dict, method_config, parse_counts
from hmtbench.methods import method_names as all_methods
from hmtbench.resolve import check_method_keys, method_names, names_per_method, resolve_method

MODES = ("eval", "train")
# BenchConfig's list fields by the settings key (and flag) that fills them
SETTINGS_NAMES = {"batch_sizes": "batch_size", "train_batch_sizes": "train_batch_size", "modes": "mode"}


@dataclass
class BenchConfig(RunSettings):
    # one config per method to measure (default: every registered method)
    method: list[Any] = field(default_factory=lambda: [method_config(name) for name in all_methods()])
    lengths: list[int] = field(default_factory=lambda: [2**k for k in range(11, 17)])  # 2k ... 64k tokens
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    train_batch_sizes: list[int] | None = None  # of the training step (None: batch_sizes)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    bptt_depth: int = 6  # D: segments per training window
    train: str = "memory"  # the training step: memory (backbone frozen) | lora (r 8, peft's targets) | full
    grad_checkpoint: bool = False  # the training step recomputes each segment in its backward pass
    recompute_share: float = 1.0  # with grad_checkpoint: the share of the window's segments recomputed
    engine: EngineOptions = field(default_factory=EngineOptions)
    warmup: int = 1  # untimed calls per case (compilation and graph capture happen here)
    repeat: int = 3  # timed calls per case, at most
    max_seconds: float = 5.0  # stop timing a case once this much is spent (one call at least)
    max_batch_tokens: int | None = None  # leave out evaluation cases whose batch holds more tokens
    out: str = "results/bench"


def bench_config(given: dict[str, Any]) -> BenchConfig:
    """The typed config from the settings given: count lists parsed, one method config per method asked for."""
    values = dict(given)
    method = values.pop("method", None) or {}
    names = method_names({"method": method}, default=",".join(all_methods()))
    check_method_keys(names, method)
    values["method"] = [resolve_method(name, method, None) for name in names]
    names_per_method(values.get("name"), names)  # a --name that does not fit the methods fails before any work
    for key, flag in (("lengths", "--lengths"), ("batch_size", "--batch-size"), ("train_batch_size",
                                                                                  "--train-batch-size")):
        if isinstance(values.get(key), str):
            values[key] = parse_counts(values[key], flag)
        elif isinstance(values.get(key), int):  # one count, as a recipe may write it
            values[key] = [values[key]]
    if isinstance(values.get("mode"), str):
        values["mode"] = [m.strip() for m in values["mode"].split(",") if m.strip()]
    fields = {settings: field for field, settings in SETTINGS_NAMES.items()}
    values = {fields.get(key, key): value for key, value in values.items()}
    return from_dict(BenchConfig, values)


