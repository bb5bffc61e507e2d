"""PubMedQA (Jin et al., 2019, arXiv 1909.06146) in HMT's long-answer setting (docs/methods.md, "Departures", 10).

The abstracts of ``fuse_size`` consecutive rows are joined into one long context, and every
question of that group is asked against it; the gold answer is the row's ``long_answer``. The
test split is the last 10% of ``pqa_labeled`` (the reference's train[90%:]). Unlike the reference,
groups are rows [i, i + fuse_size) for i = 0, fuse_size, 2 fuse_size, ... (the reference
indexed i * fuse_size and skipped about half the rows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hmtbench.data.jsonl import read_jsonl
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task, TaskOptions
from hmtbench.qa.tasks.local import answer_list

HUB = ("qiaojin/PubMedQA", "pqa_labeled")
FIELDS = ("question", "context", "long_answer")
TEST_FROM = 0.9


def fuse_groups(rows: list[dict[str, Any]], fuse_size: int) -> list[list[dict[str, Any]]]:
    """Consecutive groups of ``fuse_size`` rows (the last may be shorter); every row in exactly one."""
    return [rows[i : i + fuse_size] for i in range(0, len(rows), fuse_size)]


def abstract_text(row: dict[str, Any]) -> str:
    context = row["context"]
    parts = context.get("contexts") if isinstance(context, dict) else context
    return parts if isinstance(parts, str) else " ".join(str(p) for p in parts)  # list or numpy array


class PubMedQA(Task):
    name = "pubmedqa"
    max_new_tokens = 256
    one_line = False

    def __init__(self, options: TaskOptions, fuse_size: int = 2) -> None:
        super().__init__(options)
        self.fuse_size = fuse_size

    def load(self) -> list[Sample]:
        rows = self._rows()
        samples = []
        for group in fuse_groups(rows, self.fuse_size):
            context = " ".join(abstract_text(r) for r in group)
            for row in group:
                where = f"pubmedqa pubid {row.get('pubid', row['_where'])}"
                answers = answer_list(row["long_answer"], where)
                samples.append(Sample(str(row.get("pubid", row["_where"])), context, str(row["question"]), answers,
                                      {"fused_pubids": [r.get("pubid") for r in group]}))
        return self.limited(samples)

    def tail(self, sample: Sample) -> str:
        return f" {sample.question}"  # the reference's text: context, question and answer joined by spaces

    def _rows(self) -> list[dict[str, Any]]:
        if self.options.data:
            return self._local_rows(Path(self.options.data).expanduser())
        try:
            import datasets

            table = datasets.load_dataset(*HUB, split="train")
        except Exception as err:  # offline or moved: one line with the way out
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
            raise HmtbenchError(
                f"could not load {HUB[0]} ({reason}); offline? pass --data with a .jsonl or .parquet copy "
                "of pqa_labeled (fields question, context.contexts, long_answer)"
            ) from None
        rows = [dict(r, _where=str(i)) for i, r in enumerate(table)]
        return rows[int(len(rows) * TEST_FROM) :]

    def _local_rows(self, path: Path) -> list[dict[str, Any]]:
        """A local copy is taken as the test rows already (no further split)."""
        if path.suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(path)
            missing = [f for f in FIELDS if f not in frame.columns]
            if missing:
                raise HmtbenchError(f"{path} has no '{missing[0]}' column; PubMedQA rows need {', '.join(FIELDS)}")
            return [dict(r, _where=f"{path}:{i}") for i, r in enumerate(frame.to_dict("records"))]
        return [dict(r, _where=f"{path}:{n}") for n, r in read_jsonl(path, FIELDS, "task file")]
