"""A command's flags, generated from the fields of the settings they set: no help text is written twice.

A flag is a spelling of a settings key (``--test-length 512`` is ``--set data.test_length=512``). Its type, its
``--help`` and its ``[default: ...]`` come from the field of the command's config that holds the key (the help in
the field's metadata, ``hmtbench.methods.config.setting``). Each command lists the keys it shows as flags
(``settings_command``); every other key is set in a recipe or with ``--set``. Every registered method's settings are
flags too, under "Method settings": a new method's settings are flags the moment it is registered.

Flags default to None, meaning "not given", so a recipe's or a checkpoint's value is never overridden by a default
the user did not type. The flags are built when a command parses its arguments or shows its help (the method
settings import the method classes, hence torch), never at import, so ``hmtbench --help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from hmtbench.config import METHOD_FIELD, list_item
from hmtbench.methods import config_class, method_names
from hmtbench.methods.config import HELP

PANEL = "Method settings"
GIVEN = "hmtbench.settings"  # ctx.meta key: {settings key: value} of the generated flags, None where not given


@dataclass(frozen=True)
class Flag:
    key: str  # the settings key it sets, dotted: data.test_length
    decls: tuple[str, ...]  # --test-length (a bool: --compile/--no-compile)
    kind: type  # what its value is read as
    help: str


def command_flag(config: type, key: str, name: str | None = None, kind: type | None = None) -> Flag:
    """The flag of settings ``key`` in dataclass ``config``: ``--<last part of the key>`` unless ``name`` is given;
    a list (or a method) is read as text (``--curriculum 1,2,4``), which the config parses."""
    spec, hint = _field(config, key)
    text = spec.metadata.get(HELP)
    if not text:
        raise TypeError(f"{config.__name__}.{key} has no help: make it with setting(default, help)")
    listed = METHOD_FIELD in spec.metadata or list_item(hint) is not None
    kind = kind or (str if listed else _base_type(hint))
    name = name or "--" + key.rsplit(".", 1)[-1].replace("_", "-")
    decls = (f"{name}/--no-{name[2:]}",) if kind is bool else (name,)
    default = default_text(config, key)
    shown = "" if "[default:" in text or default in ("", "false") else f" [default: {default}]"
    return Flag(key, decls, kind, text + shown)


def settings_command(config: type, *keys: str | tuple[str, str | None, type | None]) -> type[TyperCommand]:
    """A Typer command class that also takes ``keys`` of ``config`` as flags (a key alone, or (key, flag name,
    type)), then every method's settings."""
    specs = tuple((key, None, None) if isinstance(key, str) else key for key in keys)
    return type(f"{config.__name__}Command", (SettingsCommand,), {"flag_specs": (config, specs)})


class SettingsCommand(TyperCommand):
    """A command whose settings flags are generated (``flag_specs``), followed by every method's settings."""

    flag_specs: tuple[type, tuple[tuple[str, str | None, type | None], ...]] | None = None

    def flags(self) -> tuple[Flag, ...]:
        return () if self.flag_specs is None else _flags(*self.flag_specs)

    def generated(self) -> list[Any]:
        """The generated parameters: the command's settings flags, then the method settings none of them hides."""
        own = _params(self.flags())
        taken = {opt for param in own for opt in param.opts}
        return [*own, *(p for p in method_params() if not taken & set(p.opts))]

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        names = {p.name for p in params}
        extra = [p for p in self.generated() if p.name not in names]
        help_last = bool(params) and params[-1].name == "help"
        return [*params[:-1], *extra, params[-1]] if help_last else [*params, *extra]

    def invoke(self, ctx: Any) -> Any:
        keys = {_param_name(f.key): f.key for f in self.flags()}
        keys.update({p.name: f"method.{p.name}" for p in method_params()})
        own = {p.name for p in self.params}
        ctx.meta[GIVEN] = {keys[name]: ctx.params.pop(name) for name in list(ctx.params)
                           if name in keys and name not in own}
        return super().invoke(ctx)


