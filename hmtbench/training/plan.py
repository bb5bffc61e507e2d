"""A training run's plan: its stages in order, and which of them are complete, left to train, or past the run's
token budget (``train.max_tokens``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from hmtbench.checkpoints import META, read_meta
from hmtbench.errors import HmtbenchError
from hmtbench.methods import method_class
from hmtbench.training.config import TrainConfig
from hmtbench.training.state import has_trainer_state, read_trainer_state, refuse_legacy


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a run: trained in a folder of its own, from the previous stage's final tensors."""

    folder: str  # under the run folder: train, or stage1, stage2, ..., or level1, level2, ... (stage2-level1, ...)
    label: str  # in the progress bar and the record's run id
    method: Any  # the method's settings for this stage
    steps: int
    level: int | None = None  # the one curriculum level (index) this stage trains (curriculum.restart_per_level)


def plan_stages(config: TrainConfig) -> list[Stage]:
    """Each stage this run trains, in order."""
    cls = method_class(config.method.name)
    curriculum = config.curriculum
    levels = curriculum.level_steps if curriculum.task is not None else None
    last = sum(levels) if levels else config.train.steps  # fixed steps per level: the steps of the last stage
    if not cls.training_stages:
        stages = [Stage("train", cls.name, config.method, last)]
    else:
        chosen = sorted(set(config.train.stages))
        unknown = [s for s in chosen if s not in cls.training_stages]
        if unknown:
            raise HmtbenchError(f"train.stages {unknown} are not stages of {cls.name}; its stages are "
                                f"{', '.join(map(str, cls.training_stages))}")
        stages = [Stage(f"stage{s}", f"{cls.name} stage {s}", cls.config_for_stage(config.method, s),
                        last if s == chosen[-1] else config.train.stage1_steps) for s in chosen]
    if not (levels and curriculum.restart_per_level):
        return stages
    if len(stages) > 1:
        raise HmtbenchError(f"curriculum.restart_per_level trains each level as a stage of its own: train one stage "
                            f"of {cls.name} at a time (--stage N)")
    only = stages[0]
    prefix = "" if only.folder == "train" else f"{only.folder}-"
    return [Stage(f"{prefix}level{j + 1}", f"{only.label} level {j + 1}", only.method, steps, j)
            for j, steps in enumerate(levels)]


def stage_complete(final: Path, steps: int, max_tokens: int | None = None) -> bool:
    """A stage's final checkpoint at its full step count or at the run's token budget (one ended early by
    --max-minutes resumes from ``last``)."""
    meta = _final_meta(final)
    return meta is not None and (_holds_steps(meta, steps) or _budget_met(meta, max_tokens))


def budget_spent(final: Path, max_tokens: int | None) -> bool:
    """Has the run read its token budget (``train.max_tokens``) by this final checkpoint?"""
    return max_tokens is not None and _budget_met(_final_meta(final), max_tokens)


def _final_meta(final: Path) -> dict[str, Any] | None:
    """A final checkpoint's meta, or None where the stage has none yet."""
    return read_meta(final) if (final / META).is_file() else None


def _holds_steps(meta: dict[str, Any], steps: int) -> bool:
    """A checkpoint's meta at the stage's full step count (one without a step count is taken as complete)."""
    return meta.get("step", steps) >= steps


def _budget_met(meta: dict[str, Any] | None, max_tokens: int | None) -> bool:
    """A checkpoint's meta at or past the token budget (never, without one or without a checkpoint)."""
    return max_tokens is not None and meta is not None and int(meta.get("train_tokens") or 0) >= max_tokens


@dataclasses.dataclass(frozen=True)
class StartPoint:
    """What a stage's tensors are built from (a checkpoint folder, or None: the backbone as loaded) and the tokens
    they had been trained on before the stage."""

    checkpoint: str | None
    tokens: int


def tokens_trained(checkpoint: str | None) -> int:
    """The tokens a checkpoint's tensors were trained on, over every stage and chunk (0: none, or not recorded)."""
    meta = read_meta(checkpoint) if checkpoint else {}
    return int(meta.get("train_tokens") or 0)


def start_point(folder: Path, init_from: str | None) -> StartPoint:
    """A stage starts from ``init_from`` (the previous stage's final, or the run's --init-from). A stage that has begun
    while that final is not here (its folder went to another machine with its resumable checkpoint alone) builds on
    that checkpoint, which holds every tensor the stage trains and the tokens its start had read."""
    last = folder / "last"
    if init_from and not (Path(init_from) / META).is_file() and has_trainer_state(last):
        return StartPoint(str(last), int(read_meta(last).get("tokens_before") or 0))
    return StartPoint(init_from, tokens_trained(init_from))


def last_begun(plan: list[Stage], output: Path) -> int:
    """The index of the last stage that has begun (a resumable checkpoint or a final in its folder; 0: none has).
    Every stage before it has ended, whether or not its final is in this run folder."""
    begun = [i for i, stage in enumerate(plan) if has_trainer_state(output / stage.folder / "last")
             or (output / stage.folder / "final" / META).is_file()]
    return begun[-1] if begun else 0


def pending_stages(plan: list[Stage], output: Path, max_tokens: int | None) -> list[Stage]:
    """The stages left to train: those not complete, up to the first whose final spent the run's token budget.
    A stage before one that has begun is never trained again (a run restarted from its first level would overwrite
    what the later one learned)."""
    pending = []
    for stage in plan[last_begun(plan, output):]:
        meta = _final_meta(output / stage.folder / "final")  # read once: a stage's final decides both
        if _budget_met(meta, max_tokens):
            break
        if meta is None or not _holds_steps(meta, stage.steps):
            pending.append(stage)
    return pending


def check_resumable(last: Path) -> None:
    """A stage's resumable checkpoint, if it has one, is whole: its tensors and its trainer state."""
    if has_trainer_state(last):
        refuse_legacy(last)
        read_meta(last)
        read_trainer_state(last)
