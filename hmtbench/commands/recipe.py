"""One recipe serves every command that reads one: each takes the settings it has and sets the others aside.

The shipped recipes are training recipes: besides the model (backbone, method, segment length) and the corpus,
they hold ``train:``, ``lora:`` and ``curriculum:`` sections that only ``train`` reads. eval-ppl, eval-qa and
bench take what they have and set the rest aside, named in a note; a setting no command has is an error (a typo).
A recipe's ``data.split`` is the split it trains on, so evaluation sets it aside too and reads ``--split``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from hmtbench.benchmark.config import BenchConfig
from hmtbench.config import load_yaml
from hmtbench.errors import HmtbenchError, did_you_mean
from hmtbench.evaluation.config import EvalConfig
from hmtbench.qa.config import QAConfig
from hmtbench.training.config import TrainConfig

CONFIGS = {"eval-ppl": EvalConfig, "eval-qa": QAConfig, "train": TrainConfig, "bench": BenchConfig}
READERS = tuple(CONFIGS)
TRAINING_ONLY = {"eval-ppl": ("data.split",)}  # settings of a section a command reads that mean training there
GROUP, VALUE, METHOD = "group", "value", "method"  # a setting's shape: a section, one value, a method (either)


def recipe_settings(path: str, command: str) -> tuple[dict[str, Any], list[str]]:
    """(the settings of recipe ``path`` that ``command`` reads, the names of those it sets aside)."""
    values = load_yaml(path)
    own = settings_shapes(command)
    kept, aside = {}, []
    for key, value in values.items():
        if key in own and own[key] in (METHOD, GROUP if isinstance(value, dict) else VALUE):
            kept[key] = value
            continue
        known = {name for reader in READERS for name in settings_shapes(reader)}
        if key not in known:
            raise HmtbenchError(f"recipe '{path}': unknown setting '{key}'{did_you_mean(key, known)}; no command "
                                f"reads it")
        aside.append(key)
    for dotted in TRAINING_ONLY.get(command, ()):
        section, name = dotted.split(".")
        if isinstance(kept.get(section), dict) and name in kept[section]:
            kept[section] = {k: v for k, v in kept[section].items() if k != name}
            aside.append(dotted)
    return kept, aside


def settings_shapes(command: str) -> dict[str, str]:
    """The top-level settings ``command`` reads, each with its shape."""
    if command not in CONFIGS:
        raise ValueError(f"{command} reads no recipe")
    return _shapes(CONFIGS[command])


def _shapes(config: type) -> dict[str, str]:
    hints = get_type_hints(config)
    return {
        field.name: METHOD if field.name in ("method", "methods")
        else GROUP if dataclasses.is_dataclass(hints[field.name]) else VALUE
        for field in dataclasses.fields(config)
    }
