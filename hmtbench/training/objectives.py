"""What a training step optimises: language modelling on windows, or answers to questions with a curriculum.

The loop (``training/loop.py``) asks an objective for the tensors of a micro-batch (a pure function
of its global index, so a resumed run reads what an uninterrupted one would), for their loss, and,
after each optimizer step, for what to log; the curriculum's position is part of the trainer state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from hmtbench import distributed
from hmtbench.answer_layout import ANSWER_ROOM
from hmtbench.engine import score_segments, segment_batch
from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import SegmentMethod, max_positions
from hmtbench.qa.answers import answer_pass, answer_segments, exact_rows
from hmtbench.training.answers import AnswerSampler
from hmtbench.training.config import CurriculumSettings, TrainConfig, TrainSettings
from hmtbench.training.windows import WindowSampler


@dataclass
class StepLoss:
    loss: Tensor  # () mean NLL over the scored tokens of the micro-batch
    tokens: int  # tokens the micro-batch ran through the method
    exact: Tensor | None = None  # (B,) bool: answers greedy decoding reproduces (answer training)


class LanguageModelling:
    """Windows of D segments; loss on the last segment (the reference) or on all of them."""

    def __init__(self, sampler: WindowSampler, settings: TrainSettings) -> None:
        self.sampler, self.settings = sampler, settings

    def describe(self) -> str:
        return f"{len(self.sampler):,} windows of {self.sampler.window} tokens"

    def batch(self, index: int, batch_size: int) -> tuple[Tensor, ...]:
        return (self.sampler.batch(index, batch_size),)

    def loss(self, model: SegmentMethod, ids: Tensor) -> StepLoss:
        loss, tokens = window_loss(model, ids, self.settings)
        return StepLoss(loss, tokens)

    def end_step(self, exact: float | None) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def window_loss(model: SegmentMethod, ids: Tensor, settings: TrainSettings) -> tuple[Tensor, int]:
    """Mean NLL of one batch of windows (B, D*S): on the last segment's S tokens, or on all."""
    segment = model.segment_tokens
    size = read_size(model, ids.shape[1])
    lengths = torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
    scored = None
    if settings.loss_on == "last":
        scored = torch.zeros_like(ids, dtype=torch.bool)
        scored[:, -segment:] = True
    batch = segment_batch(ids, lengths, size, scored)
    nll, tokens = score_segments(model, batch, grad_segments=settings.bptt_truncate, recompute=settings.recompute,
                                 scored_segments=window_scored_segments(ids.shape[1], size, settings.loss_on),
                                 k2=settings.k2)
    return nll.sum() / tokens.sum(), int(ids.numel())


def read_size(model: SegmentMethod, width: int) -> int:
    """Tokens per backbone step for rows ``width`` tokens wide: the whole row for a method that reads whole documents
    (``full``: its S units only size the windows and curriculum contexts, as every method's do), else S."""
    if not model.reads_whole_document:
        return model.segment_tokens
    limit = max_positions(model.backbone.config)
    if limit is not None and width > limit:
        raise HmtbenchError(f"--method {model.name} reads each training row in one forward, but rows of {width} tokens "
                            f"exceed the backbone's {limit} positions; lower --bptt-depth or the curriculum's segments")
    return width


