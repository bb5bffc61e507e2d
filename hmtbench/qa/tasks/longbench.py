"""LongBench (Bai et al., 2023, arXiv 2308.14508) NarrativeQA, Qasper, MuSiQue and QMSum test sets.

Rows hold ``input`` (the question), ``context`` and ``answers``. Prompts follow the HMT
reference code: a prompt line, the question, the document, then ``Answer:``; MuSiQue puts
the passages before the question. The data is the repository's ``data.zip`` (``datasets`` can no
longer run LongBench's loading script), or a local copy given with ``--data`` (the zip or the
task's ``.jsonl``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from hmtbench.data.jsonl import read_jsonl
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks.base import Sample, Task
from hmtbench.qa.tasks.local import answer_list

REPO = "THUDM/LongBench"
FIELDS = ("input", "context", "answers")


def download_longbench() -> Path:
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(REPO, "data.zip", repo_type="dataset"))
    except Exception as err:  # offline, renamed repo, no access: one line with the way out
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise HmtbenchError(
            f"could not download {REPO} data.zip ({reason}); offline? pass --data with a local copy of "
            "LongBench's data.zip or the task's .jsonl"
        ) from None


def longbench_rows(name: str, data: str | None) -> list[tuple[str, dict]]:
    """(where, row) of LongBench config ``name`` from ``data`` (zip or jsonl) or the hub."""
    path = Path(data).expanduser() if data else download_longbench()
    if path.suffix == ".jsonl":
        return [(f"{path}:{n}", row) for n, row in read_jsonl(path, FIELDS, "task file")]
    if path.suffix != ".zip" or not path.is_file():
        raise HmtbenchError(f"--data '{path}' must be LongBench's data.zip or the task's .jsonl file")
    member = f"data/{name}.jsonl"
    with zipfile.ZipFile(path) as archive:
        if member not in archive.namelist():
            raise HmtbenchError(f"'{path}' has no {member}; is it LongBench's data.zip?")
        lines = archive.read(member).decode("utf-8").splitlines()
    rows = [(f"{path}:{member}:{n}", json.loads(line)) for n, line in enumerate(lines, start=1) if line.strip()]
    for where, row in rows:
        missing = [f for f in FIELDS if f not in row]
        if missing:
            raise HmtbenchError(f"{where} has no '{missing[0]}' field; LongBench rows need {', '.join(FIELDS)}")
    return rows


class LongBenchTask(Task):
    """Shared loader and prompt; subclasses give the config name, prompt line and answer length."""

    instruction = "Answer the question based on the provided document."
    document_label = "Document"
    question_first = True

    def load(self) -> list[Sample]:
        samples = []
        for where, row in longbench_rows(self.name, self.options.data):
            answers = answer_list(row["answers"], where)
            sample_id = str(row.get("_id") or where)
            samples.append(Sample(sample_id, str(row["context"]), str(row["input"]), answers))
        return self.limited(samples)

    def head(self, sample: Sample) -> str:
        document = f"{self.document_label}: "
        if self.question_first:
            return f"Prompt: {self.instruction}\nQuestion: {sample.question}\n{document}"
        return f"Prompt: {self.instruction}\n{document}"

    def tail(self, sample: Sample) -> str:
        return "\nAnswer:" if self.question_first else f"\nQuestion: {sample.question}\nAnswer:"


class NarrativeQA(LongBenchTask):
    name = "narrativeqa"
    max_new_tokens = 128


class Qasper(LongBenchTask):
    name = "qasper"
    instruction = "Answer the question based on the provided scientific context."
    document_label = "Scientific Context"
    max_new_tokens = 128


class MuSiQue(LongBenchTask):
    name = "musique"
    metric = "f1"
    max_new_tokens = 32
    question_first = False


class QMSum(LongBenchTask):
    name = "qmsum"
    instruction = "Answer the query based on the provided meeting transcript."
    document_label = "Transcript"
    max_new_tokens = 512
    one_line = False
