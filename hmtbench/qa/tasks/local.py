"""Any local ``.jsonl`` file with ``context``, ``question`` and ``answer`` on every line (``split`` optional)."""

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
    """``{"context": ..., "question": ..., "answer": "..." or [...]}`` per line; ``id`` is optional.

    Rows that carry ``split`` (train, validation or test) are read by split; a file without it is one set of rows,
    read for train and test alike, with no validation split.
    """

    metric = "f1"
    splits = ("train", "validation", "test")  # the file decides (``_of_split``)

    def __init__(self, options: TaskOptions, path: str) -> None:
        super().__init__(options)
        self.path = Path(path).expanduser()
        self.name = self.path.name

    def load(self) -> list[Sample]:
        samples = []
        for number, row in self._of_split(read_jsonl(self.path, FIELDS, "task file")):
            where = f"{self.path}:{number}"
            answers = answer_list(row["answer"], where)
            sample_id = str(row.get("id", f"{self.path.name}:{number}"))
            samples.append(Sample(sample_id, str(row["context"]), str(row["question"]), answers, {"line": number}))
        return self.limited(samples)

    def _of_split(self, rows: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
        """The rows of the asked split: those marked with it, or every row of a file that marks none."""
        split = self.options.split
        marked = [number for number, row in rows if "split" in row]
        if not marked:
            if split == "validation":
                raise HmtbenchError(f'{self.path} has no validation split: mark the rows to make choices on with '
                                    '"split": "validation" (and the others "train" or "test")')
            return rows
        if len(marked) < len(rows):
            unmarked = next(number for number, row in rows if "split" not in row)
            raise HmtbenchError(f"{self.path}:{unmarked} has no 'split' field while other rows have one; mark every "
                                "row with train, validation or test, or none")
        kept = [(number, row) for number, row in rows if row["split"] == split]
        if not kept:
            have = ", ".join(sorted({str(row["split"]) for _, row in rows}))
            raise HmtbenchError(f"{self.path} has no row of split '{split}' (its rows' splits: {have})")
        return kept
