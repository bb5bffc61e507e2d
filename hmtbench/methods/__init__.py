"""The method registry: the only place that maps method names to classes.

A method is one module (its ``nn.Module`` and its config dataclass) plus one line here, or, for a
third-party package, one entry point in the ``hmtbench.methods`` group (``name = "package.module:Class"``).
Everything else asks the class: its config (``config_class``), its label in tables (``label``), its
capabilities (class attributes and hooks of ``SegmentMethod``). Classes are imported on first use, so
reading the registry costs no torch import; a class is checked when it is first loaded (``check_method``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import TYPE_CHECKING

from hmtbench.errors import HmtbenchError, unknown_choice
from hmtbench.methods.config import MethodConfig

if TYPE_CHECKING:
    from hmtbench.methods.base import SegmentMethod

METHODS: dict[str, str] = {
    "plain": "hmtbench.methods.plain:Plain",
    "full": "hmtbench.methods.plain:FullContext",
    "overlap": "hmtbench.methods.overlap:Overlap",
    "rmt": "hmtbench.methods.rmt:RMT",
    "hmt": "hmtbench.methods.hmt:HMT",
    "armt": "hmtbench.methods.armt:ARMT",
    "retrieval": "hmtbench.methods.retrieval:Retrieval",
}
BASELINE = "plain"  # the method every other is compared with ("X vs plain, %")
ENTRY_POINTS = "hmtbench.methods"  # the entry-point group third-party methods register in


@functools.cache
def _plugins() -> dict[str, str]:
    """Methods registered by installed packages (entry points); a name taken by a built-in method is an error."""
    from importlib.metadata import entry_points

    found = {point.name: point.value for point in entry_points(group=ENTRY_POINTS)}
    for name in found:
        if name in METHODS:
            raise HmtbenchError(f"an installed package registers method '{name}' (entry point group {ENTRY_POINTS}), "
                                "which hmtbench already has; rename its entry point")
    return found


def _registry() -> dict[str, str]:
    return {**METHODS, **_plugins()}


def method_names() -> list[str]:
    """Every registered method, in the registry's order (the order of table columns), plugins last."""
    return list(_registry())


def method_class(name: str) -> type[SegmentMethod]:
    registry = _registry()
    if name not in registry:
        raise unknown_choice("method", name, registry)
    return _load(name, registry[name])


@functools.cache
def _load(name: str, target: str) -> type[SegmentMethod]:
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    check_method(name, cls)
    return cls


def check_method(name: str, cls: type) -> None:
    """What the registry requires of a class it registers under ``name``; a one-line error naming the fix."""
    from hmtbench.methods.base import SegmentMethod  # torch: loaded with the first method class

    where = f"method '{name}' ({getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)})"
    if not (isinstance(cls, type) and issubclass(cls, SegmentMethod)):
        raise HmtbenchError(f"{where} is not a SegmentMethod subclass")
    if cls.__dict__.get("name") != name:
        raise HmtbenchError(f"{where} declares name = {cls.__dict__.get('name')!r}; its class must say {name!r}")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise HmtbenchError(f"{where} does not define {missing} (abstract in SegmentMethod)")
    config = cls.__dict__.get("config_class")
    if not (config and dataclasses.is_dataclass(config) and issubclass(config, MethodConfig)):
        raise HmtbenchError(f"{where} needs a config_class of its own: a MethodConfig dataclass")
    unexplained = [f for f, text in config.field_help().items() if not text]
    if unexplained:
        raise HmtbenchError(f"{where}: settings {unexplained} have no help; make them with setting(default, help) or "
                            "trained_field(default, help)")


def config_class(name: str) -> type[MethodConfig]:
    """The dataclass holding method ``name``'s own settings."""
    return method_class(name).config_class


def method_label(name: str) -> str:
    """How tables and figures name the method (RMT, HMT, ...); unknown names are shown as they are."""
    return method_class(name).label if name in _registry() else name


def compared_pairs() -> list[tuple[str, str]]:
    """(method, reference) pairs every table reports deltas for, e.g. ("hmt", "rmt"): HMT vs RMT, %."""
    return [(name, reference) for name in _registry() for reference in method_class(name).compared_with]


def baseline_pairs() -> list[tuple[str, str]]:
    """(memory method, strong baseline) pairs every table tests, e.g. ("hmt", "full"), ("rmt", "retrieval"): each
    method whose state reaches back without bound, against each baseline that sees the whole context another way."""
    classes = {name: method_class(name) for name in _registry()}
    strong = [name for name, cls in classes.items() if cls.strong_baseline]
    memory = [name for name, cls in classes.items() if cls.state_reach is None and name not in strong]
    return [(m, s) for m in memory for s in strong]
