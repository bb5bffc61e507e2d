"""Any local ``.jsonl`` file with ``context``, ``question`` and ``answer`` on every line."""

from __future__ import annotations

import json
from pathlib import Path

from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions

FIELDS = ("context", "question", "answer")


def read_jsonl(path: Path, fields: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, row) of every non-empty line; a bad line or a missing field is one clear error."""
    if not path.is_file():
        raise HmtbenchError(f"task file '{path}' does not exist; check the path")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HmtbenchError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise HmtbenchError(f"{path}:{number} is not a JSON object; every line needs {', '.join(fields)}")
        for name in fields:
            if name not in row:
                raise HmtbenchError(f"{path}:{number} has no '{name}' field; every line needs {', '.join(fields)}")
        rows.append((number, row))
    if not rows:
        raise HmtbenchError(f"task file '{path}' holds no sample")
    return rows


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
        for number, row in read_jsonl(self.path, FIELDS):
            where = f"{self.path}:{number}"
            answers = answer_list(row["answer"], where)
            sample_id = str(row.get("id", f"{self.path.name}:{number}"))
            samples.append(Sample(sample_id, str(row["context"]), str(row["question"]), answers, {"line": number}))
        return self.limited(samples)
