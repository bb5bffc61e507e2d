"""Answer training's samples: each level's contexts span its segments, never repeat evaluation's, and put their
facts where ``curriculum.needles`` says (anywhere, earlier, apart; ``question_segment_share`` of them in the
question's own segment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hmtbench.answer_layout import ANSWER_ROOM, answer_layout_segments
from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.errors import HmtbenchError
from hmtbench.training.config import CurriculumSettings
from tests.conftest import load_script


def test_generated_training_samples_span_the_level_and_never_repeat_evaluation(tmp_path: Path) -> None:
    from hmtbench.qa.tasks import TaskOptions, load_task
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()
    sampler = AnswerSampler(CurriculumSettings(task="passkey", segments=[2, 3]), tokenizer, 300, seed=3407)
    ids, lengths, scored, prompts, before = sampler.batch(0, 6, 3)
    spans = [answer_layout_segments(int(p), int(n), 300) for p, n in zip(prompts, lengths, strict=True)]
    assert spans == [3] * 6  # prompt and answer span exactly 3 segments of eval-qa's answer layout
    assert ((prompts + ANSWER_ROOM > 2 * 300) & (prompts + ANSWER_ROOM <= 3 * 300)).all()
    assert (scored.sum(-1) == 7).all()  # " " + 5 digits + the end of the answer
    evaluation = load_task("passkey", TaskOptions(tokenizer=tokenizer, context_length=700, limit=6)).load()
    keys = {tokenizer.decode(ids[r, prompts[r] + 1 : lengths[r] - 1].tolist()) for r in range(6)}
    assert not keys & {s.answers[0] for s in evaluation}
    again = sampler.batch(0, 6, 3)
    assert torch.equal(again[0], ids)  # a pure function of the batch index


@pytest.mark.parametrize(("task", "S"), [("passkey", 300), ("multi-fact", 600)])
def test_needles_earlier_put_every_fact_in_a_segment_before_the_questions(task: str, S: int) -> None:
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()
    sampler = AnswerSampler(CurriculumSettings(task=task, segments=[1, 2, 3], needles="earlier"), tokenizer, S, 3407)
    anywhere = AnswerSampler(CurriculumSettings(task=task, segments=[1, 2, 3]), tokenizer, S, 3407)
    for segments in (2, 3):
        late = 0
        needle = len(tokenizer("\nThe pass key is 12345. Remember it.\n", add_special_tokens=False)["input_ids"])
        needle = needle if task == "passkey" else 1  # multi-fact: the last fact starts before the boundary
        for k in range(40):
            sample = sampler.sample(k, segments)
            length = len(sample.prompt_ids)
            question_segment = length + ANSWER_ROOM - S  # the answer layout: the prompt ends ANSWER_ROOM before its end
            assert max(sample.meta["needle_starts"]) + needle <= question_segment, (k, sample.meta["needle_starts"])
            assert answer_layout_segments(length, length + 6, S) == segments
            other = anywhere.sample(k, segments)
            late += max(other.meta["needle_starts"]) >= len(other.prompt_ids) + ANSWER_ROOM - S
        assert late > 0  # without the option some facts do sit in the question's segment
    assert sampler.sample(0, 1).prompt_ids.shape == anywhere.sample(0, 1).prompt_ids.shape  # level 1: no earlier


def test_needles_apart_put_each_fact_whole_in_a_segment_of_its_own_before_the_questions() -> None:
    """A span write holds one fact per segment: with needles: apart every multi-fact training sample's three facts
    lie whole in three different segments before the question's; with needles: earlier many do not."""
    from hmtbench.training.answers import AnswerSampler, facts_apart

    tokenizer, S = byte_tokenizer(), 300

    def sampler(needles: str) -> AnswerSampler:
        return AnswerSampler(CurriculumSettings(task="multi-fact", segments=[5, 8], needles=needles), tokenizer, S,
                             3407)

    apart, earlier = sampler("apart"), sampler("earlier")
    for segments in (5, 8):
        shared = 0
        for k in range(30):
            sample = apart.sample(k, segments)
            question_segment = len(sample.prompt_ids) + ANSWER_ROOM - S
            assert facts_apart(sample, S) and max(sample.meta["needle_ends"]) <= question_segment, k
            assert answer_layout_segments(len(sample.prompt_ids), len(sample.prompt_ids) + 8, S) == segments
            shared += not facts_apart(earlier.sample(k, segments), S)
        assert shared >= 5, shared  # independent depths often put two facts in one segment
    with pytest.raises(HmtbenchError, match="start the curriculum at 4 segments"):
        AnswerSampler(CurriculumSettings(task="multi-fact", segments=[3, 4], needles="apart"), tokenizer, S, 0)


