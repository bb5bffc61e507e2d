"""HMT's departures in what recall hears and what its cache keeps: ``recall_query`` and ``cache_policy``."""

from __future__ import annotations

import pytest
import torch

from hmtbench.config import EngineOptions
from hmtbench.engine import score_segments, segment_batch
from hmtbench.fastpath import accelerate
from hmtbench.generation import window_summaries
from hmtbench.methods.recall import MemoryRecall
from hmtbench.qa.answers import first_answer_segment, qa_batch
from tests.conftest import build_method, random_documents

QA = {"segment_length": 64, "sensory_tokens": 2, "recall_context": 8, "recall_hidden_dim": 16}  # S 60, j 30


def answer_segment_weights(model, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recall weights, summary and known tokens of the segment that opens the answer (QA's answer layout)."""
    batch = qa_batch([prompt], [[65, 66]], model.segment_tokens, model.device, model.sensory_tokens)
    index = first_answer_segment(batch)
    with torch.no_grad():
        summaries = model.summarize(batch.segments, batch.known)
        state = model.initial_state(1)
        for i in range(index + 1):
            out = model(state, batch.segments[:, i], batch.lengths[:, i], summaries[:, i])
            state = out.state
    known = batch.segments[0, index, : int(batch.known[0, index])]
    return out.recall_weights, summaries[:, index], known


@pytest.mark.parametrize("query", ["paper", "question"])
def test_only_the_question_aware_summary_hears_the_question(llama: torch.nn.Module, query: str) -> None:
    """The answer's segment holds 48 prompt tokens (S 60 less the answer's room of 12) ending with the question;
    the paper's summary reads the first 30 of them, the question-aware one the last 30. Changing the question's
    5 tokens moves the recall weights under the question-aware query only; changing a token the paper's summary
    reads moves them under the paper's only."""
    torch.manual_seed(0)
    model = build_method("hmt", llama, {**QA, "recall_query": query})
    prompt = torch.randint(3, 256, (3 * 60 + 48,), generator=torch.Generator().manual_seed(4))
    weights, summary, known = answer_segment_weights(model, prompt)
    assert known.shape == (48,) and torch.equal(known, prompt[-48:]) and weights.shape == (1, 8)
    asked = prompt.clone()
    asked[-5:] = (asked[-5:] + 7) % 253 + 3  # another question
    early = prompt.clone()
    early[-48 + 2] = (early[-48 + 2] + 7) % 253 + 3  # a context token among the segment's first 30
    moved_by_question = not torch.allclose(answer_segment_weights(model, asked)[0], weights)
    moved_by_early = not torch.allclose(answer_segment_weights(model, early)[0], weights)
    assert (moved_by_question, moved_by_early) == ((True, False) if query == "question" else (False, True))
    # the question-aware summary is the paper's summary of a segment that opens with those last 30 tokens
    torch.manual_seed(0)
    paper = build_method("hmt", llama, {**QA, "recall_query": "paper"})
    paper.load_state_dict(model.state_dict())
    read = known[-30:] if query == "question" else known[:30]
    with torch.no_grad():
        expected = paper._summaries(read[None], torch.tensor([30]))
    torch.testing.assert_close(summary, expected, rtol=1e-5, atol=1e-5)
    # greedy decoding opens the segment knowing the same tokens and summarises it the same way
    with torch.no_grad():
        decoded = window_summaries(model, prompt[None, -48 - 60 : -48], known[None])
    torch.testing.assert_close(decoded, summary, rtol=1e-5, atol=1e-5)


def recall(policy: str) -> MemoryRecall:
    return MemoryRecall(2, 2, dtype=torch.float32, device=torch.device("cpu"), policy=policy)


def store(module: MemoryRecall, cache, vectors: list[list[float]]):
    """Write (B, 2) memories one by one (m = 1); return the cache and the slot each went to."""
    slots = []
    for vector in vectors:
        cache = module.remember(cache, torch.tensor(vector, dtype=torch.float32).view(-1, 1, 2))
        newest = (cache.count - 1) % cache.capacity if cache.written_at is None else cache.written_at.argmax(-1)
        slots.append(newest.tolist())
    return cache, slots


def test_fifo_drops_the_oldest() -> None:
    module = recall("fifo")
    cache = module.empty_cache(1, 3, torch.zeros(1, 1, 2))
    cache, slots = store(module, cache, [[1, 0], [2, 0], [3, 0], [4, 0], [5, 0]])
    assert slots == [[0], [1], [2], [0], [1]] and cache.written_at is None and cache.scores is None
    assert cache.values[0, :, 0].tolist() == [4, 5, 3]


def test_the_recall_policy_drops_the_memory_recall_weighted_least_and_the_oldest_of_ties() -> None:
    """Two rows, by hand: scores are the highest weight each slot has had; a new memory starts at 0."""
    module = recall("recall")
    cache = module.empty_cache(2, 3, torch.zeros(2, 1, 2))
    cache, slots = store(module, cache, [[1, 0, 1, 0], [2, 0, 2, 0], [3, 0, 3, 0]])
    assert slots == [[0, 0], [1, 1], [2, 2]]
    cache = cache.noted(torch.tensor([[0.7, 0.1, 0.2], [1 / 3, 1 / 3, 1 / 3]]))
    assert torch.allclose(cache.scores, torch.tensor([[0.7, 0.1, 0.2], [1 / 3, 1 / 3, 1 / 3]]))
    cache, slots = store(module, cache, [[4, 0, 4, 0]])  # row 0: slot 1 scored lowest; row 1: a tie, the oldest
    assert slots == [[1, 0]] and cache.scores[0, 1] == 0 and cache.scores[1, 0] == 0  # a new memory starts at 0
    cache = cache.noted(torch.tensor([[0.2, 0.5, 0.3], [0.5, 0.25, 0.25]]))
    # row 0: scores 0.7, 0.5, 0.3 -> slot 2; row 1: 0.5, 1/3, 1/3 (slots 1, 2 written 1st and 2nd) -> slot 1
    cache, slots = store(module, cache, [[5, 0, 5, 0]])
    assert slots == [[2, 1]]
    assert cache.values[:, :, 0].tolist() == [[1, 4, 5], [4, 5, 3]]
    assert cache.written_at.tolist() == [[0, 3, 4], [3, 4, 2]] and cache.count.tolist() == [5, 5]


def test_the_distinct_policy_drops_the_memory_most_like_the_next_and_the_oldest_of_ties() -> None:
    module = recall("distinct")
    cache = module.empty_cache(1, 3, torch.zeros(1, 1, 2))
    cache, slots = store(module, cache, [[1, 0], [1, 0.1], [0, 1]])
    # in write order M0 [1, 0], M1 [1, .1], M2 [0, 1], then M3 [0, 1.05]: cos(M0, M1) = .995, cos(M1, M2) = .0995,
    # cos(M2, M3) = 1: M2 goes (slot 2)
    cache, more = store(module, cache, [[0, 1.05]])
    # now M0, M1, M3 and then M4 [1, .2]: cos(M0, M1) = .995, cos(M1, M3) = .0995, cos(M3, M4) = .196: M0 goes
    cache, last = store(module, cache, [[1, 0.2]])
    assert slots + more + last == [[0], [1], [2], [2], [0]]
    torch.testing.assert_close(cache.values[0], torch.tensor([[1, 0.2], [1, 0.1], [0, 1.05]]))
    ties = recall("distinct")
    _, order = store(ties, ties.empty_cache(1, 2, torch.zeros(1, 1, 2)), [[k, 0] for k in range(1, 6)])
    assert order == [[0], [1], [0], [1], [0]]  # every similarity 1: the oldest goes, first in first out


@pytest.mark.parametrize("policy", ["recall", "distinct"])
def test_a_cache_policy_keeps_batches_padding_and_the_graph_plumbing_exact(llama: torch.nn.Module, policy: str) -> None:
    """Evictions on: a batch scores each document as alone, and the fast path's plumbing changes nothing."""
    torch.manual_seed(0)
    model = build_method("hmt", llama, {"segment_length": 16, "sensory_tokens": 2, "recall_context": 2,
                                        "recall_hidden_dim": 8, "cache_policy": policy}).eval()
    lengths = torch.tensor([110, 70])
    ids = random_documents(2, 110, seed=3)
    with torch.no_grad():
        batch = segment_batch(ids, lengths, model.segment_tokens)
        nll, _ = score_segments(model, batch)
        graphed, _ = score_segments(accelerate(model, EngineOptions(cuda_graphs=True)), batch)
        fifo = build_method("hmt", llama, {"segment_length": 16, "sensory_tokens": 2, "recall_context": 2,
                                           "recall_hidden_dim": 8})
        fifo.load_state_dict(model.state_dict())
        assert not torch.allclose(score_segments(fifo, batch)[0], nll)  # the policy changed what was recalled
        for row in range(2):
            n = int(lengths[row])
            alone, _ = score_segments(model, segment_batch(ids[row : row + 1, :n], lengths[row : row + 1],
                                                          model.segment_tokens))
            torch.testing.assert_close(alone.sum(), nll[row].sum(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(graphed, nll, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", ["fifo", "recall", "distinct"])
def test_a_cache_policy_step_is_captured_in_a_cuda_graph(llama: torch.nn.Module, policy: str) -> None:
    """No host sync and no data-dependent shape: every step captures (no failure) and replays the eager scores."""
    torch.manual_seed(0)
    model = build_method("hmt", llama.cuda(), {"segment_length": 16, "sensory_tokens": 2, "recall_context": 2,
                                               "recall_hidden_dim": 8, "cache_policy": policy}).eval()
    ids, lengths = random_documents(2, 110, seed=3).cuda(), torch.tensor([110, 70], device="cuda")
    with torch.no_grad():
        batch = segment_batch(ids, lengths, model.segment_tokens)
        runner = accelerate(model, EngineOptions(cuda_graphs=True))
        graphed, _ = score_segments(runner, batch)
        eager, _ = score_segments(model, batch)
    assert runner.failures == []
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)


def test_compare_names_the_question_aware_query_and_a_cache_policy_even_when_every_run_agrees(tmp_path) -> None:
    import json

    from hmtbench.analysis.compare import build
    from hmtbench.analysis.load import load_results
    from tests.test_compare import write_run

    def hmt(folder, **method) -> None:
        write_run(tmp_path / folder, "hmt", ppl=10.0, config=json.dumps({"method": {"name": "hmt", **method}}))

    write_run(tmp_path / "plain", "plain", ppl=12.0)
    hmt("paper")
    hmt("options", recall_query="question", cache_policy="recall")

    def variant(folder: str):
        (row,) = build(load_results([tmp_path / "plain", tmp_path / folder], warn=lambda m: None), "ppl").rows
        return row.key["variant"]

    assert variant("paper") is None  # the paper's query and first-in-first-out: nothing to name
    assert variant("options") == "hmt: config.method.cache_policy=recall, config.method.recall_query=question"
