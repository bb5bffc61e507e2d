"""What a QA task is: samples of (context, question, answers) and the prompt that joins them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass
class Sample:
    id: str  # stable within the task: row index, file:line or generated index
    context: str
    question: str
    answers: list[str]  # gold answers; the first is the one whose perplexity is measured
    meta: dict[str, Any] = field(default_factory=dict)  # depth, key, ... written to the predictions
    prompt_ids: Any = None  # (T,) int32 tensor, for tasks that build their prompt in tokens (context is then "")


@dataclass
class TaskOptions:
    """What ``eval-qa`` hands every task; each task reads the fields it needs."""

    tokenizer: Any = None
    context_length: int | None = None  # prompt tokens asked for (generated tasks build exactly this)
    seed: int = 3407
    limit: int | None = None
    data: str | None = None  # a local copy of a hub task's data
    depths: list[float] | None = None  # needle tasks: where facts go, as a fraction of the context
    filler: str = "pydoc-topics"  # needle tasks: the local corpus the facts hide in
    split: str = "test"  # generated tasks: train and test samples come from separate seeds


class Task:
    """One QA task: ``load`` its samples, ``prompt`` them, ``references`` and ``metric`` to score them.

    A prompt is ``head(sample) + context + tail(sample)`` and never holds an answer; the gold
    answer follows it after ``answer_prefix``. ``builds_length`` marks tasks whose samples already
    have the asked context length (generated or pre-binned); others are fitted by truncation.
    """

    name: ClassVar[str]
    metric: ClassVar[str] = "rouge_l"  # the headline metric
    max_new_tokens: ClassVar[int] = 64
    one_line: ClassVar[bool] = True  # short answers: stop decoding at the first line break after text
    short_answer: ClassVar[bool] = False  # a few tokens, scored exactly: greedy checked for a batch in one pass
    generates: ClassVar[bool] = False  # samples made at any length (``sample(index, length, depths)``): needle tasks
    builds_length: ClassVar[bool] = False
    answer_prefix: ClassVar[str] = " "

    def __init__(self, options: TaskOptions) -> None:
        self.options = options

    def load(self) -> list[Sample]:
        raise NotImplementedError

    def head(self, sample: Sample) -> str:
        return ""

    def tail(self, sample: Sample) -> str:
        return f"\n\nQuestion: {sample.question}\nAnswer:"

    def prompt(self, sample: Sample) -> str:
        return self.head(sample) + sample.context + self.tail(sample)

    def references(self, sample: Sample) -> list[str]:
        return sample.answers

    def postprocess(self, generated: str) -> str:
        """The answer inside a generation: its first non-empty line for short-answer tasks."""
        text = generated.strip()
        return text.split("\n", 1)[0].strip() if self.one_line else text

    def limited(self, samples: list[Sample]) -> list[Sample]:
        limit = self.options.limit
        return samples if limit is None else samples[:limit]
