"""How a memory method's memory starts, and what its segments write: the paper's states or spans (RMT, HMT)."""

from __future__ import annotations

import torch
from torch import nn

from hmtbench.errors import HmtbenchError
from hmtbench.methods.choice import check_choice
from hmtbench.methods.span_write import SpanWrite

WRITES = ("state", "span")  # state: the paper's (last hidden states at the write slot); span: SpanWrite


def check_write(write: str, span_choice: str) -> None:
    if write not in WRITES:
        raise HmtbenchError(f"method.write must be one of {', '.join(WRITES)}, got '{write}'")
    check_choice("span_choice", span_choice)


def write_label(write: str, span_choice: str) -> str:
    """How a record names the write: state | span | span-hard | span-hard-st."""
    return f"span-{span_choice}" if write == "span" and span_choice != "soft" else write


def add_memory(method: nn.Module, rows: int, write: str, span_choice: str = "soft",
               dtype: torch.dtype | None = None) -> None:
    """Give ``method`` its initial memory (``memory``, (rows, d)) and, for ``write: span``, its ``span_write``.

    The paper's write starts from a learned memory (``init_memory``, in ``dtype``: default the backbone's); the span
    write from a blank one (the mean input embedding in every row), a buffer (``hmtbench.methods.span_write``).
    """
    if write == "span":
        embeddings = method.backbone.get_input_embeddings().weight
        method.span_write = SpanWrite(embeddings, dtype=method.dtype, choice=span_choice)
        method.register_buffer("memory", method.span_write.blank.expand(rows, -1).clone(), persistent=False)
    else:
        method.memory = init_memory(method.backbone, rows, dtype)


def init_memory(backbone: nn.Module, rows: int, dtype: torch.dtype | None = None) -> nn.Parameter:
    """(rows, d) learned vectors scaled like the backbone's input embeddings (as both references do), in ``dtype``
    (default: the backbone's)."""
    weight = backbone.get_input_embeddings().weight
    values = torch.randn(rows, weight.shape[1], dtype=torch.float32)
    values = values * weight.detach().float().std().item()  # drawn on the CPU: same values on every device
    return nn.Parameter(values.to(device=weight.device, dtype=dtype or weight.dtype))
