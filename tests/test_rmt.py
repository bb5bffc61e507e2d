"""RMT: what a segment writes is what the next one reads; memory carries context; BPTT depth is real."""

from __future__ import annotations

import pytest
import torch

from hmtbench.engine import score_segments, segment_batch
from hmtbench.methods.base import SegmentMethod, SegmentOutput
from tests.conftest import build_method, random_documents


class BackboneInputs:
    """Records the ``inputs_embeds`` of every call to the backbone (a forward pre-hook)."""

    def __init__(self, backbone: torch.nn.Module, *, retain_grad: bool = False) -> None:
        self.seen: list[torch.Tensor] = []
        self.retain_grad = retain_grad
        self.handle = backbone.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:
        embeds = kwargs["inputs_embeds"]
        if self.retain_grad:
            embeds.retain_grad()
            self.seen.append(embeds)
        else:
            self.seen.append(embeds.detach().clone())

    def __enter__(self) -> list[torch.Tensor]:
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def run_segments(model: SegmentMethod, ids: torch.Tensor, lengths: torch.Tensor) -> list[SegmentOutput]:
    """Drive the method segment by segment (as the engine does) and keep every output."""
    batch = segment_batch(ids, lengths, model.segment_tokens)
    state = model.initial_state(ids.shape[0])
    outputs = []
    for i in range(batch.segments.shape[1]):
        out = model(state, batch.segments[:, i], batch.lengths[:, i])
        outputs.append(out)
        state = out.state
    return outputs


