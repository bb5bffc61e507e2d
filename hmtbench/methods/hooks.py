"""Per-layer hooks: how a method reads and writes inside every decoder block, for the length of one backbone call.

A method with per-layer state (``SegmentMethod.per_layer``, ARMT) changes each block's input (its
``read_layer``) and keeps each block's output at the write slots, which ``next_state`` receives as
``layers``. The hooks are module hooks registered on the blocks when a call starts and removed when it
ends (``SegmentMethod.backbone_hooks``), so the backbone is never modified and a method that shares a
backbone with another leaves nothing behind. ``hmtbench.fastpath`` compiles each block's ``forward``,
not its ``__call__``: module hooks run eagerly around the compiled blocks, so they never enter a
compiled region and the blocks keep sharing one compilation whatever a hook does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

LayerRead = Callable[[int, Tensor], Tensor]  # (layer, its input (B, T, d)) -> the input it runs on


@dataclass
class LayerCapture:
    """What the hooks of one backbone call kept: every block's output at the write slots."""

    outputs: list[Tensor] = field(default_factory=list)  # (B, m, d) per block, in layer order

    @property
    def layers(self) -> Tensor | None:
        """(B, n_layers, m, d) every block's output at the write slots, or None when nothing was kept."""
        return torch.stack(self.outputs, dim=1) if self.outputs else None


def repeated_blocks(model: nn.Module) -> nn.ModuleList | None:
    """The longest list of same-class modules in the model: its decoder layers, whatever the architecture."""
    lists = [
        m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 1 and len({type(b) for b in m}) == 1
    ]
    return max(lists, key=len, default=None)


@contextlib.contextmanager
def layer_hooks(blocks: tuple[nn.Module, ...], read: LayerRead, write_at: Tensor | None, rows: int
                ) -> Iterator[LayerCapture]:
    """Hook every block while inside: its input's first ``rows`` rows become ``read(layer, input)``, and its
    output at ``write_at`` (B, m) (positions in this call) is kept. Rows past ``rows`` (side rows a method adds
    to a call, such as HMT's inline summaries) pass unread and are never kept."""
    capture = LayerCapture()
    handles = []
    for layer, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(_reader(layer, read, rows), with_kwargs=True))
        if write_at is not None:
            handles.append(block.register_forward_hook(_keeper(write_at, rows, capture)))
    try:
        yield capture
    finally:
        for handle in handles:
            handle.remove()


def _reader(layer: int, read: LayerRead, rows: int):
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]):
        hidden = args[0] if args else kwargs["hidden_states"]
        changed = read(layer, hidden[:rows])
        if hidden.shape[0] > rows:
            changed = torch.cat([changed, hidden[rows:]])
        if args:
            return (changed, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": changed}

    return hook


def _keeper(write_at: Tensor, rows: int, capture: LayerCapture):
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # (B', T, d)
        at = write_at[..., None].expand(-1, -1, hidden.shape[-1])
        capture.outputs.append(hidden[:rows].gather(1, at))

    return hook
