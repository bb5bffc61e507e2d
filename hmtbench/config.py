"""Typed run configurations (dataclasses) that round-trip to YAML recipes and into the result record.

Every command's configuration is built on one shared part: ``ModelSettings`` (the backbone, the method, the segment
length, dtype and device: what a command builds) and, for a run that writes records, ``RunSettings`` (its seed,
where the records go, its short name). Each command adds its own fields (``hmtbench.evaluation.config``,
``hmtbench.qa.config``, ``hmtbench.training.config``, ``hmtbench.benchmark.config``, ``hmtbench.lmeval.model``).

A configuration holds a method's own settings as that method's config dataclass (``method``,
written ``{name: hmt, sensory_tokens: 32, ...}`` in YAML) beside the settings every method shares
(``segment_length``, data, dtype, ...). What the user gives (recipe, then flags, then ``--set``)
is gathered into nested dicts first (``gather``), then resolved into typed configs, one per
method (``hmtbench.resolve``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from hmtbench.errors import HmtbenchError, did_you_mean
from hmtbench.methods import config_class
from hmtbench.methods.config import HELP, MethodConfig, setting

T = TypeVar("T")
SEED = 3407  # the reference's seed: every run's default
METHOD_FIELD = "method"  # metadata key of a field holding a method's config dataclass: the default method's name
METHOD_HELP = ("plain | full | overlap | rmt | hmt | armt | retrieval (or an installed plugin's), or several: "
               "plain,rmt,hmt; the method's own settings are flags of their own.")


def selected_on_field() -> Any:
    """An evaluation's ``selected_on``: where its configuration was chosen (``resolve.SELECTED_ON``), recorded."""
    return setting(None, "Where this configuration was chosen: the split its choice was made on (train | validation | "
                         "test), or fixed (set before any evaluation: nothing chosen); recorded, compare shows it.")


def method_field(name: str = "plain", help: str = METHOD_HELP) -> Any:
    """A field holding a method's settings (its config dataclass), ``name``'s defaults unless given."""
    return field(default_factory=lambda: method_config(name), metadata={METHOD_FIELD: name, HELP: help})


def method_config(name: str, values: dict[str, Any] | None = None, where: str = "method.") -> Any:
    """Method ``name``'s config dataclass from ``values`` (its own fields only; unknown keys are an error)."""
    return from_dict(config_class(name), values or {}, where)


@dataclass
class ModelSettings:
    """What every command builds: a method around a backbone, one backbone step of ``segment_length`` positions."""

    backbone: str = setting("smollm2-135m", "Alias (smollm2-135m, opt-2.7b, ...), hub id, model folder, .gguf file, "
                                            "random:llama or random:llama-7b (a paper shape with random weights).")
    method: Any = method_field()  # the method's config dataclass (hmtbench.methods)
    segment_length: int = setting(256, "L: positions per backbone step, memory and sensory included (every method).")
    dtype: str = setting("auto", "auto (bf16 on a GPU, fp32 on CPU; train --train full: fp32 weights under bf16 "
                                 "autocast) | fp32 | bf16 | fp16. A CPU without native bf16 / fp16 (AVX512-BF16, "
                                 "AMX) emulates them, several times slower than fp32; a warning says so.")
    device: str = setting("auto", "auto | cpu | cuda | cuda:1 ...")


@dataclass
class RunSettings(ModelSettings):
    """A run that writes records: its seed, where the records go, its short name."""

    seed: int = setting(SEED, "Random seed (initialisation of untrained memories, sampling).")
    out: str = setting("results", "Folder for the parquet records.")
    name: str | None = setting(None, "Short name of the run for tables and figure legends (e.g. hmt-span), one per "
                                     "--method, comma-separated (resolve.named_runs).")


@dataclass
class DataSettings:
    dataset: str = setting("python-stdlib", "wikitext-103, pg19, pydoc-topics, python-stdlib, or a local "
                                            ".txt/.jsonl/.parquet path or folder.")
    split: str = setting("test", "train | validation | test (ignored for local files).")
    test_length: int = setting(2000, "Tokens per document (the paper's).")
    max_docs: int | None = setting(None, "At most this many documents.")