@pytest.mark.parametrize("memory_tokens", [1, 2])
def test_memory_written_by_segment_n_is_read_by_segment_n_plus_1(backbone: torch.nn.Module, memory_tokens: int) -> None:
    torch.manual_seed(0)
    m = memory_tokens
    model = build_method("rmt", backbone, {"segment_length": 24, "memory_tokens": m})
    s = model.segment_tokens
    assert s == 24 - 2 * m
    lengths = torch.tensor([3 * s + 5, 2 * s])  # a short last segment in row 0
    ids = random_documents(2, 3 * s + 5)
    seg_lengths = segment_batch(ids, lengths, s).lengths
    with torch.no_grad():
        with BackboneInputs(backbone) as seen:
            outputs = run_segments(model, ids, lengths)
        assert len(seen) == 4
        for i, embeds in enumerate(seen):
            assert embeds.shape == (2, m + s + m, model.hidden_size)
            read = model.memory.expand(2, -1, -1) if i == 0 else outputs[i - 1].state.memory
            # the read slot holds the memory (the learned one for segment 0)
            torch.testing.assert_close(embeds[:, :m], read, rtol=0, atol=0)
            # the text positions hold the segment's own token embeddings
            text_ids = segment_batch(ids, lengths, s).segments[:, i]
            for row in range(2):
                n = int(seg_lengths[row, i])
                torch.testing.assert_close(embeds[row, m : m + n], model.embed(text_ids[row, :n]), rtol=0, atol=0)
                # the write slot sits right after the row's last real token and holds the same memory
                torch.testing.assert_close(embeds[row, m + n : m + n + m], read[row], rtol=0, atol=0)
            # what the segment writes: the backbone's last hidden state (hidden_states[-1]) at the write slot
            hidden = backbone(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
            written = outputs[i].state.memory
            assert written.shape == (2, m, model.hidden_size)
            for row in range(2):
                n = int(seg_lengths[row, i])
                torch.testing.assert_close(written[row], hidden[row, m + n : m + n + m], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["plain", "rmt"])
def test_changing_an_early_segment_changes_later_logits_only_with_memory(backbone: torch.nn.Module, method: str):
    torch.manual_seed(0)
    model = build_method(method, backbone, {"segment_length": 20, "memory_tokens": 1})
    s = model.segment_tokens
    ids = random_documents(1, 3 * s)
    changed = ids.clone()
    changed[0, 2] = (changed[0, 2] + 1) % 256  # a token of segment 0 only
    lengths = torch.tensor([3 * s])
    with torch.no_grad():
        before = [o.logits for o in run_segments(model, ids, lengths)]
        after = [o.logits for o in run_segments(model, changed, lengths)]
    assert not torch.equal(before[0], after[0])
    for i in (1, 2):
        difference = (before[i] - after[i]).abs().max().item()
        if method == "plain":
            assert difference == 0.0
        else:
            assert difference > 1e-6


def last_segment_loss(model: SegmentMethod, ids: torch.Tensor, grad_segments: int | None) -> torch.Tensor:
    batch = segment_batch(ids, torch.tensor([ids.shape[1]] * ids.shape[0]), model.segment_tokens)
    nll, _ = score_segments(model, batch, grad_segments=grad_segments)
    return nll[:, -1].sum()


@pytest.mark.parametrize("method", ["rmt", "hmt"])
def test_gradients_reach_the_memory_through_the_configured_depth(backbone: torch.nn.Module, method: str) -> None:
    torch.manual_seed(0)
    model = build_method(method, backbone, {"segment_length": 16, "recall_hidden_dim": 8, "sensory_tokens": 2})
    n = 4
    ids = random_documents(2, n * model.segment_tokens)
    for depth in [None, 1, 2, 3, 4, 6]:
        model.zero_grad(set_to_none=True)
        last_segment_loss(model, ids, depth).backward()
        grad = model.memory.grad
        reaches_segment_0 = depth is None or depth >= n
        if reaches_segment_0:  # the learned memory is only read by segment 0
            assert grad is not None and grad.abs().sum().item() > 0, depth
        else:
            assert grad is None or grad.abs().sum().item() == 0, depth


@pytest.mark.parametrize("method", ["plain", "rmt", "hmt"])
@pytest.mark.parametrize("depth", [None, 1, 2, 3])
def test_no_gradient_reaches_segments_beyond_the_truncation(llama: torch.nn.Module, method: str, depth) -> None:
    """Gradient of the last segment's loss w.r.t. each segment's input embeddings: zero more than K back."""
    torch.manual_seed(0)
    llama.get_input_embeddings().weight.requires_grad_(True)  # so every segment's inputs carry a gradient
    model = build_method(method, llama, {"segment_length": 16, "recall_hidden_dim": 8, "sensory_tokens": 2})
    n = 4
    ids = random_documents(1, n * model.segment_tokens)
    with BackboneInputs(llama, retain_grad=True) as seen:
        last_segment_loss(model, ids, depth).backward()
    assert len(seen) == n  # HMT's summary passes call the inner model, not the hooked causal LM
    reached = [e.grad is not None and e.grad.abs().sum().item() > 0 for e in seen]
    if method == "plain":
        expected = [False] * (n - 1) + [True]
    else:
        first = 0 if depth is None else max(0, n - depth)
        expected = [i >= first for i in range(n)]
    assert reached == expected


def test_grad_segments_must_be_positive(llama: torch.nn.Module) -> None:
    model = build_method("rmt", llama, {"segment_length": 16})
    ids = random_documents(1, 3 * model.segment_tokens)
    with pytest.raises(ValueError, match="grad_segments"):
        last_segment_loss(model, ids, 0)


def test_only_the_method_parameters_and_not_the_frozen_backbone_get_gradients(backbone: torch.nn.Module) -> None:
    torch.manual_seed(0)
    backbone.requires_grad_(False)
    model = build_method("rmt", backbone, {"segment_length": 16, "memory_tokens": 2})
    ids = random_documents(1, 3 * model.segment_tokens)
    last_segment_loss(model, ids, None).backward()
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["memory"]
    assert model.memory.shape == (2, model.hidden_size)


def test_rmt_rejects_bad_settings(llama: torch.nn.Module) -> None:
    from hmtbench.errors import HmtbenchError

    with pytest.raises(HmtbenchError, match="--memory-tokens"):
        build_method("rmt", llama, {"segment_length": 16, "memory_tokens": 0})
    with pytest.raises(HmtbenchError, match="--segment-length"):
        build_method("rmt", llama, {"segment_length": 4, "memory_tokens": 2})
    with pytest.raises(HmtbenchError, match="--segment-length 5000 exceeds"):
        build_method("rmt", llama, {"segment_length": 5000})
