"""train.layer_checkpoint: each decoder block recomputed in the backward pass, whatever the architecture.

``--grad-checkpoint`` recomputes a whole segment, so its backward still holds every layer's activations of
that segment at once: little help for full context, whose one segment is the whole context. Here each block
keeps only its inputs and runs again when the backward reaches it, so a segment's activations are held one
block at a time.

Each block's ``forward`` is wrapped in place (as ``hmtbench.fastpath`` compiles it), not transformers'
``gradient_checkpointing_enable``: that one checkpoints ``__call__`` in transformers 4.x, where a per-layer
method's module hooks (ARMT's reads) would have been removed by the time the backward recomputes the block,
and it may add an input-embedding hook. Wrapping ``forward`` keeps the hooks outside the recomputed region on
every version, and a recomputed compiled block runs its compiled code again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hmtbench.errors import HmtbenchError
from hmtbench.methods.hooks import repeated_blocks

_checkpointed_blocks: set[nn.Module] = set()  # a backbone shared by several stages is wrapped once


def checkpoint_blocks(backbone: nn.Module) -> int:
    """Recompute each repeated block of ``backbone`` in the backward pass while training (once); returns how many
    blocks there are. Outside training (``eval()`` or no gradients) the blocks run as before."""
    blocks = repeated_blocks(backbone)
    if blocks is None:
        raise HmtbenchError(f"train.layer_checkpoint found no repeated decoder blocks in {type(backbone).__name__}; "
                            "use --grad-checkpoint")
    for block in blocks:
        if block not in _checkpointed_blocks:
            block.forward = _recomputed(block, block.forward)
            _checkpointed_blocks.add(block)
    return len(blocks)


def _recomputed(block: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        if not (block.training and torch.is_grad_enabled()):
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run
