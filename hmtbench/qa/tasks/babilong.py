"""BABILong (Kuratov et al., 2024, arXiv 2406.10149): bAbI facts hidden in PG-19 text, qa1 to qa5.

The hub dataset ``RMT-team/babilong`` is binned by context length (configs ``0k`` ... ``1M``,
split = the bAbI task); ``--context-length`` picks the bin (4096 or 4000 -> ``4k``). Rows hold
``input`` (the long text), ``question`` and ``target`` (one word); the score is accuracy
(the target inside the first line of the answer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hmtbench.data.jsonl import read_jsonl
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions
from hmtbench.qa.tasks.local import answer_list

HUB = "RMT-team/babilong"
BINS = ("0k", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1M")
FIELDS = ("input", "question", "target")
DEFAULT_LENGTH = 4096


def length_bin(tokens: int) -> str:
    """The BABILong config for a context length: 4096 or 4000 -> '4k', 2**20 or 10**6 -> '1M'."""
    if tokens in (2**20, 10**6):
        return "1M"
    for unit in (1024, 1000):
        if tokens % unit == 0 and f"{tokens // unit}k" in BINS:
            return f"{tokens // unit}k"
    sizes = ", ".join(f"{b} ({int(b[:-1]) * (1024 if b.endswith('k') else 2**20)})" for b in BINS[1:])
    raise HmtbenchError(f"BABILong has no {tokens}-token bin; --context-length must be one of its bins: {sizes}")


class BabiLong(Task):
    metric = "accuracy"
    short_answer = True
    max_new_tokens = 16
    builds_length = True

    def __init__(self, options: TaskOptions, qa: str) -> None:
        self.qa = qa
        self.name = f"babilong-{qa}"
        super().__init__(options)
        self.bin = length_bin(options.context_length or DEFAULT_LENGTH)

    def load(self) -> list[Sample]:
        samples = []
        for where, row in self._rows():
            missing = [f for f in FIELDS if f not in row]
            if missing:
                raise HmtbenchError(f"{where} has no '{missing[0]}' field; BABILong rows need {', '.join(FIELDS)}")
            answers = answer_list(row["target"], where)
            samples.append(Sample(f"{self.qa}-{self.bin}-{where.rsplit(':', 1)[-1]}", str(row["input"]),
                                  str(row["question"]), answers, {"bin": self.bin}))
        return self.limited(samples)

    def head(self, sample: Sample) -> str:
        return "Answer the question about the facts in the text below with one word.\n\n<context>\n"

    def tail(self, sample: Sample) -> str:
        return f"\n</context>\n\nQuestion: {sample.question}\nAnswer:"

    def _rows(self) -> list[tuple[str, dict[str, Any]]]:
        if self.options.data:
            path = Path(self.options.data).expanduser()
            if path.suffix == ".json":  # the repository's data/<qa>/<bin>.json files: one JSON list
                rows = json.loads(path.read_text(encoding="utf-8"))
                return [(f"{path}:{i}", r) for i, r in enumerate(rows)]
            return [(f"{path}:{n}", r) for n, r in read_jsonl(path, FIELDS, "task file")]
        try:
            import datasets

            table = datasets.load_dataset(HUB, self.bin, split=self.qa)
        except Exception as err:  # offline or missing bin: one line with the way out
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise HmtbenchError(
                f"could not load {HUB} {self.bin}/{self.qa} ({reason}); offline? pass --data with a local "
                ".jsonl or .json copy (fields input, question, target)"
            ) from None
        return [(f"{self.name}:{i}", dict(r)) for i, r in enumerate(table)]
