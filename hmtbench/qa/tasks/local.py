"""Any local ``.jsonl`` file with ``context``, ``question`` and ``answer`` on every line."""

from __future__ import annotations

from pathlib import Path

from hmtbench.data.jsonl import read_jsonl
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions

FIELDS = ("context", "question", "answer")


def answer_list(value: object, where: str) -> list[str]:
    """An answer field (a string or a list of strings) as a list of non-empty strings."""
    answers = [value] if isinstance(value, str) else value
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise HmtbenchError(f"{where}: the answer must be a string or a list of strings")
    answers = [a.strip() for a in answers if a.strip()]
    if not answers:
        raise HmtbenchError(f"{where} has an empty answer; every sample needs a non-empty gold answer")
    return answers


class LocalJsonl(Task):
    """``{"context": ..., "question": ..., "answer": "..." or [...]}`` per line; ``id`` is optional."""

    metric = "f1"

    def __init__(self, options: TaskOptions, path: str) -> None:
        super().__init__(options)
        self.path = Path(path).expanduser()
        self.name = self.path.name

    def load(self) -> list[Sample]:
        samples = []
        for number, row in read_jsonl(self.path, FIELDS, "task file"):
            where = f"{self.path}:{number}"
            answers = answer_list(row["answer"], where)
            sample_id = str(row.get("id", f"{self.path.name}:{number}"))
            samples.append(Sample(sample_id, str(row["context"]), str(row["question"]), answers, {"line": number}))
        return self.limited(samples)
