"""Greedy decoding through the methods: equals HF generate for one segment, continues the recurrence across
segment boundaries exactly as the segment loop scores it, and the answer perplexity counts the answer only."""

from __future__ import annotations

import json

import pytest
import torch

from hmtbench.backbones.tiny import EOS, byte_tokenizer
from hmtbench.engine import ANSWER_ROOM, segment_batch
from hmtbench.generation import greedy_generate, prompt_layout, read_context
from hmtbench.methods.base import SegmentMethod
from hmtbench.qa import runner
from hmtbench.qa.runner import answer_nll, answer_nll_and_context, evaluate_sample, prepare_samples
from hmtbench.qa.tasks import TaskOptions, load_task
from tests.conftest import build_method, random_documents

MEMORY_SETTINGS = [
    ("plain", {}),
    ("rmt", {"memory_tokens": 2}),
    ("rmt", {"memory_tokens": 2, "write": "span"}),
    ("hmt", {"stage": 1, "sensory_tokens": 4}),
    ("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16}),
    ("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16, "memory_tokens": 2, "write": "span", "segment_length": 26}),
]
SETTING_IDS = ["plain", "rmt", "rmt-span", "hmt-stage1", "hmt", "hmt-span"]


def teacher_forced_logits(method: SegmentMethod, ids: torch.Tensor, known: dict[int, int] | None = None,
                          first: int | None = None):
    """(T, V) logits of the segment loop on ids (1, T); ``known`` = {segment: tokens its summary may read};
    ``first``: tokens in the first segment (QA's answer layout, ``prompt_layout``), default a whole segment."""
    size = method.segment_tokens
    first_lengths = None if first is None else torch.tensor([first])
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), size, first_lengths=first_lengths)
    summary_lengths = batch.lengths.clone()
    for segment, tokens in (known or {}).items():
        summary_lengths[0, segment] = tokens
    with torch.no_grad():
        summaries = method.summarize(batch.segments, summary_lengths)
        state, logits = method.initial_state(1), []
        for i in range(batch.segments.shape[1]):
            summary = None if summaries is None else summaries[:, i]
            out = method(state, batch.segments[:, i], batch.lengths[:, i], summary)
            state = out.state
            logits.append(out.logits)
    return torch.cat(logits, dim=1)[0, placed(torch.arange(ids.shape[1]), size, first or size)]


def placed(positions: torch.Tensor, size: int, first: int) -> torch.Tensor:
    """Where tokens at ``positions`` sit among the segments when the first segment holds ``first`` tokens."""
    return torch.where(positions < first, positions, positions + size - first)


@pytest.mark.parametrize("method", ["plain", "full"])
def test_one_segment_equals_backbone_generate(backbone: torch.nn.Module, method: str) -> None:
    prompt = random_documents(1, 30, seed=3)
    model = build_method(method, backbone, {"segment_length": 128})
    ours = greedy_generate(model, prompt[0], 40, stop_ids={EOS})
    with torch.no_grad():
        reference = backbone.generate(prompt, max_new_tokens=40, do_sample=False, eos_token_id=EOS, pad_token_id=EOS)
    assert ours.token_ids == reference[0, 30:].tolist()
    assert ours.segments_opened == 1 and ours.context_segments == 0


@pytest.mark.parametrize(("name", "settings"), MEMORY_SETTINGS, ids=SETTING_IDS)
@pytest.mark.parametrize("prompt_length", [30, 36, 37])
def test_decoding_crosses_segment_boundaries_like_the_segment_loop(
    backbone: torch.nn.Module, name: str, settings: dict, prompt_length: int
) -> None:
    torch.manual_seed(0)
    model = build_method(name, backbone, {"segment_length": 24, **settings}).eval()
    size = model.segment_tokens  # 24, 20, 20, 18, 18, 18
    prompt = random_documents(1, prompt_length, seed=5)
    new = 2 * size + 3
    out = greedy_generate(model, prompt[0], new, keep_logits=True)
    assert len(out.token_ids) == new
    layout = prompt_layout(model, prompt_length)  # the prompt ends ANSWER_ROOM positions before its segment does
    assert size - (prompt_length - layout.start) == ANSWER_ROOM or layout.start == 0
    at = [int(placed(torch.tensor(t), size, layout.first)) for t in (prompt_length - 1, prompt_length + new - 1)]
    assert out.segments_opened == 1 + at[1] // size - at[0] // size
    assert out.segments_opened >= 3 and out.context_segments == layout.index
    # the same tokens read teacher-forced by the segment loop give the same logits at every step; summaries
    # of segments opened while decoding read only the tokens known when they opened (generation module doc)
    ids = torch.cat([prompt, torch.tensor([out.token_ids[:-1]])], dim=1)
    last = int(placed(torch.tensor(ids.shape[1] - 1), size, layout.first)) // size
    known = {layout.index: prompt_length - layout.start}
    known.update({s: 1 for s in range(layout.index + 1, last + 1)})
    expected = teacher_forced_logits(model, ids, known, layout.first)[prompt_length - 1 :]
    torch.testing.assert_close(torch.stack(out.logits), expected, atol=2e-4, rtol=1e-4)
    assert [int(t) for t in expected.argmax(-1)] == out.token_ids


