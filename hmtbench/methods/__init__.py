"""The method registry: the only place that maps method names to classes.

A method is one module in this folder (its ``nn.Module`` and its config dataclass) plus one line
here. Everything else asks the class: its config (``config_class``), its label in tables
(``label``), its capabilities (class attributes and hooks of ``SegmentMethod``). Classes are
imported on first use, so reading the registry costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hmtbench.errors import unknown_choice

if TYPE_CHECKING:
    from hmtbench.methods.base import MethodConfig, SegmentMethod

METHODS: dict[str, str] = {
    "plain": "hmtbench.methods.plain:Plain",
    "full": "hmtbench.methods.plain:FullContext",
    "overlap": "hmtbench.methods.overlap:Overlap",
    "rmt": "hmtbench.methods.rmt:RMT",
    "hmt": "hmtbench.methods.hmt:HMT",
    "retrieval": "hmtbench.methods.retrieval:Retrieval",
}
BASELINE = "plain"  # the method every other is compared with ("X vs plain, %")


def method_names() -> list[str]:
    """Every registered method, in the registry's order (the order of table columns)."""
    return list(METHODS)


def method_class(name: str) -> type[SegmentMethod]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def config_class(name: str) -> type[MethodConfig]:
    """The dataclass holding method ``name``'s own settings."""
    return method_class(name).config_class


def method_label(name: str) -> str:
    """How tables and figures name the method (RMT, HMT, ...); unknown names are shown as they are."""
    return method_class(name).label if name in METHODS else name


def paper_pairs() -> list[tuple[str, str]]:
    """(method, reference) pairs the paper reports deltas for, e.g. ("hmt", "rmt"): HMT vs RMT, %."""
    return [(name, method_class(name).compared_with) for name in METHODS if method_class(name).compared_with]

