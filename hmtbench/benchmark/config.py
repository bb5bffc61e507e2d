"""`hmtbench bench`'s settings: the cases to measure and how to time them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import EngineOptions, RunSettings, from_dict, method_config, parse_counts
from hmtbench.methods import method_names as all_methods
from hmtbench.methods.config import setting
from hmtbench.resolve import check_method_keys, method_names, names_per_method, resolve_method

MODES = ("eval", "train")


@dataclass
class BenchConfig(RunSettings):
    """The cases (``benchmark.cases``): every mode x batch size x method x length; lists hold what the user swept."""

    method: list[Any] = setting(help="Methods to measure, comma-separated [default: every registered one].",
                                default_factory=lambda: [method_config(name) for name in all_methods()])
    lengths: list[int] = setting(help="Context lengths in tokens, comma-separated (k = 1024).",
                                 default_factory=lambda: [2**k for k in range(11, 17)])
    batch_size: list[int] = setting(help="Batch sizes, comma-separated.", default_factory=lambda: [1])
    train_batch_size: list[int] | None = setting(None, "Batch sizes of the training step [default: --batch-size].")
    mode: list[str] = setting(help="eval (the segment loop) | train (one step) | eval,train.",
                              default_factory=lambda: list(MODES))
    bptt_depth: int = setting(6, "D: segments per window of the training step.")
    train: str = setting("memory", "What the training step trains: memory (backbone frozen) | lora (r 8, peft's "
                                   "targets) | full.")
    grad_checkpoint: bool = setting(False, "The training step recomputes each segment in its backward pass.")
    recompute_share: float = setting(1.0, "With --grad-checkpoint: the share of the window's segments recomputed.")
    layer_checkpoint: bool = setting(False, "The training step recomputes each decoder block in its backward pass "
                                            "(train.layer_checkpoint).")
    engine: EngineOptions = field(default_factory=EngineOptions)
    warmup: int = setting(1, "Untimed calls per case (compilation, graph capture).")
    repeat: int = setting(3, "Timed calls per case at most; the median is recorded.")
    max_seconds: float = setting(5.0, "Stop timing a case after this long (one call at least).")
    max_batch_tokens: int | None = setting(None, "Leave out evaluation cases holding more tokens per batch.")
    out: str = setting("results/bench", "Folder for the parquet records.")


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
    return from_dict(BenchConfig, values)


