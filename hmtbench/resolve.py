"""From the settings a user gave to typed configs, one per method: what a flag sets always wins.

Order of precedence for every setting: what the user gave (recipe, flags, ``--set``), then the
checkpoint's (for a setting the user did not give), then the dataclass default. A setting the
checkpoint fixes (``trained_field``: the tensors were trained with it) cannot be overridden: a
different value given with the checkpoint is a one-line error, never silently replaced.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hmtbench.config import apply_override, from_dict, method_config
from hmtbench.errors import HmtbenchError, did_you_mean, unknown_choice
from hmtbench.methods import config_class, method_class
from hmtbench.methods import method_names as registered_methods

T = TypeVar("T")
SELECTED_ON = ("train", "validation", "test", "fixed")  # what --selected-on names: a split, or nothing chosen


def method_names(given: dict[str, Any], default: str = "plain") -> list[str]:
    """The methods asked for: ``method.name``, possibly a comma list (``plain,rmt,hmt``)."""
    method = given.get("method") or {}
    text = method.get("name", default) if isinstance(method, dict) else method
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    for name in names:
        method_class(name)  # an unknown name fails here, with a did-you-mean
    if not names:
        raise HmtbenchError("--method needs at least one method name, e.g. --method plain,rmt,hmt")
    return names


def checkpoint_settings(meta: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """(method settings with their name, segment length) a checkpoint was trained with, in either layout of its
    meta: ``method: {name, ...settings}``, or ``method: name`` beside a flat ``memory: {...}``."""
    method = meta.get("method")
    if isinstance(method, dict):
        return dict(method), meta.get("segment_length")
    memory = dict(meta.get("memory") or {})  # the flat layout: every setting and the segment length in one dict
    segment_length = memory.pop("segment_length", None)
    return {"name": method, **memory}, segment_length


def resolve_method(name: str, given: dict[str, Any], trained: dict[str, Any] | None, source: str = "") -> Any:
    """Method ``name``'s config: given settings over the checkpoint's (``trained``) over the defaults."""
    cls = config_class(name)
    own = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in (trained or {}).items() if k in own}
    for key, value in given.items():
        if key == "name" or key not in own:
            continue
        if trained is not None and key in cls.fixed_by_training() and key in values and values[key] != value:
            flag = "--" + key.replace("_", "-")
            raise HmtbenchError(
                f"{flag} {value} conflicts with checkpoint '{source}', trained with {values[key]}: the trained "
                f"tensors depend on it; drop {flag} or use a checkpoint trained with {value}"
            )
        values[key] = value
    return method_config(name, values)


def check_method_keys(names: list[str], given: dict[str, Any]) -> None:
    """Every method setting given must belong to at least one of the methods asked for."""
    owned = {f.name for name in names for f in dataclasses.fields(config_class(name))}
    for key in given:
        if key != "name" and key not in owned:
            everyone = {f.name for name in registered_methods() for f in dataclasses.fields(config_class(name))}
            hint = did_you_mean(key, everyone) if key not in everyone else ""
            raise HmtbenchError(
                f"setting 'method.{key}' does not apply to --method {','.join(names)}{hint}; "
                f"drop it or pick a method that has it"
            )


def resolve(cls: type[T], given: dict[str, Any], checkpoint: str | None = None, default_method: str = "plain"
            ) -> list[T]:
    """Typed ``cls`` configs, one per method asked for, from what the user gave and ``checkpoint``'s settings.

    A checkpoint supplies what the user did not give: the method, its settings, the segment length and the
    backbone it was trained on."""
    from hmtbench.checkpoints import read_meta  # torch: only where a checkpoint is named

    meta = None if checkpoint is None else read_meta(checkpoint)
    source = checkpoint or ""
    trained, trained_length = checkpoint_settings(meta) if meta else (None, None)
    names = method_names(given, (trained or {}).get("name") or default_method)
    method_given = given.get("method") if isinstance(given.get("method"), dict) else {}
    check_method_keys(names, method_given)
    if meta is not None and trained.get("name") not in names:
        raise HmtbenchError(
            f"checkpoint '{source}' was trained for --method {trained.get('name')}, not {','.join(names)}; "
            f"use --method {trained.get('name')} or another checkpoint"
        )
    configs = []
    for name in names:
        values = copy.deepcopy(given)
        values["method"] = resolve_method(name, method_given, trained, source)
        if "segment_length" not in given and trained_length is not None:
            values["segment_length"] = trained_length
        if "backbone" not in given and meta and meta.get("backbone"):
            values["backbone"] = meta["backbone"]
        configs.append(from_dict(cls, values))
    return configs


def named_runs(configs: Sequence[T]) -> list[T]:
    """Each config with its own ``name``: --name gives one name per --method, comma-separated in its order (one name
    for one method); the configs of one method (at several context lengths, say) share its name. A --selected-on
    that names no split is refused here, before anything loads."""
    configs = list(configs)
    chosen = getattr(configs[0], "selected_on", None) if configs else None
    if chosen is not None and chosen not in SELECTED_ON:
        raise unknown_choice("--selected-on", chosen, SELECTED_ON)
    if not configs or configs[0].name is None:
        return configs
    own = names_per_method(configs[0].name, [c.method.name for c in configs])
    return [dataclasses.replace(c, name=own[c.method.name]) for c in configs]


def names_per_method(text: str | None, methods: Sequence[str]) -> dict[str, str | None]:
    """--name as {method: name}: one name per method, comma-separated in the order the methods were asked for."""
    methods = list(dict.fromkeys(methods))
    if text is None:
        return dict.fromkeys(methods)
    names = [part.strip() for part in str(text).split(",")]
    if len(names) != len(methods) or not all(names):
        raise HmtbenchError(f"--name takes one name per --method, comma-separated in its order ({len(methods)}: "
                            f"{', '.join(methods)}); got '{text}'")
    return dict(zip(methods, names, strict=True))


def grid_points(given: dict[str, Any], grid: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``--grid KEY=V1,V2`` (repeatable) as (name, settings) per combination, in the order the axes were given: the
    name joins the values (``--grid method.recall_choice=soft,hard --grid method.recall_context=100,6000``: soft-100,
    soft-6000, hard-100, hard-6000), the name ``scripts/pick_setting.py`` reports back."""
    axes: dict[str, list[str]] = {}
    for assignment in grid:
        key, _, raw = assignment.partition("=")
        key = key.strip()
        values = [part.strip() for part in raw.split(",") if part.strip()]
        if not values:
            raise HmtbenchError(f"--grid expects KEY=VALUE,VALUE..., got '{assignment}'")
        if not key.startswith("method.") or key == "method.name":
            raise HmtbenchError(f"--grid varies a method's settings (method.KEY), not '{key}': every other setting "
                                "is shared by the runs of one process (samples, documents, checkpoint); run apart")
        if key in axes:
            raise HmtbenchError(f"--grid names {key} twice: give its values in one --grid {key}=V1,V2")
        axes[key] = values
    points = []
    for combination in itertools.product(*axes.values()):
        settings = copy.deepcopy(given)
        for key, value in zip(axes, combination, strict=True):
            apply_override(settings, f"{key}={value}")
        points.append(("-".join(combination), settings))
    return points


def gridded(given: dict[str, Any], grid: Sequence[str] | None, configs_for: Callable[[dict[str, Any]], list[T]]
            ) -> list[T]:
    """``configs_for(given)``, named (``named_runs``); with ``grid``, that for every grid point, each named by its
    values, all of one method."""
    if not grid:
        return named_runs(configs_for(given))
    if given.get("name") is not None:
        raise HmtbenchError("--grid names each run by its values (soft-100, ...): drop --name")
    configs: list[T] = []
    for name, settings in grid_points(given, grid):
        point = named_runs(configs_for(settings))
        if len({c.method.name for c in point}) > 1:
            raise HmtbenchError("--grid varies one method's settings: give one --method")
        configs += [dataclasses.replace(c, name=name) for c in point]
    return configs
