"""A method's own settings: a dataclass whose fields carry their help, and whether a checkpoint fixes them.

Every field is made with ``setting`` or ``trained_field``: its ``help`` (field metadata, as peft's configs
write it) is what ``--help`` shows for its flag, which the CLI generates from the fields
(``hmtbench.commands.flags``), and the registry refuses a method config with a field without help. The run
configurations (``hmtbench.config``) make their fields with ``setting`` too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

TRAINED = "fixed_by_training"  # field metadata key: the trained tensors depend on this setting
HELP = "help"  # field metadata key: what the setting does, for --help


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its ``--help`` text (``default_factory=`` in ``kwargs`` for a mutable default)."""
    return field(default=default, metadata={HELP: help}, **kwargs)


def trained_field(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field a checkpoint fixes: its tensors were trained with it (a shape, or what they learned)."""
    return field(default=default, metadata={TRAINED: True, HELP: help}, **kwargs)


@dataclass
class MethodConfig:
    """A method's own settings (the segment length L is shared by every method and given apart).

    Each method subclasses this with only its own fields, validated in ``__post_init__`` with
    errors that name the flag. Fields made with ``trained_field`` are fixed by a checkpoint.
    """

    name: ClassVar[str]  # the method's name: set from the method class that declares this config (one place)

    def resolved(self, hidden_size: int) -> MethodConfig:
        """The settings as run on a backbone of width ``hidden_size`` (defaults that depend on it filled in)."""
        return self

    def settings(self) -> dict[str, Any]:
        """``{"name": ..., **fields}``: how the settings travel into recipes, records and checkpoints."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def fixed_by_training(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls) if f.metadata.get(TRAINED)}

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """``{field: help}`` for every setting, in declaration order ('' where a field has none)."""
        return {f.name: f.metadata.get(HELP, "") for f in dataclasses.fields(cls)}
