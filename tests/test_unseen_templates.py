"""Unseen wordings: passkeys whose sentences no training task produces, built at every length like passkey."""

from __future__ import annotations

import re

import pytest

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.errors import HmtbenchError
from hmtbench.qa.tasks import TASKS, TaskOptions, load_task
from hmtbench.training.config import CurriculumSettings
from tests.test_passkey import check_sample

UNSEEN = ["passkey-unseen-a", "passkey-unseen-b"]


def sentences(task, sample, tokenizer) -> set[str]:
    """The sentences of a sample's own words (instructions, facts, question; not the filler), each value and name
    replaced by a placeholder, so two wordings that differ only in their keys count as one sentence."""
    ids = sample.prompt_ids.tolist()
    facts = [tokenizer.decode(ids[a:b]) for a, b in zip(sample.meta["needle_starts"], sample.meta["needle_ends"],
                                                           strict=True)]
    words = " \n".join([task.head(sample), *facts, task.tail(sample)])
    for value in sample.meta["values"]:
        words = words.replace(value, "<value>")
    for name in sample.meta.get("facts", {}):
        words = words.replace(name, "<name>")
    return {part.strip() for part in re.split(r"(?<=[.?!;])\s+|\n+", words) if part.strip()}


def test_training_and_the_unseen_wordings_share_no_sentence() -> None:
    """Every sentence training writes (passkey and multi-fact as answer training draws them, at several levels and
    depths) against every sentence of the unseen tasks' samples."""
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()
    trained: set[str] = set()
    for name in ("passkey", "multi-fact"):
        sampler = AnswerSampler(CurriculumSettings(task=name, segments=[2, 4]), tokenizer, 300, seed=3407)
        for k in range(8):
            trained |= sentences(sampler.task, sampler.sample(k, 2 + 2 * (k % 2)), tokenizer)
    assert {"The pass key is <value>.", "Remember it.", "What is the pass key?",
            "The special magic number for <name> is <value>."} <= trained  # the extraction finds the templates
    unseen: dict[str, set[str]] = {}
    for name in UNSEEN:
        task = load_task(name, TaskOptions(tokenizer=tokenizer, context_length=2000, limit=5))
        unseen[name] = set().union(*(sentences(task, s, tokenizer) for s in task.load()))
        assert len(unseen[name]) >= 5 and not unseen[name] & trained, unseen[name] & trained
    assert unseen["passkey-unseen-a"] != unseen["passkey-unseen-b"]  # two wordings, not one


@pytest.mark.parametrize("name", UNSEEN)
@pytest.mark.parametrize("length", [1000, 4096, 30000, 1_000_000])
def test_unseen_samples_build_at_every_length_like_passkey(name: str, length: int) -> None:
    tokenizer = byte_tokenizer()
    task = load_task(name, TaskOptions(tokenizer=tokenizer, context_length=length, limit=5 if length < 10**6 else 1))
    samples = task.load()
    assert [s.meta["depth"] for s in samples] == [0.0, 0.25, 0.5, 0.75, 1.0][: len(samples)]
    assert {s.meta["template"] for s in samples} == {name}
    for sample in samples:
        check_sample(task, sample, tokenizer, length)


def test_the_second_wording_answers_a_word_and_digits_that_fit_the_answer_room() -> None:
    from hmtbench.answer_layout import ANSWER_ROOM

    tokenizer = byte_tokenizer()
    task = load_task("passkey-unseen-b", TaskOptions(tokenizer=tokenizer, context_length=1000, limit=20))
    answers = [s.answers[0] for s in task.load()]
    assert all(re.fullmatch(r"[a-z]{3,5}-\d{4}", a) for a in answers) and len(set(answers)) == 20
    assert max(len(task.answer_ids(s, tokenizer)) for s in task.load()) <= ANSWER_ROOM  # byte tokens, end included


@pytest.mark.parametrize("name", UNSEEN)
def test_answer_training_refuses_the_unseen_wordings(name: str) -> None:
    from hmtbench.training.answers import AnswerSampler

    assert name in TASKS
    with pytest.raises(HmtbenchError, match=f"--task {name} is held out of training"):
        AnswerSampler(CurriculumSettings(task=name, segments=[2]), byte_tokenizer(), 300, seed=0)
