"""Typed run configurations (dataclasses) that round-trip to YAML recipes and into the result record."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from hmtbench.errors import HmtbenchError, did_you_mean

T = TypeVar("T")


@dataclass
class MemorySettings:
    """Segment and memory settings shared by all methods; each method reads the fields it has."""

    segment_length: int = 256  # L: positions per backbone step (memory and sensory included)
    memory_tokens: int = 1  # m (RMT; HMT uses 1)
    sensory_tokens: int = 0  # k (HMT)
    recall_context: int = 100  # N (HMT)
    recall_hidden_dim: int = 4096  # h (HMT)
    sum_fraction: float = 0.5  # share of a segment the HMT summary reads
    stage: int = 2  # HMT stage: 1 = memory + sensory, 2 = with recall
    summary_pass: str = "auto"  # HMT evaluation: summaries ahead (batched passes) | inline (in the step before) | auto


@dataclass
class DataSettings:
    dataset: str = "python-stdlib"  # corpus name, local .txt/.jsonl/.parquet path or folder
    split: str = "test"
    test_length: int = 2000  # tokens per document (paper default)
    max_docs: int | None = None


@dataclass
class EvalConfig:
    backbone: str = "smollm2-135m"
    method: str = "plain"
    memory: MemorySettings = field(default_factory=MemorySettings)
    data: DataSettings = field(default_factory=DataSettings)
    protocol: str = "stream"  # stream | paper
    batch_size: int = 4
    max_windows: int | None = 200  # paper protocol: the reference's 100 batches x 2
    checkpoint: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 3407  # the reference's seed
    out: str = "results"


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts; an unknown key is an error with a did-you-mean."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise HmtbenchError(f"unknown setting '{where}{key}'{did_you_mean(key, names)}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{where}{key}.")
        kwargs[key] = _coerce(value, kind, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Numbers written as YAML strings (``5e-5`` is a string in YAML 1.1) become the field's type."""
    number = float if kind in (float, float | None) else int if kind in (int, int | None) else None
    if number is None or value is None or isinstance(value, bool) or isinstance(value, number):
        return value
    try:
        return number(value)
    except (TypeError, ValueError):
        raise HmtbenchError(f"setting '{name}' must be a number, got {value!r}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    file = Path(path)
    if not file.is_file():
        raise HmtbenchError(f"recipe '{path}' does not exist; see the recipes/ folder")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict):
        raise HmtbenchError(f"recipe '{path}' must be a mapping of settings")
    return data


def dump_yaml(config: Any) -> str:
    import yaml

    return yaml.safe_dump(to_dict(config), sort_keys=False)


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to nested dicts in place."""
    import yaml

    if "=" not in assignment:
        raise HmtbenchError(f"--set expects key=value, got '{assignment}'")
    key, raw = assignment.split("=", 1)
    *parents, leaf = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HmtbenchError(f"--set {key}: '{part}' is not a group of settings")
    node[leaf] = yaml.safe_load(raw)
