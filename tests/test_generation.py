"""Greedy decoding through the methods: equals HF generate for one segment, continues the recurrence across
segment boundaries exactly as the segment loop scores it, and the answer perplexity counts the answer only."""

from __future__ import annotations

import json

import pytest
import torch

from hmtbench.answer_layout import ANSWER_ROOM
from hmtbench.backbones.tiny import EOS, byte_tokenizer
from hmtbench.config import EngineOptions
from hmtbench.engine import segment_batch
from hmtbench.fastpath import accelerate
from hmtbench.generation import decode, greedy_generate, prompt_layout, read_openings
from hmtbench.methods import method_class, method_names
from hmtbench.methods.base import SegmentMethod
from hmtbench.methods.state import flatten
from hmtbench.qa import runner
from hmtbench.qa.answers import read_answers
from hmtbench.qa.runner import answer_nll, answer_records, prepare_samples
from hmtbench.qa.tasks import TaskOptions, load_task
from tests.conftest import build_method, exercised, random_documents, registered

MEMORY_SETTINGS = registered(  # every registered method, and these variants of them
    ("rmt", {"memory_tokens": 2}, "rmt-m2"),
    ("rmt", {"memory_tokens": 2, "write": "span"}, "rmt-span"),
    ("hmt", {"stage": 1}, "hmt-stage1"),
    ("hmt", {"memory_tokens": 2, "write": "span", "segment_length": 26}, "hmt-span"),
    ("hmt", {"recall_context": 2, "cache_policy": "recall"}, "hmt-recall-policy"),
    ("armt", {"memory_tokens": 2}, "armt-m2"),
)
BATCH_SETTINGS = {"sensory_tokens": 3, "recall_hidden_dim": 16, "recall_context": 4}


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


@pytest.mark.parametrize(("name", "settings"), MEMORY_SETTINGS)
@pytest.mark.parametrize("prompt_length", [30, 36, 37])
def test_decoding_crosses_segment_boundaries_like_the_segment_loop(
    backbone: torch.nn.Module, name: str, settings: dict, prompt_length: int
) -> None:
    torch.manual_seed(0)
    model = exercised(build_method(name, backbone, {"segment_length": 24, **settings})).eval()
    size = model.segment_tokens
    prompt = random_documents(1, prompt_length, seed=5)
    new = 2 * size + 3
    out = greedy_generate(model, prompt[0], new, keep_logits=True)
    assert len(out.token_ids) == new
    layout = prompt_layout(model, prompt_length)  # the prompt ends ANSWER_ROOM positions before its segment does
    clamped = layout.first == model.sensory_tokens  # a first segment holds at least the k tokens the next one reads
    roomy = size > ANSWER_ROOM  # a segment of S <= ANSWER_ROOM tokens leaves the answer a segment of its own
    assert size - (prompt_length - layout.start) == ANSWER_ROOM or layout.start == 0 or clamped or not roomy
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


@pytest.mark.parametrize(("name", "settings"), MEMORY_SETTINGS)
def test_one_pass_scores_the_answers_and_reads_the_contexts_for_generation(
    llama: torch.nn.Module, name: str, settings: dict
) -> None:
    """The answer pass keeps each prompt's memory where decoding opens: it equals reading the prompts alone."""
    torch.manual_seed(0)
    model = exercised(build_method(name, llama, {"segment_length": 24, **settings})).eval()
    prompts = [random_documents(1, n, seed=4 + n)[0] for n in (50, 23, 70)]
    answers = [[80, 81, 82, 83, 84, 85, 86, 87, 88, 89], [90, 91], list(range(100, 130))]
    scores, openings = read_answers(model, model, prompts, answers, openings=True)
    for prompt, answer, score in zip(prompts, answers, scores, strict=True):
        nll, tokens = answer_nll(model, prompt, answer)
        assert score.tokens == tokens == len(answer) and score.nll == pytest.approx(nll, abs=1e-4)
    alone = read_openings(model, model, prompts)
    for shared, fresh, prompt in zip(openings, alone, prompts, strict=True):
        assert shared.layout == fresh.layout == prompt_layout(model, len(prompt))
        (layout, ours), (_, theirs) = flatten(shared.state), flatten(fresh.state)
        assert layout == flatten(fresh.state)[0]
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    from_answers = decode(model, openings, prompts, 8, keep_logits=True)
    from_prompts = decode(model, alone, prompts, 8, keep_logits=True)
    for a, b in zip(from_answers, from_prompts, strict=True):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.stack(a.logits), torch.stack(b.logits), rtol=1e-4, atol=1e-4)


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
    assert item.answer_ids == list(b" xylophone\n")  # byte tokenizer: one id per byte; the answer ends its line
    seen = {}

    def spy(method, openings, prompts, max_new_tokens, **kwargs):
        seen["prompts"] = [torch.as_tensor(p).tolist() for p in prompts]
        return decode(method, openings, prompts, max_new_tokens, **kwargs)

    monkeypatch.setattr(runner, "decode", spy)
    model = build_method("plain", llama, {"segment_length": 32})
    [record] = answer_records(model, model, task, [item], tokenizer, 5)
    assert seen["prompts"] == [item.prompt_ids.tolist()]  # generation starts from the prompt alone
    assert record["answer_tokens"] == len(" xylophone\n")
    assert record["prompt_tokens"] == len(item.prompt_ids)
    assert 1 <= record["generated_tokens"] <= 5


