"""Method settings as command-line flags, generated from the fields of every registered method's config.

Every field of a method's config dataclass is a flag (``key_dim`` is ``--key-dim``), with the help its
field metadata carries (``hmtbench.methods.config.setting``), shown under "Method settings" in the
command's ``--help``. A new method's settings are flags the moment it is registered: nobody retypes them
in ``cli.py``. The flags are built when a command parses its arguments or shows its help (that imports the
method classes, hence torch), never at import, so ``hmtbench --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from hmtbench.methods import config_class, method_names

PANEL = "Method settings"
GIVEN = "hmtbench.method_settings"  # ctx.meta key: the method settings a command was given, by field name


class MethodSettingsCommand(TyperCommand):
    """A command that also takes every registered method's settings as flags (``method_params``)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        own = {p.name for p in params}
        extra = [p for p in method_params() if p.name not in own]
        help_last = bool(params) and params[-1].name == "help"
        return [*params[:-1], *extra, params[-1]] if help_last else [*params, *extra]

    def invoke(self, ctx: Any) -> Any:
        own = {p.name for p in self.params}
        generated = {p.name for p in method_params()} - own
        ctx.meta[GIVEN] = {name: ctx.params.pop(name) for name in list(ctx.params) if name in generated}
        return super().invoke(ctx)


def given_settings(ctx: Any) -> dict[str, Any]:
    """``{"method.<field>": value}`` for the generated flags the command was given (None: not given)."""
    values = ctx.meta.get(GIVEN, {}) if ctx is not None else {}
    return {f"method.{name}": value for name, value in values.items() if value is not None}


@functools.cache
def method_params() -> tuple[Any, ...]:
    """One parameter per setting name across the registered methods (``settings_table``), built by Typer from a
    function signature as it builds every command's."""
    def settings(**values: Any) -> None:
        """The method settings."""

    settings.__signature__ = inspect.Signature([
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            kind | None, typer.Option(f"--{name.replace('_', '-')}", help=text, show_default=False,
                                      rich_help_panel=PANEL)])
        for name, (kind, text) in settings_table().items()
    ])
    app = typer.Typer(add_completion=False)
    app.command()(settings)
    return tuple(p for p in typer.main.get_command(app).params if p.name in settings_table())


@functools.cache
def settings_table() -> dict[str, tuple[type, str]]:
    """``{field: (type, help)}`` over every registered method's config; a field several methods share lists each
    method's help and default (``rmt (1), hmt (1): m: ...``)."""
    kinds: dict[str, type] = {}
    texts: dict[str, dict[str, list[str]]] = {}
    for method in method_names():
        config = config_class(method)
        hints = typing.get_type_hints(config)
        help_text = config.field_help()
        for spec in dataclasses.fields(config):
            kinds.setdefault(spec.name, _base_type(hints[spec.name]))
            texts.setdefault(spec.name, {}).setdefault(help_text[spec.name], []).append(
                f"{method} ({_default(spec)})")
    return {name: (kinds[name], "; ".join(f"{', '.join(users)}: {text}" for text, users in texts[name].items()))
            for name in kinds}


def _base_type(hint: Any) -> type:
    """int for ``int | None``, and so on: the type a flag's value is read as."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _default(spec: dataclasses.Field) -> str:
    return f"default {spec.default if spec.default is not dataclasses.MISSING else None}"