def test_memory_carries_the_context_into_decoding(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    model = build_method("rmt", llama, {"segment_length": 24}).eval()
    a, b = random_documents(1, 44, seed=1), random_documents(1, 44, seed=2)
    b[:, 22:] = a[:, 22:]  # same open segment, different earlier segment
    gen_a = greedy_generate(model, a[0], 1, keep_logits=True).logits[0]
    gen_b = greedy_generate(model, b[0], 1, keep_logits=True).logits[0]
    assert (gen_a - gen_b).abs().max() > 1e-4  # only the memory differs
    plain = build_method("plain", llama, {"segment_length": 22})
    plain_a = greedy_generate(plain, a[0], 1, keep_logits=True).logits[0]
    plain_b = greedy_generate(plain, b[0], 1, keep_logits=True).logits[0]
    torch.testing.assert_close(plain_a, plain_b)  # plain keeps nothing of the earlier segment


def test_answer_nll_counts_exactly_the_answer_tokens(llama: torch.nn.Module) -> None:
    prompt, answer = list(range(40, 70)), [65, 66, 67, 68, 69, 70, 71]
    plain = build_method("plain", llama, {"segment_length": 64})
    nll, tokens = answer_nll(plain, prompt, answer)
    assert tokens == 7
    with torch.no_grad():
        logp = llama(input_ids=torch.tensor([prompt + answer])).logits[0].log_softmax(-1)
    by_hand = -sum(logp[29 + i, token].item() for i, token in enumerate(answer))  # answer[i] predicted at 29 + i
    assert nll == pytest.approx(by_hand, abs=1e-4)
    # through RMT (S = 22) the prompt ends ANSWER_ROOM positions before its segment does
    torch.manual_seed(0)
    rmt = build_method("rmt", llama, {"segment_length": 24}).eval()
    nll, tokens = answer_nll(rmt, prompt[:20], answer)  # a first segment of 10: answer at 20..26 in segment 1
    assert tokens == 7 and prompt_layout(rmt, 20).first == 10
    logp = teacher_forced_logits(rmt, torch.tensor([prompt[:20] + answer]), first=10).log_softmax(-1)
    assert nll == pytest.approx(-sum(logp[19 + i, t].item() for i, t in enumerate(answer)), abs=1e-4)


@pytest.mark.parametrize(("name", "settings"), MEMORY_SETTINGS, ids=SETTING_IDS)
def test_one_pass_scores_the_answer_and_reads_the_context_for_generation(
    llama: torch.nn.Module, name: str, settings: dict
) -> None:
    torch.manual_seed(0)
    model = build_method(name, llama, {"segment_length": 24, **settings}).eval()
    prompt, answer = random_documents(1, 50, seed=4)[0].tolist(), [80, 81, 82, 83, 84, 85, 86, 87, 88, 89]
    nll, tokens, context = answer_nll_and_context(model, prompt, answer)
    reference_nll, reference_tokens = answer_nll(model, prompt, answer)
    assert tokens == reference_tokens == 10
    assert nll == pytest.approx(reference_nll, abs=1e-5)
    alone = read_context(model, torch.tensor([prompt]))
    assert context.start == alone.start == prompt_layout(model, 50).start > 0
    shared = greedy_generate(model, prompt, 8, context=context, keep_logits=True)
    fresh = greedy_generate(model, prompt, 8, keep_logits=True)
    assert shared.token_ids == fresh.token_ids
    torch.testing.assert_close(torch.stack(shared.logits), torch.stack(fresh.logits))


def test_the_prompt_holds_no_answer_token(tmp_path, llama: torch.nn.Module, monkeypatch) -> None:
    rows = [{"context": "The sky over the harbour was grey all day.", "question": "Which word is hidden?",
             "answer": "xylophone"}]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    tokenizer = byte_tokenizer()
    task = load_task(str(path), TaskOptions(tokenizer=tokenizer))
    [item], skipped = prepare_samples(task, task.load(), tokenizer, None)
    assert skipped == 0
    assert "xylophone" not in task.prompt(item.sample)
    assert item.prompt_ids.tolist() == tokenizer(task.prompt(item.sample))["input_ids"]
    assert item.answer_ids == list(b" xylophone")  # byte tokenizer: one id per byte, no special token
    seen = {}

    def spy(method, prompt_ids, max_new_tokens, **kwargs):
        seen["prompt"] = torch.as_tensor(prompt_ids).tolist()
        return greedy_generate(method, prompt_ids, max_new_tokens, **kwargs)

    monkeypatch.setattr(runner, "greedy_generate", spy)
    record = evaluate_sample(build_method("plain", llama, {"segment_length": 32}), task, item, tokenizer, 5)
    assert seen["prompt"] == item.prompt_ids.tolist()  # generation starts from the prompt alone
    assert record["answer_tokens"] == len(" xylophone")
    assert record["prompt_tokens"] == len(item.prompt_ids)
    assert 1 <= record["generated_tokens"] <= 5
