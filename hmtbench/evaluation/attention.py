"""How much attention a memory method's text pays to its read slot, layer by layer.

Over a batch of QA samples read in the answer layout (``qa.answers``), every layer's attention weights are taken at
two sets of queries: the positions that predict answer tokens, and every real text position of every segment. Each
share (the attention mass on the read slot's m positions, averaged over heads, then over queries) comes with the
share a query would give the slot if it attended uniformly to the keys it sees (m / (q + 1) at layout position q).

Read it beside ``evaluation.memory_swap``, never alone: the read slot holds each segment's first positions, where
attention sinks sit, so a memory that is never used can draw as much attention as one that is (docs/cli.md gives the
measured case). The weights need HF's eager attention (SDPA returns none): the backbone runs eager while the probe is
on, so this is a separate pass over a few samples, never the fast path's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hmtbench.engine import IGNORE, SegmentedBatch
from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import SegmentMethod
from hmtbench.methods.hooks import repeated_blocks
from hmtbench.methods.segment_step import layout_text_start
from hmtbench.qa.answers import answer_pass, qa_batch

ATTENTION_NAMES = ("self_attn", "attention", "attn")  # Llama, Qwen2, Gemma, OPT | GPT-NeoX | GPT-2


@dataclass
class ReadAttention:
    """Per layer: the mean share of attention on the read slot, and what uniform attention would give the same
    queries; ``answer*`` at the positions that predict answer tokens, ``text*`` at every real text position."""

    answer: list[float]
    answer_uniform: list[float]
    text: list[float]
    text_uniform: list[float]
    samples: int

    def columns(self) -> dict[str, object]:
        """The result record's columns (hmtbench.results.schema)."""
        return {"read_attention": self.answer, "read_attention_uniform": self.answer_uniform,
                "read_attention_text": self.text, "read_attention_text_uniform": self.text_uniform,
                "read_attention_samples": self.samples}

    def summary(self) -> str:
        """One line: the layer mean and the most attended layer, against uniform attention."""
        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        top = max(range(len(self.answer)), key=self.answer.__getitem__)
        return (f"answer queries' attention on the read slot over {len(self.answer)} layers: mean "
                f"{mean(self.answer):.4f} (uniform {mean(self.answer_uniform):.4f}), most in layer {top} "
                f"({self.answer[top]:.4f}); "
                f"every text query: {mean(self.text):.4f} (uniform {mean(self.text_uniform):.4f}); "
                f"{self.samples} samples")


def attention_modules(backbone: nn.Module) -> list[nn.Module]:
    """Each decoder block's self-attention module, in layer order."""
    blocks = repeated_blocks(backbone)
    found = [next((getattr(block, name) for name in ATTENTION_NAMES if hasattr(block, name)), None)
             for block in (blocks or [])]
    if not found or any(module is None for module in found):
        raise HmtbenchError("memory attention: this backbone's decoder blocks have no attention module named "
                            f"{' | '.join(ATTENTION_NAMES)}")
    return found


@contextlib.contextmanager
def eager_attention(backbone: nn.Module) -> Iterator[None]:
    """HF's eager attention while inside (it alone returns the weights); the backbone's own afterwards."""
    config = backbone.config
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


class _Shares:
    """Running sums of the read-slot shares, per layer, filled by forward hooks on the attention modules."""

    def __init__(self, batch: SegmentedBatch, memory_tokens: int, layers: int) -> None:
        self.batch, self.m = batch, memory_tokens
        self.segment: int | None = None  # the segment whose step runs now; None: a call outside the answer pass
        self.sums = torch.zeros(4, layers, dtype=torch.float64)  # answer, answer uniform, text, text uniform
        self.counts = torch.zeros(2, layers, dtype=torch.float64)  # answer queries, text queries

    def open(self, segment: int, *_: object) -> None:
        self.segment = segment

    def hook(self, layer: int):
        def record(module: nn.Module, args: tuple, output: tuple) -> None:
            if self.segment is None:
                return
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise HmtbenchError("memory attention: the attention modules return no weights in this transformers "
                                    "version, even eager")
            self._add(layer, weights)
        return record

    def _add(self, layer: int, weights: Tensor) -> None:
        rows, size = self.batch.segments.shape[0], weights.shape[-1]
        lengths, targets = self.batch.lengths[:, self.segment], self.batch.targets[:, self.segment]
        text_start = layout_text_start(size, targets.shape[1], self.m)
        share = weights[:rows, ..., : self.m].float().sum(-1).mean(1)  # (B, T): over the slot, then the heads
        position = torch.arange(size, device=weights.device)
        uniform = (self.m / (position + 1).double()).expand(rows, -1)
        offset = position[None] - text_start
        text = (offset >= 0) & (offset < lengths[:, None])
        answer = torch.zeros_like(text)
        answer[:, text_start : text_start + targets.shape[1]] = targets != IGNORE
        for index, mask in enumerate((answer, text)):
            self.sums[2 * index, layer] += share[mask].double().sum().cpu()
            self.sums[2 * index + 1, layer] += uniform[mask].sum().cpu()
            self.counts[index, layer] += mask.sum().cpu()

    def result(self, samples: int) -> ReadAttention:
        means = (self.sums / self.counts.repeat_interleave(2, 0).clamp(min=1)).tolist()
        return ReadAttention(*means, samples=samples)


def require_read_slot(method: SegmentMethod) -> None:
    """Refuse a method with no memory read slot: there is nothing to measure."""
    if not method.read_slot or not method.memory_tokens:
        raise HmtbenchError(f"memory attention measures the memory read slot; --method {method.name} has none")


@torch.inference_mode()
def read_attention(method: SegmentMethod, prompts: list[Tensor], answers: list[list[int]]) -> ReadAttention:
    """The read slot's share of attention, per layer, over these (prompt, answer) pairs read as eval-qa reads them
    (teacher-forced, one batch, eager)."""
    require_read_slot(method)
    modules = attention_modules(method.backbone)
    batch = qa_batch(prompts, answers, method.segment_tokens, method.device, method.sensory_tokens)
    shares = _Shares(batch, method.memory_tokens, len(modules))
    handles = [module.register_forward_hook(shares.hook(layer)) for layer, module in enumerate(modules)]
    try:
        with eager_attention(method.backbone):
            answer_pass(method, method, batch, on_segment=shares.open)
    finally:
        for handle in handles:
            handle.remove()
    return shares.result(len(prompts))


__all__ = ["ReadAttention", "attention_modules", "eager_attention", "read_attention", "require_read_slot"]