def given_flags(ctx: Any) -> dict[str, Any]:
    """``{settings key: value}`` for the generated flags the command was given (not None)."""
    values = ctx.meta.get(GIVEN, {}) if ctx is not None else {}
    return {key: value for key, value in values.items() if value is not None}


@functools.cache
def _flags(config: type, specs: tuple[tuple[str, str | None, type | None], ...]) -> tuple[Flag, ...]:
    return tuple(command_flag(config, key, name, kind) for key, name, kind in specs)


@functools.cache
def method_params() -> tuple[Any, ...]:
    """One parameter per setting name across the registered methods (``settings_table``)."""
    flags = [Flag(f"method.{name}", (f"--{name.replace('_', '-')}",), kind, text)
             for name, (kind, text) in settings_table().items()]
    return _params(tuple(flags), PANEL)


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
                f"{method} (default {spec.default if spec.default is not dataclasses.MISSING else None})")
    return {name: (kinds[name], "; ".join(f"{', '.join(users)}: {text}" for text, users in texts[name].items()))
            for name in kinds}


@functools.cache
def _params(flags: tuple[Flag, ...], panel: str | None = None) -> tuple[Any, ...]:
    """Click parameters for ``flags``, built by Typer from a function signature as it builds every command's."""
    def settings(**values: Any) -> None:
        """The settings."""

    settings.__signature__ = inspect.Signature([
        inspect.Parameter(_param_name(f.key), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            f.kind | None, typer.Option(*f.decls, help=f.help, show_default=False, rich_help_panel=panel)])
        for f in flags
    ])
    app = typer.Typer(add_completion=False)
    app.command()(settings)
    return tuple(typer.main.get_command(app).params[: len(flags)])


def _param_name(key: str) -> str:
    return key.removeprefix("method.").replace(".", "__")


def _field(config: type, key: str) -> tuple[dataclasses.Field, Any]:
    """The dataclass field holding dotted ``key`` under ``config``, and its type."""
    *parents, leaf = key.split(".")
    for part in parents:
        config = typing.get_type_hints(config)[part]
    fields = {f.name: f for f in dataclasses.fields(config)}
    return fields[leaf], typing.get_type_hints(config)[leaf]


def _base_type(hint: Any) -> type:
    """int for ``int | None``, and so on: the type a flag's value is read as."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


@functools.cache
def _defaults(config: type) -> Any:
    return config()


def default_text(config: type, key: str) -> str:
    """Settings ``key``'s default in ``config`` as text: a method by its name, a list comma-separated, "" for None.

    Read from a default ``config`` (a nested dataclass may default otherwise than its class: train's data split)."""
    value: Any = _defaults(config)
    for part in key.split("."):
        value = getattr(value, part)
    names = [getattr(v, "name", v) for v in value] if isinstance(value, list) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, names)) if names is not None else str(getattr(value, "name", value))


def settings_markdown(configs: dict[str, type]) -> str:
    """docs/cli.md's table of every settings key of ``configs`` (command: config class): the commands that read
    it, its default and its help, from the fields (a test keeps docs/cli.md in sync). A method's own settings are
    its flags (``--help``, docs/methods.md)."""
    rows: dict[tuple[str, str, str], list[str]] = {}
    for command, config in configs.items():
        for key, spec in _keys(config):
            rows.setdefault((key, default_text(config, key), spec.metadata.get(HELP, "")), []).append(command)
    lines = ["| key | commands | default | meaning |", "| --- | --- | --- | --- |"]
    for (key, default, text), commands in sorted(rows.items()):
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | {', '.join(commands)} | {shown} | {escaped(text)} |")
    return "\n".join(lines)


def escaped(text: str) -> str:
    """``text`` in a markdown table cell: its pipes escaped."""
    return text.replace("|", "\\|")


def _keys(config: type, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """(dotted key, field) of every setting under ``config``, nested dataclasses flattened."""
    hints = typing.get_type_hints(config)
    found = []
    for spec in dataclasses.fields(config):
        if dataclasses.is_dataclass(hints[spec.name]) and METHOD_FIELD not in spec.metadata:
            found += _keys(hints[spec.name], f"{prefix}{spec.name}.")
        else:
            found.append((f"{prefix}{spec.name}", spec))
    return found
