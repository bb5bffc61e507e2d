"""Needle-style recall generated offline: ``passkey`` and ``multi-fact``, at any context length.

Facts are hidden at chosen depths inside filler text from a local corpus (``--filler``,
default ``pydoc-topics``). Every sample is a function of (task, split, seed, index) alone: train, validation
and test samples come from seed streams of their own. Its prompt is built in tokens, exactly
``--context-length`` long: the instructions, filler, facts and question are tokenized apart and joined
as ids, so a million-token prompt costs no tokenization of a million-token text (and holds no text:
``Sample.prompt_ids``). ``qa/tasks/unseen.py`` holds passkeys in wordings no training task uses.
"""

from __future__ import annotations

import random

import torch

from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions
from hmtbench.qa.tasks.haystack import Haystack

DEFAULT_LENGTH = 4096
DEFAULT_SAMPLES = 10
NAMES = ("Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj",
         "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter")


class NeedleTask(Task):
    """Shared generation: subclasses say which facts a sample hides and which one it asks for."""

    metric = "accuracy"
    builds_length = True
    short_answer = True
    generates = True
    splits = ("train", "validation", "test")
    default_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    intro = ("There is an important piece of information hidden inside a lot of irrelevant text. "
             "Find it and memorize it; you will be asked about it.\n\n")

    def __init__(self, options: TaskOptions) -> None:
        super().__init__(options)
        if options.tokenizer is None:
            raise ValueError("needle tasks need options.tokenizer to size the context in tokens")
        self.depths = list(options.depths or self.default_depths)
        bad = [d for d in self.depths if not 0.0 <= d <= 1.0]
        if bad:
            raise HmtbenchError(f"--depth values must lie in [0, 1], got {bad[0]}")
        self.length = options.context_length or DEFAULT_LENGTH
        self.haystack = Haystack(options.filler, options.tokenizer)

    @property
    def facts_per_sample(self) -> int:
        """How many facts a sample hides (one per depth it is given)."""
        return len(self.depths)

    def facts(self, index: int, rng: random.Random, depths: list[float]) -> tuple[list[tuple[float, str]], str, str,
                                                                                     dict]:
        """(needles as (depth, text), question, answer, meta) of sample ``index``, facts at ``depths``."""
        raise NotImplementedError

    def head(self, sample: Sample) -> str:
        return self.intro

    def tail(self, sample: Sample) -> str:
        return f"\n\n{sample.question}"

    def load(self) -> list[Sample]:
        count = self.options.limit if self.options.limit is not None else DEFAULT_SAMPLES
        return [self.sample(i) for i in range(count)]

    def sample(self, index: int, length: int | None = None, depths: list[float] | None = None) -> Sample:
        """Sample ``index``: the same seed, split and index give the same ids, facts and depths; ``meta["template"]``
        names the wording (the task's name).

        ``length`` and ``depths`` replace the task's own (training draws them per sample).
        """
        for attempt in range(16):
            rng = random.Random(f"{self.name}-{self.options.split}-{self.options.seed}-{index}-{attempt}")
            needles, question, answer, meta = self.facts(index, rng, depths or self.depths)
            sample = Sample(str(index), "", question, [answer], {"template": self.name, **meta})
            if self._build(sample, needles, rng, length or self.length):
                return sample
        raise HmtbenchError(f"{self.name} sample {index}: every drawn value also occurs in the filler; "
                            "use another --filler")

    def fixed_tokens(self) -> int:
        """Tokens of a prompt without filler (instructions, facts, question): the shortest sample possible."""
        rng = random.Random(f"{self.name}-fixed")
        needles, question, answer, meta = self.facts(0, rng, self.depths[: self.facts_per_sample])
        sample = Sample("fixed", "", question, [answer], meta)
        parts = [self._ids(self.head(sample), special=True), self._ids(self.tail(sample))]
        return sum(map(len, parts)) + sum(len(self._ids(text)) for _, text in needles)

    def _ids(self, text: str, special: bool = False) -> list[int]:
        return self.options.tokenizer(text, add_special_tokens=special)["input_ids"]

    def _build(self, sample: Sample, needles: list[tuple[float, str]], rng: random.Random, length: int) -> bool:
        """Fill ``sample.prompt_ids`` to exactly ``length`` tokens; False when a value also occurs in the filler."""
        head, tail = self._ids(self.head(sample), special=True), self._ids(self.tail(sample))
        needles = sorted(needles, key=lambda needle: needle[0])
        needle_ids = [self._ids(text) for _, text in needles]
        filler = length - len(head) - len(tail) - sum(map(len, needle_ids))
        if filler < 1:
            raise HmtbenchError(f"--context-length {length} is too short for {self.name}: its instructions, "
                                f"facts and question alone take {length - filler} tokens")
        built = self.haystack.build(filler, needle_ids, [d for d, _ in needles], sample.meta["values"], rng)
        if built is None:
            return False  # the value would not be in the context exactly once
        context, starts = built
        sample.prompt_ids = torch.tensor(head + context + tail, dtype=torch.int32)
        sample.meta.update(context_tokens_asked=length, prompt_tokens=len(sample.prompt_ids),
                           needle_starts=[len(head) + start for start in starts],
                           needle_ends=[len(head) + start + len(ids) for start, ids in zip(starts, needle_ids,
                                                                                         strict=True)],
                           filler=self.haystack.corpus)
        return True


def digits(rng: random.Random, count: int) -> str:
    return str(rng.randrange(10 ** (count - 1), 10**count))


class Passkey(NeedleTask):
    """One 5-digit pass key; sample i hides it at depth ``depths[i % len(depths)]``."""

    name = "passkey"
    max_new_tokens = 12
    facts_per_sample = 1  # one key, at the depth of the sample's turn
    needle_text = "\nThe pass key is {key}. Remember it.\n"
    question_text = "What is the pass key? The pass key is"

    def key(self, rng: random.Random) -> str:
        return digits(rng, 5)

    def facts(self, index: int, rng: random.Random, depths: list[float]) -> tuple[list[tuple[float, str]], str, str,
                                                                                     dict]:
        key = self.key(rng)
        depth = depths[index % len(depths)]
        needle = self.needle_text.format(key=key)
        return [(depth, needle)], self.question_text, key, {"depth": depth, "values": [key]}


class MultiFact(NeedleTask):
    """One 7-digit number per person at each depth of ``--depth``; sample i asks for fact i % facts."""

    name = "multi-fact"
    max_new_tokens = 16
    default_depths = (0.25, 0.5, 0.75)

    def facts(self, index: int, rng: random.Random, depths: list[float]) -> tuple[list[tuple[float, str]], str, str,
                                                                                     dict]:
        if len(depths) > len(NAMES):
            raise HmtbenchError(f"multi-fact hides at most {len(NAMES)} facts; give fewer --depth values")
        names = rng.sample(NAMES, len(depths))
        values: list[str] = []
        while len(values) < len(names):
            value = digits(rng, 7)
            values += [] if value in values else [value]
        asked = index % len(names)
        needles = [(d, f"\nThe special magic number for {n} is {v}.\n") for d, n, v in zip(depths, names, values,
                                                                                         strict=True)]
        question = f"What is the special magic number for {names[asked]}? The special magic number for " \
                   f"{names[asked]} is"
        meta = {"depth": depths[asked], "asked": names[asked], "facts": dict(zip(names, values, strict=True)),
                "values": values}
        return needles, question, values[asked], meta
