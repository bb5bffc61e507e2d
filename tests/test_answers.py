"""Short answers scored in one batched pass equal greedy decoding, sample by sample, for every method."""

from __future__ import annotations

import pytest
import torch

from hmtbench.config import EngineOptions
from hmtbench.fastpath import accelerate
from hmtbench.generation import greedy_generate
from hmtbench.methods import method_names
from hmtbench.qa.answers import score_answers
from hmtbench.qa.runner import answer_nll
from tests.conftest import build_method

SETTINGS = {"segment_length": 24, "sensory_tokens": 3, "recall_hidden_dim": 16, "recall_context": 4}
SEGMENTED = [name for name in method_names() if name != "full"] + ["full"]


@pytest.mark.parametrize("name", SEGMENTED)
def test_batched_teacher_forcing_is_greedy_decoding(name: str, llama: torch.nn.Module) -> None:
    """With the greedy continuation as the answer, every prediction matches; the NLL is the engine's.

    Prompt lengths put the answer inside a segment, right at a segment's start and across a boundary,
    so a summary that read an answer token (HMT) would change the recalled memory and show here.
    """
    model = build_method(name, llama, SETTINGS).eval()
    s = model.segment_tokens
    generator = torch.Generator().manual_seed(1)
    lengths = [3 * s + 2, 2 * s, 2 * s - 3, s + 1, 40]
    prompts = [torch.randint(0, 256, (n,), generator=generator, dtype=torch.int32) for n in lengths]
    greedy = [greedy_generate(model, p, 6).token_ids for p in prompts]
    wrong = [[(t + 1) % 259 for t in g] for g in greedy]
    runner = accelerate(model, EngineOptions(cuda_graphs=True))  # graph plumbing (eager on the CPU)
    scores = score_answers(model, runner, prompts, greedy)
    for prompt, answer, score in zip(prompts, greedy, scores, strict=True):
        assert score.predicted == answer and score.exact(answer) and score.tokens == 6
        nll, tokens = answer_nll(model, prompt, answer)
        assert tokens == 6 and score.nll == pytest.approx(nll, rel=1e-4, abs=1e-4)
    misses = score_answers(model, model, prompts, wrong)
    assert [m.predicted[0] for m in misses] == [g[0] for g in greedy]  # the first is predicted from the prompt
    assert not any(m.exact(w) for m, w in zip(misses, wrong, strict=True))


def test_a_summary_reads_only_the_tokens_known_when_its_segment_opens(llama: torch.nn.Module) -> None:
    """HMT: the batch's summary of the segment decoding opens in equals the one generation computes."""
    from hmtbench.answer_layout import ANSWER_ROOM
    from hmtbench.generation import prompt_layout, window_summaries
    from hmtbench.qa.answers import qa_batch

    model = build_method("hmt", llama, SETTINGS).eval()
    s = model.segment_tokens
    prompt = torch.randint(0, 256, (2 * s + 3,), generator=torch.Generator().manual_seed(2))
    answer = list(range(65, 65 + s))  # long enough to open one more segment while decoding
    batch = qa_batch([prompt], [answer], s, model.device, model.sensory_tokens)
    layout = prompt_layout(model, len(prompt))
    assert layout.first == (2 * s + 3 + ANSWER_ROOM) % s  # so the prompt ends ANSWER_ROOM before its segment ends
    assert (layout.index, layout.start) == (2, layout.first + s)
    open_tokens = len(prompt) - layout.start
    assert open_tokens == s - ANSWER_ROOM
    assert batch.known[0].tolist() == [layout.first, s, open_tokens, 1]  # ..., the prompt's tokens, the opening one
    assert batch.lengths[0].tolist() == [layout.first, s, s, len(prompt) + s - layout.first - 2 * s]
    with torch.no_grad():
        summaries = model.summarize(batch.segments, batch.known)
        start = layout.start
        opened = window_summaries(model, prompt[None, start - s : start], prompt[None, start:])
    torch.testing.assert_close(summaries[:, 2], opened, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "reach"), [("plain", 0), ("overlap", 1)])
def test_segments_no_state_carries_to_the_answer_are_skipped_exactly(name: str, reach: int,
                                                                     llama: torch.nn.Module) -> None:
    """Plain reads only the answer's segments, overlap one more: the scores equal reading every segment."""
    model = build_method(name, llama, SETTINGS).eval()
    assert model.state_reach == reach
    s = model.segment_tokens
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=generator, dtype=torch.int32) for n in (9 * s + 5, 7 * s + 2)]
    answers = [[5, 6, 7], [8, 9]]
    skipping = score_answers(model, model, prompts, answers)
    model.state_reach = None  # every segment read, as a memory method reads them
    reading_all = score_answers(model, model, prompts, answers)
    for fast, full in zip(skipping, reading_all, strict=True):
        assert fast.predicted == full.predicted and fast.nll == pytest.approx(full.nll, rel=1e-5)
        assert full.tokens_skipped == 0
    # each row skips its tokens before the first segment that can reach the batch's first answer segment
    from hmtbench.answer_layout import first_read_segment
    from hmtbench.qa.answers import first_answer_segment, qa_batch

    model.state_reach = reach
    batch = qa_batch(prompts, answers, s, model.device, model.sensory_tokens)
    start = first_read_segment(model, first_answer_segment(batch))
    assert start > 0 and [f.tokens_skipped for f in skipping] == batch.lengths[:, :start].sum(-1).tolist()
    assert skipping[1].tokens_skipped > 4 * s
    if reach:  # overlap's answer segment reads the k tokens before it: skipping them too changes the score
        model.state_reach = 0
        too_few = score_answers(model, model, prompts, answers)
        assert any(t.nll != pytest.approx(f.nll, rel=1e-5) for t, f in zip(too_few, skipping, strict=True))


@pytest.mark.parametrize("policy", ["fifo", "recall", "distinct"])
def test_a_recall_cache_sized_to_the_longest_document_answers_as_one_of_n_slots(llama: torch.nn.Module,
                                                                              policy: str) -> None:
    """eval-qa tells HMT the longest prompt and answer it will read (``most_tokens``): the recall cache then gets as
    many slots as such a document has segments (plus two), not N = 64, and every teacher-forced prediction, NLL and
    greedy answer equals the 64-slot cache's (nothing is dropped before a cache fills, under any policy)."""
    model = build_method("hmt", llama, {**SETTINGS, "recall_context": 64, "cache_policy": policy}).eval()
    s = model.segment_tokens
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=generator, dtype=torch.int32) for n in (5 * s + 2, 3 * s, 40)]
    slots = []
    empty_cache = model.recall.empty_cache
    model.recall.empty_cache = lambda rows, capacity, like: slots.append(capacity) or empty_cache(rows, capacity, like)

    def answers() -> tuple[list, list]:
        greedy = [greedy_generate(model, p, 2 * s).token_ids for p in prompts]  # decoding opens two more segments
        return greedy, [(a.predicted, round(a.nll, 4)) for a in score_answers(model, model, prompts, greedy)]

    unbounded = answers()
    assert set(slots) == {64}
    slots.clear()
    model.most_tokens = max(len(p) for p in prompts) + 2 * s
    assert model.cache_slots == 8 + 2 < 64  # ceil((5s + 2 + 2s) / s) + 2
    assert answers() == unbounded and set(slots) == {model.cache_slots}
