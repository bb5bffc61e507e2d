"""overlap: each segment sees the previous segment's last k tokens as context, scored once, and nothing else."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hmtbench.engine import score_segments, segment_batch
from tests.conftest import build_method, random_documents


def test_overlap_is_the_backbone_on_windows_that_overlap_by_k(backbone: torch.nn.Module) -> None:
    """The document's NLL equals the backbone's own logits on [last k of segment n-1 | segment n], token by token."""
    k, length = 4, 20
    model = build_method("overlap", backbone, {"segment_length": length, "sensory_tokens": k}).eval()
    s = model.segment_tokens
    assert (s, model.memory_tokens, model.sensory_tokens, model.added_parameters()) == (length - k, 0, k, {})
    ids = random_documents(1, 3 * s + 5)
    with torch.no_grad():
        nll, tokens = score_segments(model, segment_batch(ids, torch.tensor([ids.shape[1]]), s))
        by_hand = torch.zeros(())
        for start in range(0, ids.shape[1], s):
            context = ids[:, max(0, start - k) : start + s]  # the k overlap tokens, then the segment
            logits = backbone(input_ids=context).logits[0].float()
            first = min(k, start)  # the text starts after the overlap
            targets = ids[0, start + 1 : start + s + 1]
            by_hand += F.cross_entropy(logits[first : first + len(targets)], targets, reduction="sum")
    assert int(tokens.sum()) == ids.shape[1] - 1  # every token but the first, once: the overlap is not scored
    torch.testing.assert_close(nll.sum(), by_hand, rtol=1e-4, atol=1e-4)


def test_a_segment_depends_on_the_previous_one_only_through_its_last_k_tokens(llama: torch.nn.Module) -> None:
    k, length = 3, 16
    model = build_method("overlap", llama, {"segment_length": length, "sensory_tokens": k}).eval()
    s = model.segment_tokens
    ids = random_documents(1, 3 * s)
    changed_early, changed_tail = ids.clone(), ids.clone()
    changed_early[0, 0] = (ids[0, 0] + 1) % 256  # inside segment 0, before its last k tokens
    changed_tail[0, s - 1] = (ids[0, s - 1] + 1) % 256  # one of segment 0's last k tokens
    lengths = torch.tensor([3 * s])
    with torch.no_grad():
        base, changed, tail = (score_segments(model, segment_batch(x, lengths, s))[0] for x in
                               (ids, changed_early, changed_tail))
    assert torch.equal(base[:, 2], changed[:, 2]) and torch.equal(base[:, 1], changed[:, 1])
    assert not torch.equal(base[:, 1], tail[:, 1])  # segment 1 reads segment 0's last k tokens
