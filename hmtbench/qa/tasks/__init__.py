"""The task registry: the only place that maps ``--task`` names to task classes (resolved lazily)."""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

from hmtbench.errors import HmtbenchError, did_you_mean
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions
from hmtbench.qa.tasks.local import LocalJsonl

TASKS: dict[str, tuple[str, dict]] = {
    "pubmedqa": ("hmtbench.qa.tasks.pubmedqa:PubMedQA", {}),
    "narrativeqa": ("hmtbench.qa.tasks.longbench:NarrativeQA", {}),
    "qasper": ("hmtbench.qa.tasks.longbench:Qasper", {}),
    "musique": ("hmtbench.qa.tasks.longbench:MuSiQue", {}),
    "qmsum": ("hmtbench.qa.tasks.longbench:QMSum", {}),
    **{f"babilong-qa{i}": ("hmtbench.qa.tasks.babilong:BabiLong", {"qa": f"qa{i}"}) for i in range(1, 6)},
    "passkey": ("hmtbench.qa.tasks.needle:Passkey", {}),
    "multi-fact": ("hmtbench.qa.tasks.needle:MultiFact", {}),
    "passkey-unseen-a": ("hmtbench.qa.tasks.unseen:UnseenCode", {}),
    "passkey-unseen-b": ("hmtbench.qa.tasks.unseen:UnseenTag", {}),
}


def task_factory(name: str):
    """The constructor of task ``name`` (a registered name or a local ``.jsonl`` path), taking TaskOptions."""
    if name.endswith(".jsonl"):
        return partial(LocalJsonl, path=name)
    if name not in TASKS:
        suggestion = " (a local task file must end in .jsonl)" if Path(name).exists() else did_you_mean(name, TASKS)
        raise HmtbenchError(
            f"unknown task '{name}'{suggestion}; choose one of: {', '.join(TASKS)}, or a local .jsonl file "
            "with context, question and answer"
        )
    target, kwargs = TASKS[name]
    module, attr = target.split(":")
    return partial(getattr(importlib.import_module(module), attr), **kwargs)


def load_task(name: str, options: TaskOptions) -> Task:
    return task_factory(name)(options)


def check_split(name: str, split: str) -> None:
    """A one-line error, before anything loads, when task ``name`` has no ``split`` (a task checks it again when
    built)."""
    task_factory(name).func.check_split(split, name)


__all__ = ["TASKS", "Sample", "Task", "TaskOptions", "check_split", "load_task", "task_factory"]
