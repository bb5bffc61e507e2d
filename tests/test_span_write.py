"""RMT's span write: the memory a segment writes is a span of its input embeddings (or the memory read), chosen by
attention from the write slot's state; it stays in the embedding code through any number of segments."""

from __future__ import annotations

import pytest
import torch

from hmtbench.engine import segment_batch
from hmtbench.errors import HmtbenchError
from hmtbench.methods.span_write import SpanWrite
from tests.conftest import build_method, random_documents
from tests.test_rmt import BackboneInputs, run_segments


def one_hot_weights(index: torch.Tensor, size: int):
    """A ``SpanWrite.weights`` that puts all weight on column ``index`` (B,) of [stay, text positions]."""
    def weights(write_state, text_states, lengths):
        return torch.nn.functional.one_hot(index, 1 + size).float()
    return weights


def test_the_span_ending_at_the_chosen_position_is_written_and_stay_keeps_the_memory_read() -> None:
    torch.manual_seed(0)
    m, text_start, size, d = 3, 5, 7, 4  # [read (3) | sensory (2) | text (7) | write (3)]
    embeds = torch.randn(2, text_start + size + m, d)
    states = torch.randn(2, size + m, d)
    memory = embeds[:, :m]
    vocabulary = torch.randn(10, d)
    writer = SpanWrite(vocabulary, dtype=torch.float32)
    blank = vocabulary.mean(0, keepdim=True)
    lengths = torch.tensor([7, 4])
    # row 0 copies the span ending at text position 4; row 1 keeps its memory read (the stay column)
    writer.weights = one_hot_weights(torch.tensor([1 + 4, 0]), size)
    written = writer(embeds, states, memory, text_start, lengths)
    torch.testing.assert_close(written[0], embeds[0, text_start + 4 - 2 : text_start + 4 + 1])
    torch.testing.assert_close(written[1], memory[1])
    # a span near the text's start reaches back into the sensory positions, and holds the blank (mean)
    # embedding where it would reach into the read memory
    writer.weights = one_hot_weights(torch.tensor([1 + 0, 1 + 1]), size)
    written = writer(embeds, states, memory, text_start, lengths)
    torch.testing.assert_close(written[0], embeds[0, 3:6])
    torch.testing.assert_close(written[1], embeds[1, 4:7])
    without_sensory = embeds[:, 2:]  # [read (3) | text (7) | write (3)]
    written = writer(without_sensory, states, memory, 3, lengths)
    torch.testing.assert_close(written[0], torch.cat([blank, blank, without_sensory[0, 3:4]]))
    torch.testing.assert_close(written[1], torch.cat([blank, without_sensory[1, 3:5]]))


def test_the_weights_are_a_distribution_over_stay_and_the_real_tokens_only() -> None:
    torch.manual_seed(0)
    writer = SpanWrite(torch.randn(10, 8), dtype=torch.float32)
    lengths = torch.tensor([6, 2])
    weights = writer.weights(torch.randn(2, 8), torch.randn(2, 6, 8), lengths)
    assert weights.shape == (2, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))
    assert (weights[0] > 0).all()
    assert (weights[1, 3:] == 0).all() and (weights[1, :3] > 0).all()  # row 1: stay + its 2 tokens


