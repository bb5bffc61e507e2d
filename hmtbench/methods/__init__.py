"""The method registry: the only place that maps method names to classes."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from hmtbench.errors import unknown_choice
from hmtbench.methods.base import MemoryState, MethodConfig, SegmentMethod, SegmentOutput

METHODS: dict[str, str] = {
    "plain": "hmtbench.methods.plain:Plain",
    "full": "hmtbench.methods.plain:FullContext",
    "rmt": "hmtbench.methods.rmt:RMT",
    "hmt": "hmtbench.methods.hmt:HMT",
}


def method_class(name: str) -> type[SegmentMethod]:
    if name not in METHODS:
        raise unknown_choice("method", name, METHODS)
    module, attr = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_method(name: str, backbone: nn.Module, settings: dict[str, Any]) -> SegmentMethod:
    """Wrap ``backbone`` in method ``name``; ``settings`` is the flat dict of segment/memory options."""
    cls = method_class(name)
    return cls(backbone, cls.config_class.from_settings(settings))


__all__ = ["METHODS", "MemoryState", "MethodConfig", "SegmentMethod", "SegmentOutput", "build_method", "method_class"]
