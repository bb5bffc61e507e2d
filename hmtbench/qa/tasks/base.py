"""What a QA task is: samples of (context, question, answers) and the prompt that joins them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from hmtbench.config import SEED
from hmtbench.errors import HmtbenchError


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
    seed: int = SEED
    limit: int | None = None
    data: str | None = None  # a local copy of a hub task's data
    depths: list[float] | None = None  # needle tasks: where facts go, as a fraction of the context
    filler: str = "pydoc-topics"  # needle tasks: the local corpus the facts hide in
    split: str = "test"  # train | validation | test: generated tasks draw each from seeds of its own


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
    splits: ClassVar[tuple[str, ...]] = ("train", "test")  # the splits it can be asked for; a data task reads the
    # same rows for both (train on one --data copy, test on another) and has no validation split to make choices on
    held_out: ClassVar[bool] = False  # wordings kept out of training: answer training refuses the task

    def __init__(self, options: TaskOptions) -> None:
        self.options = options
        self.check_split(options.split, getattr(self, "name", type(self).__name__))

    @classmethod
    def check_split(cls, split: str, name: str) -> None:
        """A one-line error when the task has no ``split``."""
        if split not in cls.splits:
            hint = ("; make choices on a generated task (passkey, multi-fact) or a .jsonl whose rows carry "
                    '"split": "validation"') if split == "validation" else ""
            raise HmtbenchError(f"task {name} has no {split} split{hint}")

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

    def answer_ids(self, sample: Sample, tokenizer: Any, end: bool = True) -> list[int]:
        """The token ids an answer is scored and trained on: ``answer_prefix``, the first gold answer, then the end
        of the answer (``end=False``: without it), so a trained model stops and an exact answer is the whole of it.

        The end is a line break for one-line tasks, tokenized with the answer as the text "answer\\n" would be (a
        tokenizer may merge it with the answer's last characters), else the tokenizer's end-of-sequence id.
        """
        answer = sample.answers[0].strip() if sample.answers else ""
        if not answer:
            raise HmtbenchError(f"{self.name} sample {sample.id} has an empty answer; every sample needs one")
        text = self.answer_prefix + answer
        if self.one_line or not end:
            return tokenizer(text + ("\n" if end else ""), add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is None:
            raise HmtbenchError(f"{self.name}'s answers end with the tokenizer's end-of-sequence token, and this "
                                "tokenizer has none")
        return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]

    def postprocess(self, generated: str) -> str:
        """The answer inside a generation: its first non-empty line for short-answer tasks."""
        text = generated.strip()
        return text.split("\n", 1)[0].strip() if self.one_line else text

    def limited(self, samples: list[Sample]) -> list[Sample]:
        limit = self.options.limit
        return samples if limit is None else samples[:limit]