@dataclass(frozen=True)
class EngineOptions:
    compile: bool = setting(False, "torch.compile the backbone's blocks and the loss: fewer, fused kernels.")
    cuda_graphs: bool = setting(False, "Replay each segment step (bench's training step: its whole forward and "
                                       "backward) from a CUDA graph: one launch instead of thousands.")


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain values; a method's config carries its name (``method.settings()``)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        if _is_method_config(type(config)):
            return config.settings()
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), sort_keys=True)


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from nested dicts; an unknown key is an error with a did-you-mean."""
    if not isinstance(values, dict):
        raise HmtbenchError(f"setting '{where.rstrip('.')}' must be a group of settings, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    method = _is_method_config(cls)
    names = set(fields) | ({"name"} if method else set())
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise HmtbenchError(f"unknown setting '{where}{key}'{did_you_mean(key, names)}")
        if method and key == "name":
            continue  # a method config's name: the class already is that method's
        kwargs[key] = _field_value(cls, fields[key], value, f"{where}{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise HmtbenchError(f"settings '{where.rstrip('.') or cls.__name__}': {err}") from None


def _is_method_config(cls: type) -> bool:
    return issubclass(cls, MethodConfig)


def _field_value(cls: type, spec: dataclasses.Field, value: Any, name: str) -> Any:
    if METHOD_FIELD in spec.metadata:
        if dataclasses.is_dataclass(value):
            return value
        values = {"name": value} if isinstance(value, str) else dict(value or {})
        return method_config(values.pop("name", spec.metadata[METHOD_FIELD]), values, f"{name}.")
    kind = get_type_hints(cls)[spec.name]
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        return from_dict(kind, value, f"{name}.")
    return _coerce(value, kind, name)


def _coerce(value: Any, kind: Any, name: str) -> Any:
    """Numbers written as YAML strings (``5e-5`` is a string in YAML 1.1) become the field's type; a list setting
    takes one value or a comma-separated text (a flag's ``--curriculum 1,2,4``, ``--stage 2``) as well as a list."""
    item = list_item(kind)
    if item is not None and value is not None and not isinstance(value, list):
        parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else [value]
        return [_coerce(part, item, name) for part in parts]
    number = float if kind in (float, float | None) else int if kind in (int, int | None) else None
    if number is None or value is None or isinstance(value, bool) or isinstance(value, number):
        return value
    try:
        return number(value)
    except (TypeError, ValueError):
        raise HmtbenchError(f"setting '{name}' must be a number, got {value!r}") from None


def list_item(kind: Any) -> Any:
    """``int`` for ``list[int]`` or ``list[int] | None``; None for a type that is no list."""
    for hint in (kind, *(a for a in get_args(kind) if a is not type(None))):
        if get_origin(hint) is list:
            return get_args(hint)[0]
    return None


def parse_counts(text: str, flag: str) -> list[int]:
    """'2k,4k,64k,1m' -> [2048, 4096, 65536, 1048576] (k = 1024, m = 1024 k); every count positive."""
    counts = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        scale = {"k": 1024, "m": 1024**2}.get(part[-1:], 1)
        try:
            counts.append(int(part.rstrip("km")) * scale)
        except ValueError:
            raise HmtbenchError(f"{flag} takes comma-separated counts such as 2k,4k or 1,8; got '{part}'") from None
    if not counts or min(counts) < 1:
        raise HmtbenchError(f"{flag} needs positive counts, got '{text}'")
    return counts


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
    set_value(values, key.strip(), yaml.safe_load(raw))


def set_value(values: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in nested dicts; ``method: hmt`` (a name alone) becomes ``method: {name: hmt}``."""
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        child = node.get(part)
        if part == "method" and isinstance(child, str):
            child = node[part] = {"name": child}
        node = node.setdefault(part, {}) if child is None else child
        if not isinstance(node, dict):
            raise HmtbenchError(f"--set {key}: '{part}' is not a group of settings")
    if leaf == "method" and isinstance(node.get("method"), dict) and isinstance(value, str):
        node["method"]["name"] = value  # --method hmt keeps the method settings already given
    else:
        node[leaf] = value


def gather(recipe: str | dict[str, Any] | None, flags: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """The settings the user gave: the recipe (a file, or its settings as read), then flags that were given
    (not None), then ``--set``."""
    values = load_yaml(recipe) if isinstance(recipe, str) else copy.deepcopy(recipe or {})
    for key, value in flags.items():
        if value is not None:
            set_value(values, key, value)
    for assignment in sets or []:
        apply_override(values, assignment)
    if isinstance(values.get("method"), str):  # a name alone: the method's defaults
        values["method"] = {"name": values["method"]}
    return values
