"""How a comparison's rows read as text: methods in the registry's order, the settings a row's methods share or
keep apart, and a row's key; the tables, the notes and the figures' legends all name rows this way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hmtbench.methods import method_names


def order_methods(methods: Iterable[str]) -> list[str]:
    """The registry's order (table columns, legends), then methods the registry does not know, alphabetically."""
    known = [m for m in method_names() if m in set(methods)]
    return known + sorted(set(methods) - set(known))


def split_settings(settings: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What every method of a row has alike (engine switches: the row's own), and each method's remaining settings."""
    alike = dict(set.intersection(*(set(s.items()) for s in settings.values()))) if len(settings) > 1 else {}
    alike = {k: v for k, v in next(iter(settings.values()), {}).items() if k in alike}  # in the recorded order
    return alike, {m: {k: v for k, v in s.items() if k not in alike} for m, s in settings.items()}


def settings_text(settings: dict[str, Any]) -> str:
    """``name=value, ...`` by name: two rows of one method name their settings in one order."""
    return ", ".join(f"{s}={_short(v)}" for s, v in sorted(settings.items()))


def variant_text(settings: dict[str, dict[str, Any]]) -> str | None:
    """What a row's runs were kept apart by, e.g. 'hmt: hmt_stage=1'; what all its methods share as 'all: ...'."""
    alike, own = split_settings(settings)
    parts = [f"all: {settings_text(alike)}"] if alike else []
    parts += [f"{m}: {settings_text(s)}" for m, s in own.items() if s]
    return "; ".join(parts) or None


def describe(key: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """A row's key as `name=value · ...`, leaving out missing values and the names in ``skip``."""
    return " · ".join(f"{k}={v}" for k, v in key.items() if v is not None and k not in set(skip))


def _short(value: Any) -> str:
    """A setting for a row label: none for missing, paths by their last three parts."""
    if value is None:
        return "none"
    parts = str(value).split("/")
    return "…/" + "/".join(parts[-3:]) if len(parts) > 4 else str(value)
