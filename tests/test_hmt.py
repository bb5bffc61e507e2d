"""HMT: sensory tokens, the summary's reach, the recall ring buffer and its weights, stage 1, bad settings."""

from __future__ import annotations

import math

import pytest
import torch

from hmtbench.engine import score_segments, segment_batch
from hmtbench.errors import HmtbenchError
from hmtbench.fastpath import repeated_blocks
from hmtbench.methods.base import SegmentOutput
from hmtbench.methods.hmt import HMT
from tests.conftest import build_method, random_documents
from tests.test_rmt import BackboneInputs, run_segments

SETTINGS = {"segment_length": 24, "sensory_tokens": 3, "recall_context": 3, "recall_hidden_dim": 8}


def hmt(backbone: torch.nn.Module, **overrides) -> HMT:
    torch.manual_seed(0)
    model = build_method("hmt", backbone, {**SETTINGS, **overrides})
    assert isinstance(model, HMT)
    return model


def traced_run(model: HMT, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[list[torch.Tensor], list[SegmentOutput]]:
    """Backbone inputs of every main pass, and every segment's output (summaries computed on the fly)."""
    with torch.no_grad(), BackboneInputs(model.backbone) as seen:
        outputs = run_segments(model, ids, lengths)
    return seen, outputs


def written_memories(model: HMT, seen: list[torch.Tensor], seg_lengths: torch.Tensor) -> list[torch.Tensor]:
    """M_j recomputed by hand: the backbone's hidden_states[-1] at each segment's write slot, (B, d) each."""
    memories = []
    with torch.no_grad():
        for i, embeds in enumerate(seen):
            hidden = model.backbone(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
            k = model.sensory_tokens if i > 0 else 0
            at = 1 + k + seg_lengths[:, i]
            memories.append(hidden[torch.arange(hidden.shape[0]), at])
    return memories


@pytest.mark.parametrize("sensory", [0, 3])
def test_sensory_tokens_are_the_previous_segments_last_k_ids(backbone: torch.nn.Module, sensory: int) -> None:
    model = hmt(backbone, sensory_tokens=sensory)
    s, k = model.segment_tokens, sensory
    assert s == 24 - 2 - k
    ids, lengths = random_documents(2, 4 * s), torch.tensor([4 * s, 4 * s])
    seen, outputs = traced_run(model, ids, lengths)
    segments = segment_batch(ids, lengths, s).segments
    assert [e.shape[1] for e in seen] == [1 + s + 1] + [1 + k + s + 1] * 3  # never more than L positions
    for i in range(1, 4):
        previous_tail = segments[:, i - 1, s - k :]
        assert torch.equal(outputs[i - 1].state.sensory_ids if k else previous_tail[:, :0], previous_tail)
        torch.testing.assert_close(seen[i][:, 1 : 1 + k], model.embed(previous_tail), rtol=0, atol=0)
        torch.testing.assert_close(seen[i][:, 1 + k : 1 + k + s], model.embed(segments[:, i]), rtol=0, atol=0)
        # the read slot and the write slot hold the same recalled memory
        torch.testing.assert_close(seen[i][:, 0], seen[i][:, -1], rtol=0, atol=0)
        # only the segment's own text positions are scored: the sensory logits are dropped
        with torch.no_grad():
            logits = backbone(inputs_embeds=seen[i]).logits[:, 1 + k : 1 + k + s]
        torch.testing.assert_close(outputs[i].logits, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sum_fraction", [0.5, 0.3, 1.0])
def test_summary_reads_exactly_the_first_round_s_times_fraction_tokens(backbone: torch.nn.Module, sum_fraction) -> None:
    model = hmt(backbone, sum_fraction=sum_fraction)
    s = model.segment_tokens  # 19
    j = round(s * sum_fraction)
    assert model.summary_tokens == j
    ids = random_documents(1, 2 * s)
    lengths = torch.tensor([[s, s]])
    segments = ids.view(1, 2, s)
    with torch.no_grad():
        summary = model.summarize(segments, lengths)[:, 1]  # (1, d); segment 0 recalls nothing
        # by hand: last-layer hidden state at the trailing prompt of [T | first j tokens | T]
        prompt = model.summary_prompt[None]
        embeds = torch.cat([prompt, model.embed(segments[:, 1, :j]), prompt], dim=1)
        by_hand = backbone(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][:, -1]
        torch.testing.assert_close(summary, by_hand, rtol=1e-5, atol=1e-5)
        for position in sorted({0, j - 1, j, s - 1} - {s}):
            changed = segments.clone()
            changed[0, 1, position] = (changed[0, 1, position] + 1) % 256
            other = model.summarize(changed, lengths)[:, 1]
            assert torch.equal(other, summary) == (position >= j), position


def test_recall_cache_is_a_ring_buffer_of_the_last_n_memories(backbone: torch.nn.Module) -> None:
    n_cache, n_segments = 3, 7
    model = hmt(backbone, recall_context=n_cache)
    s = model.segment_tokens
    lengths = torch.tensor([n_segments * s, n_segments * s - 5])
    ids = random_documents(2, n_segments * s)
    seen, outputs = traced_run(model, ids, lengths)
    memories = written_memories(model, seen, segment_batch(ids, lengths, s).lengths)
    for i, out in enumerate(outputs):
        cache = out.state.cache
        assert cache.count.tolist() == [i + 1] * 2 and cache.capacity == n_cache
        assert cache.values.shape == (2, n_cache, model.hidden_size)
        assert cache.keys.shape == (2, n_cache, 8)
        assert cache.values.device == model.device and cache.keys.device == model.device
        assert cache.valid.tolist() == [[slot < min(i + 1, n_cache) for slot in range(n_cache)]] * 2
        kept = range(max(0, i + 1 - n_cache), i + 1)  # the newest N, oldest dropped first
        for j in kept:
            torch.testing.assert_close(cache.values[:, j % n_cache], memories[j], rtol=1e-5, atol=1e-5)
            with torch.no_grad():
                key = model.recall.wk(memories[j])
            torch.testing.assert_close(cache.keys[:, j % n_cache], key, rtol=1e-5, atol=1e-5)
        for j in range(0, max(0, i + 1 - n_cache)):  # dropped memories are gone from every slot
            assert not any(torch.allclose(cache.values[:, slot], memories[j]) for slot in range(n_cache))
        for slot in range(min(i + 1, n_cache), n_cache):  # empty slots stay zero
            assert cache.values[:, slot].abs().sum().item() == 0


def test_recall_weights_sum_to_one_over_valid_slots_and_give_the_read_memory(backbone: torch.nn.Module) -> None:
    n_cache, n_segments = 3, 6
    model = hmt(backbone, recall_context=n_cache)
    s = model.segment_tokens
    ids, lengths = random_documents(2, n_segments * s), torch.tensor([n_segments * s] * 2)
    seen, outputs = traced_run(model, ids, lengths)
    segments = segment_batch(ids, lengths, s).segments
    assert outputs[0].recall_weights is None  # segment 0 reads the learned initial memory
    torch.testing.assert_close(seen[0][:, 0], model.memory.expand(2, -1), rtol=0, atol=0)
    for i in range(1, n_segments):
        weights = outputs[i].recall_weights
        cache = outputs[i - 1].state.cache  # what segment i searched
        assert weights.shape == (2, n_cache) and weights.dtype == torch.float32
        assert weights.device == model.device
        torch.testing.assert_close(weights.sum(-1), torch.ones(2), rtol=0, atol=1e-6)
        valid = min(i, n_cache)
        assert (weights[:, :valid] > 0).all()
        assert (weights[:, valid:] == 0).all()
        # by hand: softmax(wq(summary) . wk(M_j) / sqrt(h)) over the valid slots; values are the raw M_j
        with torch.no_grad():
            summary = model._summaries(segments[:, i], torch.tensor([s, s]))
            scores = model.recall.wq(summary)[:, None] @ cache.keys[:, :valid].transpose(1, 2)  # (B, 1, c)
            expected = (scores[:, 0] / math.sqrt(8)).softmax(-1)
        torch.testing.assert_close(weights[:, :valid], expected, rtol=1e-5, atol=1e-6)
        recalled = torch.einsum("bn,bnd->bd", weights, cache.values)
        torch.testing.assert_close(seen[i][:, 0], recalled, rtol=1e-5, atol=1e-6)


def test_segment_1_recalls_m0_exactly(backbone: torch.nn.Module) -> None:
    model = hmt(backbone)
    s = model.segment_tokens
    ids, lengths = random_documents(2, 2 * s), torch.tensor([2 * s, 2 * s])
    seen, outputs = traced_run(model, ids, lengths)
    m0 = outputs[0].state.cache.values[:, 0]
    assert outputs[1].recall_weights.tolist() == [[1.0, 0.0, 0.0]] * 2
    assert torch.equal(seen[1][:, 0], m0) and torch.equal(seen[1][:, -1], m0)
    torch.testing.assert_close(m0, written_memories(model, seen, torch.tensor([[s, s]] * 2))[0], rtol=1e-5, atol=1e-5)


def test_with_a_one_slot_cache_and_no_sensory_tokens_hmt_is_rmt(backbone: torch.nn.Module) -> None:
    """Spec 8, test 1: one cached memory gets weight 1, so every segment reads M_{n-1} exactly as RMT does."""
    model = hmt(backbone, recall_context=1, sensory_tokens=0)
    rmt = build_method("rmt", backbone, {"segment_length": 24, "memory_tokens": 1})
    with torch.no_grad():
        rmt.memory.copy_(model.memory)
    s = model.segment_tokens
    assert rmt.segment_tokens == s
    ids, lengths = random_documents(2, 4 * s), torch.tensor([4 * s, 3 * s + 2])
    with torch.no_grad():
        for ours, theirs in zip(run_segments(model, ids, lengths), run_segments(rmt, ids, lengths), strict=True):
            torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)


def test_stage_1_passes_the_memory_on_directly(backbone: torch.nn.Module) -> None:
    model = hmt(backbone, stage=1)
    assert model.recall is None and model.summary_prompt is None
    assert set(model.added_parameters()) == {"memory"}
    s = model.segment_tokens
    ids, lengths = random_documents(2, 3 * s), torch.tensor([3 * s, 3 * s])
    assert model.summarize(segment_batch(ids, lengths, s).segments, segment_batch(ids, lengths, s).lengths) is None
    seen, outputs = traced_run(model, ids, lengths)
    memories = written_memories(model, seen, segment_batch(ids, lengths, s).lengths)
    for i, out in enumerate(outputs):
        assert out.recall_weights is None and out.state.cache is None
        torch.testing.assert_close(out.state.memory[:, 0], memories[i], rtol=1e-5, atol=1e-5)
        if i:
            assert torch.equal(seen[i][:, 0], outputs[i - 1].state.memory[:, 0])
            assert torch.equal(seen[i][:, -1], outputs[i - 1].state.memory[:, 0])
            assert seen[i].shape[1] == 1 + 3 + s + 1  # sensory tokens stay on in stage 1


def test_stage_2_adds_2d_plus_2dh_parameters(llama: torch.nn.Module) -> None:
    model = hmt(llama)
    d, h = model.hidden_size, 8
    assert sum(p.numel() for p in model.added_parameters().values()) == 2 * d + 2 * d * h


@pytest.mark.parametrize("summary_batch_tokens", [65536, 30])
def test_batched_summaries_equal_the_on_the_fly_summaries(backbone: torch.nn.Module, summary_batch_tokens: int) -> None:
    model = hmt(backbone, summary_batch_tokens=summary_batch_tokens)
    s = model.segment_tokens
    lengths = torch.tensor([4 * s, 3 * s - 4, s + 2])  # short last segments, and empty ones
    ids = random_documents(3, 4 * s)
    batch = segment_batch(ids, lengths, s)
    with torch.no_grad():
        summaries = model.summarize(batch.segments, batch.lengths)  # (B, n, d) in chunked forwards
        assert summaries.shape == (3, 4, model.hidden_size)
        assert summaries[:, 0].abs().sum().item() == 0  # segment 0 recalls nothing
        for i in range(1, 4):
            one_by_one = torch.cat([model._summaries(batch.segments[b : b + 1, i], batch.lengths[b : b + 1, i])
                                    for b in range(3)])
            torch.testing.assert_close(summaries[:, i], one_by_one, rtol=1e-5, atol=1e-5)
        # the engine (batched summaries) and the segment-by-segment loop (summary=None) give the same scores
        nll, _ = score_segments(model, batch)
        on_the_fly = torch.stack([torch.nn.functional.cross_entropy(
            out.logits.flatten(0, 1), batch.targets[:, i].flatten(), ignore_index=-100, reduction="none",
        ).view(3, -1).sum(-1) for i, out in enumerate(run_segments(model, ids, lengths))], dim=1)
    torch.testing.assert_close(nll, on_the_fly, rtol=1e-5, atol=1e-4)


def backbone_calls(model: HMT, batch, **engine) -> tuple[torch.Tensor, int]:
    """score_segments' (B, n) NLL and how many backbone calls it made."""
    calls = []
    first_layer = repeated_blocks(model.backbone)[0]  # every backbone call runs it, whole model or not
    hook = first_layer.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with torch.inference_mode():
            nll, _ = score_segments(model, batch, **engine)
    finally:
        hook.remove()
    return nll, len(calls)


@pytest.mark.parametrize("sensory", [0, 3])
def test_inline_summaries_give_the_ahead_scores_with_one_backbone_call_per_segment(
    backbone: torch.nn.Module, sensory: int
) -> None:
    """Each segment's call also runs the next segment's summary prompt: the same numbers, no summary pass."""
    ahead, inline = hmt(backbone, sensory_tokens=sensory), hmt(backbone, sensory_tokens=sensory, summary_pass="inline")
    s = ahead.segment_tokens
    lengths = torch.tensor([5 * s, 3 * s - 4, s + 2])  # short last segments, and empty ones
    batch = segment_batch(random_documents(3, 5 * s), lengths, s)
    with torch.no_grad():
        assert not ahead.summarizes_inline(3) and inline.summarizes_inline(3)
    expected, ahead_calls = backbone_calls(ahead, batch)
    got, inline_calls = backbone_calls(inline, batch)
    assert (ahead_calls, inline_calls) == (5 + 1, 5)  # one batched summary pass for 4 segments, or none
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # the recall is near uniform in a tiny random model, so the scores alone would hide a wrong summary
    with torch.inference_mode():
        summaries, state = ahead.summarize(batch.segments, batch.lengths), inline.initial_state(3)
        for i in range(4):
            upcoming = (batch.segments[:, i + 1], batch.lengths[:, i + 1])
            segment = (batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i])
            _, state = inline.score(state, *segment, None, upcoming)
            torch.testing.assert_close(state.summary, summaries[:, i + 1], rtol=1e-5, atol=1e-5)


def test_inline_summaries_are_chosen_for_small_gpu_batches_and_never_in_training(llama: torch.nn.Module) -> None:
    auto, forced = hmt(llama, segment_length=256), hmt(llama, summary_pass="inline")
    stage1 = hmt(llama, stage=1, summary_pass="inline")
    with torch.no_grad():
        assert not auto.summarizes_inline(1)  # on a CPU arithmetic is the cost: ahead does less
        assert forced.summarizes_inline(64) and not stage1.summarizes_inline(1)  # stage 1 has no summaries
    assert not forced.summarizes_inline(1)  # gradients enabled: the reference's order
    with torch.no_grad(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(HMT, "device", property(lambda self: torch.device("cuda")))  # a GPU: launch-bound when small
        auto.backbone_weights = 134_515_008  # SmolLM2: inline up to B x L = 512 at L = 256 (B x L x W <= 1e11)
        assert auto.summarizes_inline(1) and auto.summarizes_inline(2) and not auto.summarizes_inline(4)
        auto.backbone_weights = 6_738_415_616  # Llama-2-7B: every step is compute-bound, ahead does less arithmetic
        assert not auto.summarizes_inline(1)


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        ({"memory_tokens": 2}, "--memory-tokens"),
        ({"segment_length": 12, "sensory_tokens": 6}, "--sensory-tokens"),  # S = 4 < k
        ({"sensory_tokens": -1}, "--sensory-tokens"),
        ({"segment_length": 2, "sensory_tokens": 0}, "--segment-length"),  # no room for text
        ({"segment_length": 5, "sensory_tokens": 3}, "--segment-length"),
        ({"segment_length": 4097}, "--segment-length"),  # beyond the backbone's 4096 positions
        ({"recall_context": 0}, "--recall-context"),
        ({"recall_hidden_dim": 0}, "--recall-hidden-dim"),
        ({"sum_fraction": 0.0}, "--sum-fraction"),
        ({"sum_fraction": 1.5}, "--sum-fraction"),
        ({"stage": 3}, "--stage"),
        ({"summary_pass": "sideways"}, "--summary-pass"),
        ({"recall_query": "answer"}, "method.recall_query"),
        ({"cache_policy": "lru"}, "method.cache_policy"),
    ],
)
def test_invalid_settings_name_the_flag(llama: torch.nn.Module, overrides: dict, flag: str) -> None:
    with pytest.raises(HmtbenchError, match=flag):
        build_method("hmt", llama, {**SETTINGS, **overrides})


def test_scores_with_the_cache_sized_to_the_longest_document_equal_the_n_slot_caches(backbone: torch.nn.Module) -> None:
    """eval-ppl tells HMT its documents' length (``most_tokens``): a cache of as many slots as a document has
    segments (plus two) scores every token as the N-slot cache does, where N is larger than that."""
    model = hmt(backbone, recall_context=64).eval()
    s = model.segment_tokens
    lengths = torch.tensor([6 * s, 4 * s + 5, 2 * s])
    batch = segment_batch(random_documents(3, 6 * s), lengths, s)
    with torch.inference_mode():
        unbounded, _ = score_segments(model, batch)
        model.most_tokens = 6 * s
        assert model.cache_slots == 8 < 64
        sized, _ = score_segments(model, batch)
    # equal up to fp32 rounding: the recall's reductions over 8 or 64 slots may be blocked differently by the CPU's
    # kernels (bitwise equal on AVX2, 2e-6 apart in one of 18 sums on an AVX-512 / AMX machine)
    torch.testing.assert_close(sized, unbounded, rtol=1e-6, atol=1e-5)
