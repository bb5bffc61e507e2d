"""plain and full: the backbone's own loss, batching invariance, the exact token accounting."""

from __future__ import annotations

import math

import pytest
import torch

from hmtbench.engine import score_segments, segment_batch
from hmtbench.evaluation.perplexity import evaluate
from tests.conftest import build_method, random_documents


def backbone_loss(backbone: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return backbone(input_ids=ids, labels=ids).loss.item()


@pytest.mark.parametrize("method", ["plain", "full"])
def test_one_segment_equals_backbone_loss(backbone: torch.nn.Module, method: str) -> None:
    ids = random_documents(1, 96)
    model = build_method(method, backbone, {"segment_length": 96})
    batch = segment_batch(ids, torch.tensor([96]), model.segment_tokens)
    with torch.no_grad():
        nll, tokens = score_segments(model, batch)
    assert tokens.sum().item() == 95
    assert nll.sum().item() / 95 == pytest.approx(backbone_loss(backbone, ids), abs=1e-5)


def test_segments_are_independent_backbone_runs(backbone: torch.nn.Module) -> None:
    ids = random_documents(1, 100)
    model = build_method("plain", backbone, {"segment_length": 40})
    batch = segment_batch(ids, torch.tensor([100]), 40)
    with torch.no_grad():
        nll, tokens = score_segments(model, batch)
        logits = [backbone(input_ids=ids[:, s : s + 40]).logits for s in (0, 40, 80)]
    # token t+1 is predicted by the logits at t, across segment boundaries too
    flat = torch.cat(logits, dim=1)[0, :99].log_softmax(-1)
    expected = -flat.gather(1, ids[0, 1:, None]).squeeze(1)
    per_segment = torch.stack([expected[:40].sum(), expected[40:80].sum(), expected[80:].sum()])
    assert tokens.tolist() == [[40, 40, 19]]
    torch.testing.assert_close(nll[0], per_segment, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("method", ["plain", "rmt", "hmt"])
def test_batching_and_padding_do_not_change_scores(backbone: torch.nn.Module, method: str) -> None:
    torch.manual_seed(0)
    settings = {"segment_length": 32, "sensory_tokens": 4, "recall_hidden_dim": 16}
    model = build_method(method, backbone, settings)
    lengths = torch.tensor([150, 97, 31])
    ids = random_documents(3, 150)
    alone = []
    with torch.no_grad():
        for row, length in enumerate(lengths.tolist()):
            one = segment_batch(ids[row : row + 1, :length], torch.tensor([length]), model.segment_tokens)
            alone.append(score_segments(model, one)[0].sum().item())
        together = score_segments(model, segment_batch(ids, lengths, model.segment_tokens))[0].sum(-1)
    assert together.tolist() == pytest.approx(alone, abs=1e-4)


def hand_nll(backbone: torch.nn.Module, ids: torch.Tensor, segment: int) -> float:
    """Summed NLL of tokens 1..n-1 from the backbone run alone on each ``segment``-token piece (plain's reading)."""
    with torch.no_grad():
        pieces = [backbone(input_ids=ids[None, s : s + segment]).logits[0] for s in range(0, len(ids), segment)]
    logits = torch.cat(pieces)
    log_probs = logits[:-1].double().log_softmax(-1)
    return -log_probs.gather(1, ids[1:, None]).sum().item()


def test_perplexity_is_exp_of_summed_nll_over_tokens(llama: torch.nn.Module) -> None:
    ids = random_documents(2, 64)
    lengths = [64, 50]
    model = build_method("plain", llama, {"segment_length": 16})
    result = evaluate(model, iter([((ids, torch.tensor(lengths), None), 0)]))
    assert result.tokens == 63 + 49
    by_hand = math.exp(sum(hand_nll(llama, ids[row, :n], 16) for row, n in enumerate(lengths)) / (63 + 49))
    assert result.ppl == pytest.approx(by_hand, rel=1e-5)  # fp32 logits, summed in float64 on both sides
    assert 200 < result.ppl < 330  # a random model over 259 tokens is near uniform
