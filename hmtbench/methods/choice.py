"""How a soft choice (a softmax over candidates) is used: as the mixture, or its argmax alone."""

from __future__ import annotations

import torch
from torch import Tensor

from hmtbench.errors import HmtbenchError

# soft: the weights' mixture. hard: outside training the heaviest candidate alone; training mixes, so the gradient
# reaches every candidate. hard-st: the heaviest candidate alone in training too, its gradient the mixture's
# (straight-through), so training reads what a hard evaluation reads.
CHOICES = ("soft", "hard", "hard-st")


def check_choice(setting: str, choice: str) -> None:
    if choice not in CHOICES:
        raise HmtbenchError(f"method.{setting} must be one of {', '.join(CHOICES)}, got '{choice}'")


def chosen(weights: Tensor, choice: str) -> Tensor:
    """(B, C) weights (rows sum to 1) as ``choice`` uses them (``CHOICES``)."""
    training = torch.is_grad_enabled()
    if choice == "soft" or (choice == "hard" and training):
        return weights
    one_hot = torch.zeros_like(weights).scatter_(1, weights.argmax(1, keepdim=True), 1.0)
    return one_hot + (weights - weights.detach()) if training else one_hot
