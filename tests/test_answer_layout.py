"""QA's answer layout: a prompt ends ANSWER_ROOM positions before its segment does, at every length.

Cut from the start, a prompt that fills whole segments (1,024 tokens in 256-token segments) left the answer
alone in a fresh segment and the question in the one before it: plain could not answer a key sitting right
next to the question, and a memory method had to carry the question too, unlike in its training samples.
"""

from __future__ import annotations

import pytest
import torch

from hmtbench.answer_layout import ANSWER_ROOM, answer_first_segments
from hmtbench.engine import IGNORE, segment_batch
from hmtbench.qa.answers import qa_batch
from tests.conftest import build_method

S = 32


@pytest.mark.parametrize("prompt_length", [5, 20, 21, 64, 65, 96, 100, 1024])
@pytest.mark.parametrize("sensory", [0, 8])
def test_the_answer_shares_its_segment_with_the_prompts_end(prompt_length: int, sensory: int) -> None:
    prompt, answer = torch.arange(1, prompt_length + 1) % 250 + 1, [7, 8, 9, 10, 11, 12]
    batch = qa_batch([prompt], [answer], S, torch.device("cpu"), sensory)
    holds_answer = (batch.targets[0] != IGNORE).any(-1).nonzero().flatten().tolist()
    assert len(holds_answer) == 1  # six answer tokens never straddle a boundary
    segment = holds_answer[0]
    prompt_tokens = int(batch.known[0, segment])
    if prompt_length + ANSWER_ROOM <= S:  # one segment: the start-aligned layout
        assert batch.lengths[0].tolist() == [prompt_length + 6] and prompt_tokens == prompt_length
    else:
        natural = (prompt_length + ANSWER_ROOM - 1) % S + 1
        first = int(batch.lengths[0, 0])
        assert first == max(natural, sensory, 1)  # a sensory method reads k tokens of the first segment
        assert prompt_tokens == S - ANSWER_ROOM - (first - natural)  # the question and the context's end
    assert int(batch.lengths[0].sum()) == prompt_length + 6  # every token placed once
    placed = batch.segments[0][torch.arange(S)[None] < batch.lengths[0][:, None]]
    assert torch.equal(placed, torch.cat([prompt, torch.tensor(answer)]))  # in order


def test_a_whole_first_segment_is_the_start_aligned_cut() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (3, 23), generator=generator)
    lengths = torch.tensor([23, 17, 9])
    ids[torch.arange(23)[None] >= lengths[:, None]] = 0
    scored, prompts = torch.rand(3, 23, generator=generator) > 0.3, torch.tensor([20, 10, 4])
    start = segment_batch(ids, lengths, 8, scored, prompts)
    whole = segment_batch(ids, lengths, 8, scored, prompts, first_lengths=torch.full((3,), 8))
    for field in ("segments", "lengths", "targets", "known"):
        assert torch.equal(getattr(start, field), getattr(whole, field)), field
    assert answer_first_segments(torch.tensor([20, 21, 44]), 32).tolist() == [32, 1, 24]  # 21 + 12 = 33: one over


@pytest.mark.parametrize("name", ["overlap", "hmt"])
def test_sensory_tokens_after_a_short_segment_are_its_last_tokens(name: str, llama: torch.nn.Module) -> None:
    model = build_method(name, llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16}).eval()
    size = model.segment_tokens
    segment = torch.zeros(1, size, dtype=torch.long)
    segment[0, :9] = torch.arange(31, 40)
    with torch.no_grad():
        state = model(model.initial_state(1), segment, torch.tensor([9])).state
    assert state.sensory_ids.tolist() == [[36, 37, 38, 39]]  # not the padding after them


def test_whole_first_segments_cut_rows_as_the_plain_cut_does() -> None:
    """``segment_batch`` has one cut: first segments of S tokens (``first_lengths``) give what no ``first_lengths``
    gives, targets, known tokens and the zeros after each row included."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.tensor([70, 5, 64, 33])
    ids = torch.randint(1, 250, (4, 70), generator=generator) * (torch.arange(70)[None] < lengths[:, None])
    scored = torch.rand(4, 70, generator=generator) < 0.7
    prompts = torch.tensor([40, 3, 64, 1])
    plain = segment_batch(ids, lengths, S, scored, prompts)
    whole = segment_batch(ids, lengths, S, scored, prompts, first_lengths=torch.full((4,), S))
    for name in ("segments", "lengths", "targets", "known"):
        assert torch.equal(getattr(plain, name), getattr(whole, name)), name
