"""A method's state as rows: selecting rows of a batch and joining states give the states those rows have alone."""

from __future__ import annotations

import pytest
import torch

from hmtbench.engine import segment_batch
from hmtbench.methods.state import concat_rows, flatten, select_rows
from tests.conftest import build_method, random_documents

SETTINGS = [
    ("rmt", {"memory_tokens": 2}),
    ("overlap", {"sensory_tokens": 4}),
    ("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16, "recall_context": 2}),
    ("hmt", {"stage": 1, "sensory_tokens": 4}),
]


def read(model, ids: torch.Tensor, segments: int):
    """The state after ``segments`` whole segments of ``ids`` (B, T)."""
    size = model.segment_tokens
    batch = segment_batch(ids, torch.full((ids.shape[0],), ids.shape[1]), size)
    with torch.no_grad():
        summaries = model.summarize(batch.segments, batch.lengths)
        state = model.initial_state(ids.shape[0])
        for i in range(segments):
            summary = None if summaries is None else summaries[:, i]
            state = model(state, batch.segments[:, i], batch.lengths[:, i], summary).state
    return state


def assert_same(a, b) -> None:
    layout_a, tensors_a = flatten(a)
    layout_b, tensors_b = flatten(b)
    assert layout_a == layout_b
    for x, y in zip(tensors_a, tensors_b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "settings"), SETTINGS, ids=["rmt", "overlap", "hmt", "hmt-stage1"])
def test_rows_of_a_batch_state_equal_the_rows_read_alone(llama, name: str, settings: dict) -> None:
    torch.manual_seed(0)
    model = build_method(name, llama, {"segment_length": 24, **settings}).eval()
    ids = random_documents(3, 4 * model.segment_tokens, seed=2)
    whole = read(model, ids, 3)  # 3 segments: HMT's 2-slot cache has wrapped around
    picked = select_rows(whole, torch.tensor([2, 0]))
    assert picked.batch_size == 2
    assert_same(picked, read(model, ids[[2, 0]], 3))
    joined = concat_rows([select_rows(whole, torch.tensor([1])), select_rows(whole, torch.tensor([0, 2]))])
    assert_same(joined, select_rows(whole, torch.tensor([1, 0, 2])))


def test_hmt_rows_read_to_different_depths_share_a_batch(llama) -> None:
    """Each row's cache counts its own memories: a row after 1 segment and one after 3 recall as they would alone."""
    torch.manual_seed(0)
    model = build_method("hmt", llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16}).eval()
    ids = random_documents(2, 4 * model.segment_tokens, seed=3)
    short, deep = read(model, ids[:1], 2), read(model, ids[1:], 3)
    joined = concat_rows([short, deep])
    assert joined.cache.count.tolist() == [2, 3]
    assert_same(select_rows(joined, torch.tensor([1])), deep)
    summary = torch.randn(2, model.hidden_size)
    with torch.no_grad():
        together, _ = model.read_memory(joined, summary)
        alone = torch.cat([model.read_memory(short, summary[:1])[0], model.read_memory(deep, summary[1:])[0]])
    torch.testing.assert_close(together, alone)


def test_states_of_different_layouts_do_not_join(llama) -> None:
    model = build_method("hmt", llama, {"segment_length": 24, "sensory_tokens": 4, "recall_hidden_dim": 16}).eval()
    ids = random_documents(1, 3 * model.segment_tokens)
    with pytest.raises(ValueError, match="different layouts"):
        concat_rows([read(model, ids, 0), read(model, ids, 2)])
