"""scripts/memory_trace.py: the trace decodes the very ids each span write embedded; cache slots map to segments."""

from __future__ import annotations

import torch

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.engine import segment_batch
from tests.conftest import build_method, load_script, random_documents
from tests.test_rmt import run_segments
from tests.test_span_write import one_hot_weights


def load_trace():
    return load_script("memory_trace")


def test_the_trace_names_the_span_each_write_embedded_and_the_cache_holds_it(llama: torch.nn.Module) -> None:
    trace = load_trace()
    torch.manual_seed(0)
    m, k, n = 4, 8, 4
    model = build_method("hmt", llama, {"segment_length": 40, "memory_tokens": m, "sensory_tokens": k,
                                        "recall_hidden_dim": 16, "write": "span"}).eval()
    size = model.segment_tokens
    ids, lengths = random_documents(2, n * size), torch.tensor([n * size, n * size])
    end = 2  # every write takes the span ending at text position 2: one sensory token, then three text tokens
    model.span_write.weights = one_hot_weights(torch.tensor([end + 1, end + 1]), size)
    tracer = trace.Tracer(model)
    with torch.no_grad():
        cache = run_segments(model, ids, lengths)[-1].state.cache
    assert len(tracer.writes) == n and len(tracer.recalls) == n - 1  # segment 0 recalls nothing
    batch, tokenizer = segment_batch(ids, lengths, size), byte_tokenizer()
    for row in range(2):
        text = trace.RowText(batch.segments[row], batch.lengths[row], tokenizer, m, k)
        for i in range(1, n):
            span_ids = text.visible(i)[k + end - m + 1 : k + end + 1]
            assert span_ids[0] == int(batch.segments[row, i - 1, -1])  # the previous segment's last token
            assert trace.write_of(tracer.writes[i][row], text, i) == {"choice": end, "weight": 1.0,
                                                                      "span": tokenizer.decode(span_ids)}
            torch.testing.assert_close(cache.values[row, i].view(m, -1), model.embed(torch.tensor([span_ids]))[0])
        assert trace.write_of(torch.tensor([0.75, 0.25, *[0.0] * (size - 1)]), text, 1) == {"choice": "stay",
                                                                                              "weight": 0.75}


def test_the_key_belongs_to_the_segment_whose_sensory_tokens_and_text_hold_it_whole() -> None:
    trace, tokenizer = load_trace(), byte_tokenizer()
    size, k = 24, 8
    prompt = "x" * 30 + "The pass key is 12345." + "y" * 30  # the digits at 46-50: across the boundary at 48
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    batch = segment_batch(ids, torch.tensor([ids.shape[1]]), size)
    text = trace.RowText(batch.segments[0], batch.lengths[0], tokenizer, 4, k)
    assert text.needle("12345", 4) == 2 and "12345" not in tokenizer.decode(text.text[2])
    assert text.needle("The pass key", 4) == 1 and text.needle("1", 4) == 1


def test_cache_slots_map_to_the_segments_that_wrote_them() -> None:
    trace = load_trace()
    assert [trace.slot_segment(s, 5, 100) for s in range(5)] == [0, 1, 2, 3, 4]
    assert [trace.slot_segment(s, 7, 3) for s in range(3)] == [6, 4, 5]  # a full ring: the last 3 writers


def test_a_memory_holds_a_fact_it_wrote_or_kept_from_its_top_recall() -> None:
    """Segment 0 writes fact A, 1 writes B, 2 keeps what it recalled most (segment 1's memory): A in 0, B in 1 and
    2; the answering segment's top recall (slot 2) then holds the other fact, B, when A is asked."""
    trace = load_trace()
    writes = [{"choice": 3, "span": "Alice is 1111111"}, {"choice": 5, "span": "Bob is 2222222"},
              {"choice": "stay"}]
    recalls = [torch.tensor([1.0, 0, 0]), torch.tensor([0.1, 0.9, 0]), torch.tensor([0.2, 0.1, 0.7])]
    assert trace.memories_holding("1111111", writes, recalls, 3) == [True, False, False]
    assert trace.memories_holding("2222222", writes, recalls, 3) == [False, True, True]
    top = trace.slot_segment(int(recalls[2].argmax()), 3, 3)
    assert top == 2 and not trace.memories_holding("1111111", writes, recalls, 3)[top]


def test_the_trace_says_whose_fact_the_answering_segment_recalled() -> None:
    """Segment 0 writes Amy's number, 1 Bob's, 2 keeps what it recalled (segment 1's memory: Bob's); segment 3 asks
    for Amy's: recalling segment 0 brings the asked fact, segment 2 another person's, and a filler write none."""
    from types import SimpleNamespace

    from hmtbench.engine import IGNORE

    trace, tokenizer, size, m = load_trace(), byte_tokenizer(), 24, 8
    texts = ["Amy 1111111 " + "x" * 12, "Bob 2222222 " + "y" * 12, "z" * 24, "And Amy's number?" + " " * 7]
    segments = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
    text = trace.RowText(segments, torch.tensor([size] * 4), tokenizer, m, 0)
    targets = torch.full((4, size), IGNORE)
    targets[3, 0] = 1  # segment 3 answers

    def write(choice: int) -> torch.Tensor:  # one-hot over [stay, span ending at text position choice - 1]
        return torch.nn.functional.one_hot(torch.tensor([choice]), 1 + size).float()

    def traced(top: int, third: int = 0) -> dict:
        recalls = [torch.tensor([[1.0, 0, 0, 0]]), torch.tensor([[0.2, 0.8, 0, 0]]),
                   torch.nn.functional.one_hot(torch.tensor([top]), 4).float()]
        tracer = SimpleNamespace(writes=[write(11), write(11), write(third), write(0)], recalls=recalls)
        return trace.trace_row(0, "1111111", text, targets, tracer, 4, others=("2222222",))

    assert traced(top=0)["recall_top_holds"] == "asked"
    assert traced(top=2)["recall_top_holds"] == "other"  # segment 2 kept segment 1's memory: Bob's number
    assert traced(top=2, third=24)["recall_top_holds"] == "none"  # segment 2 wrote its own filler instead
    assert "recall_top_holds" not in trace.trace_row(0, "1111111", text, targets, SimpleNamespace(
        writes=[write(11), write(11), write(0), write(0)], recalls=[torch.ones(1, 4)] * 3), 4)  # passkey: no others