@pytest.mark.parametrize("name", method_names())
def test_batched_decoding_gives_the_tokens_of_one_at_a_time(llama: torch.nn.Module, name: str) -> None:
    """Ragged prompts (several cohorts), rows that stop at different steps, answers that cross segment boundaries."""
    torch.manual_seed(0)
    length = 128 if method_class(name).reads_whole_document else 24
    model = exercised(build_method(name, llama, {**BATCH_SETTINGS, "segment_length": length})).eval()
    s = model.segment_tokens if length == 24 else 22
    prompts = [random_documents(1, n, seed=n)[0] for n in (3 * s + 2, 2 * s, 2 * s - 3, s + 1, 40, 10, 7)]
    limits = [2 * s + 3, 5, 1, s + 2, 2 * s + 3, 3, 2 * s]  # each row stops after its own count of tokens
    rules = [lambda ids, n=n: len(ids) >= n for n in limits]
    runner = accelerate(model, EngineOptions(cuda_graphs=True))  # the graph plumbing (eager on the CPU)
    batched = decode(model, read_openings(model, runner, prompts), prompts, 2 * s + 3, stop=rules, keep_logits=True)
    assert [len(g.token_ids) for g in batched] == limits
    assert max(g.segments_opened for g in batched) >= (3 if length == 24 else 1)
    for prompt, rule, together in zip(prompts, rules, batched, strict=True):
        alone = greedy_generate(model, prompt, 2 * s + 3, stop=rule, keep_logits=True)
        assert together.token_ids == alone.token_ids
        assert (together.context_segments, together.segments_opened) == (alone.context_segments, alone.segments_opened)
        torch.testing.assert_close(torch.stack(together.logits), torch.stack(alone.logits), rtol=1e-4, atol=1e-4)


def test_a_row_stops_at_its_end_id_and_the_others_go_on(llama: torch.nn.Module) -> None:
    model = build_method("hmt", llama, {**BATCH_SETTINGS, "segment_length": 24}).eval()
    prompts = [random_documents(1, 50, seed=seed)[0] for seed in (1, 2, 3)]
    free = decode(model, read_openings(model, model, prompts), prompts, 12)
    end = free[1].token_ids[3]  # row 1's fourth token becomes an end id
    stopped = decode(model, read_openings(model, model, prompts), prompts, 12, stop_ids={end})
    for before, after in zip(free, stopped, strict=True):
        cut = before.token_ids.index(end) + 1 if end in before.token_ids else 12
        assert after.token_ids == before.token_ids[:cut]
    assert len(stopped[1].token_ids) <= 4


@pytest.mark.parametrize("policy", ["fifo", "recall", "distinct"])
def test_closing_a_decoded_segment_leaves_the_state_the_segment_loop_leaves(llama: torch.nn.Module,
                                                                           policy: str) -> None:
    """A segment filled while decoding notes its recall weights in the cache (cache_policy recall keeps by them)."""
    from hmtbench.generation import OpenSegments

    torch.manual_seed(0)
    model = build_method("hmt", llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16,
                                        "recall_context": 4, "cache_policy": policy}).eval()
    size = model.segment_tokens
    prompt = random_documents(1, 3 * size + 2, seed=7)[0]
    [opening] = read_openings(model, model, [prompt])
    text = prompt[opening.layout.start :][None]
    filled = random_documents(1, size - text.shape[1], seed=8)  # the rest of the open segment, as if decoded
    with torch.no_grad():
        segment = OpenSegments(model, opening.state, opening.summary, text)
        for token in filled[0]:
            segment.step(token[None])
        decoded = segment.close()
        whole = torch.cat([text, filled], dim=1)
        looped = model(opening.state, whole, torch.tensor([size]), opening.summary).state
    (layout, ours), (expected_layout, theirs) = flatten(decoded), flatten(looped)
    assert layout == expected_layout
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