def test_facts_apart_reads_segments_back_from_the_answer_layouts_end() -> None:
    """Segments end ANSWER_ROOM positions after the prompt, every S tokens back: a fact across a boundary is not
    whole, two facts in one segment are not apart."""
    from types import SimpleNamespace

    from hmtbench.training.answers import facts_apart

    S, prompt = 100, 300 - ANSWER_ROOM  # segments [200, 300), [100, 200), [0, 100) in prompt positions

    def sample(*needles: tuple[int, int]) -> SimpleNamespace:
        return SimpleNamespace(prompt_ids=[0] * prompt, meta={"needle_starts": [a for a, _ in needles],
                                                              "needle_ends": [b for _, b in needles]})

    assert facts_apart(sample((10, 30), (120, 150), (200, 220)), S)
    assert not facts_apart(sample((10, 30), (50, 70)), S)  # both in [0, 100)
    assert not facts_apart(sample((90, 110), (150, 170)), S)  # the first crosses 100
    assert facts_apart(sample((80, 100), (100, 120)), S)  # ends are exclusive: [80, 100) and [100, 120)


@pytest.mark.parametrize(("task", "S"), [("passkey", 300), ("multi-fact", 600)])
def test_question_segment_share_puts_that_share_of_the_facts_in_the_questions_segment(task: str, S: int) -> None:
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()

    def sampler(share: float) -> AnswerSampler:
        curriculum = CurriculumSettings(task=task, segments=[2, 3], needles="earlier", question_segment_share=share)
        return AnswerSampler(curriculum, tokenizer, S, 3407)

    every, half = sampler(1.0), sampler(0.5)
    for segments in (2, 3):
        in_question = []
        for k in range(40):
            sample = every.sample(k, segments)
            question_segment = len(sample.prompt_ids) + ANSWER_ROOM - S
            assert min(sample.meta["needle_starts"]) >= question_segment, (k, sample.meta["needle_starts"])
            assert answer_layout_segments(len(sample.prompt_ids), len(sample.prompt_ids) + 6, S) == segments
            mixed = half.sample(k, segments)
            in_question.append(min(mixed.meta["needle_starts"]) >= len(mixed.prompt_ids) + ANSWER_ROOM - S)
        assert 10 <= sum(in_question) <= 30, sum(in_question)  # about half of 40


def test_question_segment_share_is_checked() -> None:
    with pytest.raises(HmtbenchError, match="in \\[0, 1\\]"):
        CurriculumSettings(task="passkey", needles="earlier", question_segment_share=1.5)
    with pytest.raises(HmtbenchError, match="applies to needles: earlier"):
        CurriculumSettings(task="passkey", question_segment_share=0.25)


def test_needles_earlier_with_segments_shorter_than_the_shortest_prompt_still_draw_two_segment_samples() -> None:
    """Segments shorter than instructions + fact + question (down to a level holding the shortest prompt alone):
    every draw spans the level, the fact as early as it goes (depth 0; the shortest once divided by zero)."""
    from hmtbench.training.answers import AnswerSampler

    tokenizer = byte_tokenizer()
    shortest = AnswerSampler(CurriculumSettings(task="passkey", segments=[2]), tokenizer, 300, 0).shortest
    for S in range((shortest + ANSWER_ROOM + 1) // 2, shortest, 7):  # 2 S - ANSWER_ROOM >= shortest: the level fits
        sampler = AnswerSampler(CurriculumSettings(task="passkey", segments=[2], needles="earlier"), tokenizer, S, 0)
        for k in range(20):
            length = len(sampler.sample(k, 2).prompt_ids)
            assert shortest <= length <= 2 * S - ANSWER_ROOM and answer_layout_segments(length, length + 6, S) == 2


def test_the_memory_oracle_takes_the_positions_that_hold_the_key() -> None:
    """scripts/memory_oracle.py fills the read slot from these positions: the key's digits must sit in them."""
    oracle = load_script("memory_oracle")
    from hmtbench.training.answers import AnswerSampler

    tokenizer, size, m = byte_tokenizer(), 200, 16
    sampler = AnswerSampler(CurriculumSettings(task="passkey", segments=[2], needles="earlier"), tokenizer, size, 3)
    at = oracle.needle_positions(sampler, tokenizer, 6, size, m)
    for row in range(6):
        sample = sampler.sample(row, 2)
        taken = tokenizer.decode(sample.prompt_ids[at[row]].tolist())
        assert sample.meta["values"][0] in taken, (taken, sample.meta["values"])
