"""How a trained soft choice (a softmax over candidates) is used outside training: as trained, or its argmax alone."""

from __future__ import annotations

import torch
from torch import Tensor

from hmtbench.errors import HmtbenchError

CHOICES = ("soft", "hard")  # the weights' mixture; or, without gradients, the heaviest candidate alone


def check_choice(setting: str, choice: str) -> None:
    if choice not in CHOICES:
        raise HmtbenchError(f"method.{setting} must be one of {', '.join(CHOICES)}, got '{choice}'")


def chosen(weights: Tensor, choice: str) -> Tensor:
    """(B, C) weights (rows sum to 1) as ``choice`` uses them: unchanged, or with ``hard`` and no gradients one-hot
    on each row's argmax (training always mixes, so the gradient reaches every candidate)."""
    if choice == "hard" and not torch.is_grad_enabled():
        return torch.zeros_like(weights).scatter_(1, weights.argmax(1, keepdim=True), 1.0)
    return weights
