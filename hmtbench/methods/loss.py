"""The exact token loss without (B, S, V) fp32 logits: cross-entropy with the fp32 upcast done a chunk of positions
at a time, so no (B, S, V) fp32 copy of the logits is ever made (per-position results are those of
``F.cross_entropy`` on fp32 logits). ``hidden_nll`` runs the output head itself, a chunk at a time, where the head is
plain (``hmtbench.methods.hf_calls.head_is_plain``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100
CE_CHUNK_ELEMENTS = 2**26  # logits upcast to fp32 at most this many at a time (256 MiB)

ChunkNll = Callable[[nn.Module, Tensor, Tensor], Tensor]  # (head, rows (R, d), targets (R,)) -> (R,) NLL


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """(B, S) negative log-likelihood in fp32, 0 where the target is IGNORE; logits (B, S, V) in any dtype."""
    rows, wanted = logits.flatten(0, 1), targets.flatten()
    size = max(1, CE_CHUNK_ELEMENTS // logits.shape[-1])
    parts = [_nll(rows[i : i + size], wanted[i : i + size]) for i in range(0, rows.shape[0], size)]
    return torch.cat(parts).view(targets.shape)


def hidden_nll(head: nn.Module, hidden: Tensor, targets: Tensor, chunk: ChunkNll | None = None) -> Tensor:
    """(B,) summed NLL of ``targets`` (B, S) given the last hidden states (B, S, d) at those positions.

    The output head runs a chunk of positions at a time (``chunk_nll``, or a compiled one), so neither
    the (B, S, V) logits nor their fp32 copy is ever held whole.
    """
    rows, wanted = hidden.flatten(0, 1), targets.flatten()
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    size, chunk = max(1, CE_CHUNK_ELEMENTS // vocab), chunk or chunk_nll
    parts = [chunk(head, rows[i : i + size], wanted[i : i + size]) for i in range(0, rows.shape[0], size)]
    return torch.cat(parts).view(targets.shape).sum(-1)


def chunk_nll(head: nn.Module, rows: Tensor, targets: Tensor) -> Tensor:
    """(R,) NLL of targets (R,) from hidden states (R, d): the head, then cross-entropy in fp32."""
    return _nll(head(rows), targets)


def _nll(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="none")