def window_scored_segments(window: int, segment: int, loss_on: str) -> list[bool]:
    """Which segments of a window hold a scored prediction, computed on the host so a step never waits for the
    device: position t predicts token t+1, so the last segment's first token is predicted in the segment before."""
    first = 0 if loss_on == "all" else max(window - segment, 1) - 1  # first position whose target counts
    last = window - 2
    return [first // segment <= i <= last // segment for i in range(-(-window // segment))]


class AnswerTraining:
    """Questions about a long context, read through the memory; the loss is on the answer tokens and the answer's
    end (``Task.answer_ids``) only, so a trained model stops after its answer.

    A curriculum over the number of segments a sample's context spans (``curriculum.segments``):
    samples start at the first level and move to the next once the share of training answers that
    greedy decoding reproduces exactly, over the last ``curriculum.window`` steps, reaches
    ``curriculum.advance_at`` (the RMT papers train this way, then generalise beyond the training length),
    or, with ``curriculum.level_steps``, after that many steps at each level. ``first_index``: the micro-batch
    index of this objective's first step (a level trained as a stage of its own reads the samples it would read
    in one stage over every level).
    """

    def __init__(self, sampler: Any, curriculum: CurriculumSettings, settings: TrainSettings,
                 first_index: int = 0) -> None:
        self.sampler, self.curriculum, self.settings = sampler, curriculum, settings
        self.first_index = first_index
        self.level = 0
        self.level_step = 0  # steps done at this level
        self.recent: deque[float] = deque(maxlen=curriculum.window)
        self.earlier = torch.zeros(2)  # this step's (exact, all) answers of rows whose facts precede the question

    @property
    def segments(self) -> int:
        return self.curriculum.segments[self.level]

    def describe(self) -> str:
        levels = ", ".join(map(str, self.curriculum.segments))
        if self.curriculum.level_steps is not None:
            steps = ", ".join(map(str, self.curriculum.level_steps))
            return f"{self.sampler.name} answers, contexts of {levels} segments ({steps} steps)"
        return (f"{self.sampler.name} answers, contexts of {levels} segments "
                f"(next level at {self.curriculum.advance_at:.0%} exact over {self.curriculum.window} steps)")

    def batch(self, index: int, batch_size: int) -> tuple[Tensor, ...]:
        return self.sampler.batch(self.first_index + index, batch_size, self.segments)

    def loss(self, model: SegmentMethod, ids: Tensor, lengths: Tensor, scored: Tensor, prompts: Tensor,
             facts_before: Tensor) -> StepLoss:
        size = read_size(model, ids.shape[1] + ANSWER_ROOM)  # whole rows: every prompt leaves the answer's room
        batch = answer_segments(ids, lengths, scored, prompts, size, model.sensory_tokens, self.curriculum.layout)
        nll, predicted = answer_pass(model, model, batch, self.settings.bptt_truncate, self.settings.recompute,
                                     k2=self.settings.k2)
        exact = exact_rows(batch, predicted)
        self.earlier = self.earlier.to(exact.device) + torch.stack([(exact & facts_before).sum(), facts_before.sum()])
        return StepLoss(nll.sum() / scored.sum(), int(lengths.sum()), exact)

    def end_step(self, exact: float | None) -> dict[str, Any]:
        """Log the level, the exact share and (``exact_earlier``) the share over the rows whose facts all precede
        the question's segment, which a ``question_segment_share`` of near rows would otherwise hide; move to the
        next level once the recent exact share is high enough (or the level's steps are done)."""
        entry = {"segments": self.segments, "exact": exact}
        self.level_step += 1
        if exact is None:
            return entry
        hits, rows = (distributed.mean(value) for value in self.earlier.tolist())  # a sum over ranks, / world
        self.earlier = torch.zeros(2)
        if rows:
            entry["exact_earlier"] = hits / rows
        self.recent.append(exact)
        if self._level_done() and self.level + 1 < len(self.curriculum.segments):
            self.level += 1
            self.level_step = 0
            self.recent.clear()
            entry.update(advanced_to=self.segments, level_done=self.level)  # level_done counts from 1
        return entry

    def _level_done(self) -> bool:
        if self.curriculum.level_steps is not None:
            return self.level_step >= self.curriculum.level_steps[self.level]
        full = len(self.recent) == self.recent.maxlen
        return full and sum(self.recent) / len(self.recent) >= self.curriculum.advance_at

    def state_dict(self) -> dict[str, Any]:
        return {"level": self.level, "recent": list(self.recent), "level_step": self.level_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if state["level"] >= len(self.curriculum.segments):
            raise HmtbenchError("the run's curriculum has fewer levels than its trainer state; resume with its config")
        self.level = state["level"]
        self.level_step = state.get("level_step", 0)
        self.recent = deque(state["recent"], maxlen=self.curriculum.window)


def make_objective(config: TrainConfig, model: SegmentMethod, backbone: Any, documents: list[list[int]] | None,
                   level: int | None = None):
    """Answers to a task's questions with a curriculum (``curriculum.task``), else language-modelling windows.
    ``level``: the curriculum level a stage trains alone, on the samples one stage over every level would read."""
    settings = config.train
    if config.curriculum.task is not None:
        curriculum, first = config.curriculum, 0
        if level is not None:
            steps = curriculum.level_steps
            curriculum = replace(curriculum, segments=[curriculum.segments[level]],
                                             level_steps=[steps[level]], restart_per_level=False)
            first = sum(steps[:level]) * settings.grad_accum
        sampler = AnswerSampler(curriculum, backbone.tokenizer, model.segment_tokens, settings.sample_seed,
                                model.sensory_tokens)
        return AnswerTraining(sampler, curriculum, settings, first)
    source = f"dataset '{config.data.dataset}' ({config.data.split})"
    window = settings.bptt_depth * model.segment_tokens
    return LanguageModelling(WindowSampler(documents, window, model.segment_tokens, settings.sample_seed, source),
                             settings)
