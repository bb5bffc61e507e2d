"""Needle-style recall generated offline: ``passkey`` and ``multi-fact``, at any context length.

Facts are hidden at chosen depths inside filler text from a local corpus (``--filler``,
default ``pydoc-topics``). Every sample is a function of (task, seed, index) alone, and its
prompt is within 1% of ``--context-length`` tokens: the filler is sized from the tokens of the
fixed parts, then corrected once after tokenizing the whole prompt.
"""

from __future__ import annotations

import random

from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions
from hmtbench.qa.tasks.haystack import Haystack

DEFAULT_LENGTH = 4096
DEFAULT_SAMPLES = 10
TOLERANCE = 0.005  # rebuild once when the prompt misses the asked length by more than this share
NAMES = ("Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj",
         "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor", "Walter")


class NeedleTask(Task):
    """Shared generation: subclasses say which facts a sample hides and which one it asks for."""

    metric = "accuracy"
    builds_length = True
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

    def facts(self, index: int, rng: random.Random) -> tuple[list[tuple[float, str]], str, str, dict]:
        """(needles as (depth, text), question, answer, meta) of sample ``index``."""
        raise NotImplementedError

    def head(self, sample: Sample) -> str:
        return self.intro

    def tail(self, sample: Sample) -> str:
        return f"\n\n{sample.question}"

    def load(self) -> list[Sample]:
        count = self.options.limit if self.options.limit is not None else DEFAULT_SAMPLES
        return [self.sample(i) for i in range(count)]

    def sample(self, index: int) -> Sample:
        """Sample ``index``: the same seed and index give the same text, facts and depths."""
        for attempt in range(16):
            rng = random.Random(f"{self.name}-{self.options.seed}-{index}-{attempt}")
            needles, question, answer, meta = self.facts(index, rng)
            built = self._build(Sample(str(index), "", question, [answer], meta), needles, rng)
            if built is not None:
                return built
        raise HmtbenchError(f"{self.name} sample {index}: every drawn value also occurs in the filler; "
                            "use another --filler")

    def _tokens(self, text: str, special: bool = True) -> int:
        return len(self.options.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _build(self, sample: Sample, needles: list[tuple[float, str]], rng: random.Random) -> Sample | None:
        """Fill ``sample``'s context to the asked length; None when a value also occurs in the filler."""
        fixed = self._tokens(self.prompt(sample)) + sum(self._tokens(text, False) for _, text in needles)
        filler = self.length - fixed
        if filler < 1:
            raise HmtbenchError(f"--context-length {self.length} is too short for {self.name}: its instructions, "
                                f"facts and question alone take {fixed} tokens")
        state = rng.getstate()
        for _ in range(2):
            rng.setstate(state)
            sample.context, pieces = self.haystack.build(filler, needles, rng)
            if any(value in piece for value in sample.meta["values"] for piece in pieces):
                return None  # the value would not be present exactly once
            got = self._tokens(self.prompt(sample))
            if abs(got - self.length) <= TOLERANCE * self.length:
                break
            filler += self.length - got
        sample.meta.update(context_tokens_asked=self.length, prompt_tokens=got, filler=self.haystack.corpus)
        return sample


def digits(rng: random.Random, count: int) -> str:
    return str(rng.randrange(10 ** (count - 1), 10**count))


class Passkey(NeedleTask):
    """One 5-digit pass key; sample i hides it at depth ``depths[i % len(depths)]``."""

    name = "passkey"
    max_new_tokens = 12

    def facts(self, index: int, rng: random.Random) -> tuple[list[tuple[float, str]], str, str, dict]:
        key = digits(rng, 5)
        depth = self.depths[index % len(self.depths)]
        needle = f"\nThe pass key is {key}. Remember it.\n"
        return [(depth, needle)], "What is the pass key? The pass key is", key, {"depth": depth, "values": [key]}


class MultiFact(NeedleTask):
    """One 7-digit number per person at each depth of ``--depth``; sample i asks for fact i % facts."""

    name = "multi-fact"
    max_new_tokens = 16
    default_depths = (0.25, 0.5, 0.75)

    def facts(self, index: int, rng: random.Random) -> tuple[list[tuple[float, str]], str, str, dict]:
        if len(self.depths) > len(NAMES):
            raise HmtbenchError(f"multi-fact hides at most {len(NAMES)} facts; give fewer --depth values")
        names = rng.sample(NAMES, len(self.depths))
        values: list[str] = []
        while len(values) < len(names):
            value = digits(rng, 7)
            values += [] if value in values else [value]
        asked = index % len(names)
        needles = [(d, f"\nThe special magic number for {n} is {v}.\n") for d, n, v in zip(self.depths, names, values,
                                                                                         strict=True)]
        question = f"What is the special magic number for {names[asked]}? The special magic number for " \
                   f"{names[asked]} is"
        meta = {"depth": self.depths[asked], "asked": names[asked], "facts": dict(zip(names, values, strict=True)),
                "values": values}
        return needles, question, values[asked], meta