def test_rmt_with_span_write_writes_the_weighted_spans_of_what_each_segment_saw(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    model = build_method("rmt", llama, {"segment_length": 24, "memory_tokens": 2, "write": "span"})
    size = model.segment_tokens
    ids, lengths = random_documents(2, 3 * size), torch.tensor([3 * size, 2 * size + 5])
    chosen = []
    weights = model.span_write.weights
    model.span_write.weights = lambda *args: chosen.append(weights(*args)) or chosen[-1]
    with torch.no_grad(), BackboneInputs(llama) as seen:
        outputs = run_segments(model, ids, lengths)
    seg_lengths = segment_batch(ids, lengths, size).lengths
    for i, out in enumerate(outputs):
        for row in range(2):
            n, a = int(seg_lengths[row, i]), chosen[i][row]
            assert (a[1 + n :] == 0).all() and a.sum().item() == pytest.approx(1.0)
            # [read (2) | text | write (2)]: the memory read, or the two embeddings ending at text position t
            # (the first span reaches into the read slot: the blank embedding there)
            window = torch.cat([model.span_write.blank[None], seen[i][row, 2 : 2 + n]])
            by_hand = a[0] * seen[i][row, 0:2] + sum(a[1 + t] * window[t : t + 2] for t in range(n))
            torch.testing.assert_close(out.state.memory[row], by_hand, atol=1e-6, rtol=1e-5)
    # a convex combination of input embeddings: in their code, far from the last-layer states the paper writes
    assert outputs[-1].state.memory.norm(dim=-1).max() <= seen[-1].norm(dim=-1).max() + 1e-5


def test_gradients_reach_the_span_writer_through_two_segments(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    model = build_method("rmt", llama, {"segment_length": 24, "memory_tokens": 2, "write": "span"})
    size = model.segment_tokens
    outputs = run_segments(model, random_documents(2, 3 * size), torch.tensor([3 * size, 3 * size]))
    outputs[-1].logits.float().pow(2).mean().backward()
    for name in ("span_write.wq.weight", "span_write.wk.weight", "span_write.stay.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # segment 0 reads a blank memory (the mean input embedding): nothing learned there (a soft prompt the
    # writer could pass on)
    blank = llama.get_input_embeddings().weight.mean(0)
    torch.testing.assert_close(model.memory, blank.expand(2, -1))
    assert "memory" not in model.added_parameters()


def test_span_write_is_recorded_and_checked(llama: torch.nn.Module) -> None:
    model = build_method("rmt", llama, {"segment_length": 24, "write": "span"})
    assert model.record_columns()["memory_write"] == "span" and model.writes_from_text
    assert "span_write.wq.weight" in model.added_parameters()
    assert build_method("rmt", llama, {"segment_length": 24}).record_columns()["memory_write"] == "state"
    with pytest.raises(HmtbenchError, match="method.write must be one of state, span"):
        build_method("rmt", llama, {"segment_length": 24, "write": "copy"})


def test_hmt_with_span_write_caches_whole_spans_and_recalls_a_mixture_of_them(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    m = 3
    model = build_method("hmt", llama, {"segment_length": 32, "memory_tokens": m, "sensory_tokens": 4,
                                        "recall_hidden_dim": 16, "write": "span"}).eval()
    size = model.segment_tokens
    assert size == 32 - 2 * m - 4
    ids, lengths = random_documents(2, 4 * size), torch.tensor([4 * size, 3 * size + 2])
    written, recalled = [], []
    write, recall = model.write_memory, model.recall.forward
    model.write_memory = lambda *args: written.append(write(*args)) or written[-1]
    model.recall.forward = lambda *args: recalled.append(recall(*args)) or recalled[-1]
    with torch.no_grad(), BackboneInputs(llama) as seen:
        outputs = run_segments(model, ids, lengths)
    calls = [embeds for embeds in seen if embeds.shape[1] in (32 - 4, 32)]  # segment steps (0 has no sensory)
    assert len(calls) == 4
    torch.testing.assert_close(calls[0][:, :m], model.memory.expand(2, -1, -1))  # segment 0 reads the blank memory
    cache = outputs[-1].state.cache
    assert cache.values.shape == (2, model.config.recall_context, m * model.hidden_size)
    for i, memory in enumerate(written):  # every segment's (B, m, d) span is cached whole, keyed by its mean
        torch.testing.assert_close(cache.values[:, i].view(2, m, -1), memory)
        torch.testing.assert_close(cache.keys[:, i], model.recall.wk(memory.mean(1)))
    for n, (memory, weights) in enumerate(recalled, start=1):  # segment n reads the mixture recall returned
        mixture = torch.einsum("bn,bnd->bd", weights[:, :n], cache.values[:, :n])
        torch.testing.assert_close(memory, mixture)
        torch.testing.assert_close(calls[n][:, :m], memory.view(2, m, -1))


def test_hmt_takes_more_than_one_memory_token_only_with_the_span_write(llama: torch.nn.Module) -> None:
    with pytest.raises(HmtbenchError, match="HMT uses one memory token"):
        build_method("hmt", llama, {"segment_length": 32, "memory_tokens": 2})
    model = build_method("hmt", llama, {"segment_length": 32, "memory_tokens": 2, "write": "span"})
    assert model.record_columns()["memory_write"] == "span" and model.memory_tokens == 2


def test_the_hard_choice_writes_the_heaviest_candidate_alone_outside_training() -> None:
    torch.manual_seed(0)
    m, size, d = 2, 6, 8
    embeds, states = torch.randn(3, m + size + m, d), torch.randn(3, size + m, d)
    memory, lengths = embeds[:, :m], torch.tensor([6, 6, 3])
    vocabulary = torch.randn(10, d)
    soft = SpanWrite(vocabulary, dtype=torch.float32)
    hard = SpanWrite(vocabulary, dtype=torch.float32, choice="hard")
    hard.load_state_dict(soft.state_dict())
    weights = soft.weights(states.gather(1, (lengths + m - 1)[:, None, None].expand(-1, 1, d))[:, 0],
                           states[:, :size], lengths)
    best = weights.argmax(1)
    with torch.no_grad():
        written = hard(embeds, states, memory, m, lengths)
        mixture = soft(embeds, states, memory, m, lengths)
    for row in range(3):
        t = int(best[row]) - 1  # -1: stay
        expected = memory[row] if t < 0 else torch.cat([hard.blank[None], embeds[row, m:]])[t : t + m]
        torch.testing.assert_close(written[row], expected)
    assert not torch.allclose(written, mixture)
    torch.testing.assert_close(hard(embeds, states, memory, m, lengths), mixture)  # with gradients: the mixture


def test_a_record_names_the_write() -> None:
    from hmtbench.methods.memory import write_label

    assert [write_label("state", "soft"), write_label("span", "soft"), write_label("span", "hard"),
            write_label("span", "hard-st")] == ["state", "span", "span-hard", "span-hard-st"]


def test_the_hard_recall_reads_the_heaviest_cached_memory_alone_outside_training(llama: torch.nn.Module) -> None:
    from hmtbench.methods.recall import MemoryRecall

    torch.manual_seed(0)
    d, n = 8, 5
    soft = MemoryRecall(d, 4, dtype=torch.float32, device=torch.device("cpu"))
    hard = MemoryRecall(d, 4, dtype=torch.float32, device=torch.device("cpu"), choice="hard")
    hard.load_state_dict(soft.state_dict())
    cache = soft.empty_cache(3, 6, torch.zeros(3, 2, d))
    memories = torch.randn(n, 3, 2, d)
    for memory in memories:
        cache = soft.remember(cache, memory)
    summary = torch.randn(3, d)
    with torch.no_grad():
        mixture, weights = soft(summary, cache)
        alone, one_hot = hard(summary, cache)
    best = weights.argmax(1)
    assert weights[:, n:].sum() == 0 and (best < n).all()  # the empty slot is never recalled
    torch.testing.assert_close(one_hot, torch.nn.functional.one_hot(best, 6).float())
    torch.testing.assert_close(alone, memories[best, torch.arange(3)].flatten(1))
    assert not torch.allclose(alone, mixture)
    torch.testing.assert_close(hard(summary, cache)[0], mixture)  # with gradients: the mixture, as trained
    model = build_method("hmt", llama, {"segment_length": 32, "write": "span", "memory_tokens": 2,
                                        "recall_choice": "hard"})
    assert model.recall.choice == "hard" and model.record_columns()["recall_choice"] == "hard"
    with pytest.raises(HmtbenchError, match="method.recall_choice must be one of soft, hard"):
        build_method("hmt", llama, {"segment_length": 32, "recall_choice": "top2"})


def test_straight_through_recalls_one_memory_in_training_with_the_mixtures_gradient() -> None:
    """hard-st: the one-hot of the heaviest memory forward, with gradients enabled too; backward, the soft weights'."""
    from hmtbench.methods.recall import MemoryRecall

    torch.manual_seed(0)
    d = 8
    soft = MemoryRecall(d, 4, dtype=torch.float32, device=torch.device("cpu"))
    straight = MemoryRecall(d, 4, dtype=torch.float32, device=torch.device("cpu"), choice="hard-st")
    straight.load_state_dict(soft.state_dict())
    cache = soft.empty_cache(3, 6, torch.zeros(3, 2, d))
    for memory in torch.randn(4, 3, 2, d):
        cache = soft.remember(cache, memory.detach())
    cache = type(cache)(values=cache.values.detach(), keys=cache.keys.detach(), count=cache.count)
    summary, upstream = torch.randn(3, d), torch.randn(3, 6)
    _, weights = soft(summary, cache)
    _, one_hot = straight(summary, cache)
    torch.testing.assert_close(one_hot.detach(), torch.nn.functional.one_hot(weights.argmax(1), 6).float())
    (weights * upstream).sum().backward()
    (one_hot * upstream).sum().backward()
    assert soft.wq.weight.grad.abs().sum() > 0
    torch.testing.assert_close(straight.wq.weight.grad, soft.wq.weight.grad)


@pytest.mark.parametrize("choice", ["hard", "hard-st"])
def test_hmt_trains_through_a_hard_recall_only_when_straight_through(choice: str, llama: torch.nn.Module) -> None:
    """In a training pass hard recall still mixes (as trained); hard-st reads one memory, and its gradient reaches
    the recall projections."""
    model = build_method("hmt", llama, {"segment_length": 32, "write": "span", "memory_tokens": 2,
                                        "recall_choice": choice, "recall_hidden_dim": 16})
    ids = random_documents(2, 6 * model.segment_tokens)
    outputs = run_segments(model, ids, torch.full((2,), ids.shape[1]))
    weights = outputs[-1].recall_weights
    assert weights is not None and bool((weights.detach().max(1).values == 1).all()) == (choice == "hard-st")
    sum(o.logits.float().logsumexp(-1).mean() for o in outputs).backward()
    assert model.recall.wq.weight.grad.abs().sum() > 0
