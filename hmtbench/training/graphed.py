"""A training micro-batch's forward and backward, replayed from one CUDA graph per batch shape (``--cuda-graphs``).

A training step of a small backbone, or of LoRA on a large one, is bound by the host issuing kernels: a
7B-shape LoRA step launches ~32k of them, and the GPU sat idle for 55% (B 4) to 87% (B 1) of it
(``results/h200-paper-scale``). Captured, a micro-batch's forward and backward pass is one launch.

The gradients accumulate into ``.grad`` tensors that exist before the capture and stay in place (zeroed
between optimizer steps, never set to None): a replay adds to them as an eager backward does, micro-batch
after micro-batch, and clipping and the optimizer step run eagerly on them. A capture needs what evaluation's
graphs need (static shapes, nothing read back to the host inside the step) plus autocast without its weight
cache. Off CUDA, or where a capture fails (a warning, and an entry in ``failures``), the same calls run
eagerly on the same persistent gradients: the CPU tests run this plumbing.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hmtbench.fastpath import capture_graph, warm_up
from hmtbench.training.objectives import StepLoss

MicroStep = Callable[..., StepLoss]  # forward and backward of one micro-batch; returns its loss, detached


@dataclass
class _Entry:
    inputs: list[Tensor]  # static buffers the micro-batch is copied into
    run: Callable[[], StepLoss]


class GraphedSteps:
    """``step(*batch)`` replayed from a CUDA graph captured once per batch signature (shapes, dtypes, device).

    ``params``: the tensors that train; each gets a zeroed ``.grad`` now, which the graphs write into, so the
    optimizer must zero gradients in place (``zero_grad(set_to_none=False)``), not drop them. The StepLoss a
    call returns lives in the graph's buffers until the next replay of that signature.
    """

    def __init__(self, step: MicroStep, params: list[torch.nn.Parameter]) -> None:
        self.step = step
        self.grads = []  # held here too: a graph writes to these addresses whatever else lets go of them
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            self.grads.append(param.grad)
        self.captured: dict[tuple, _Entry] = {}
        self.failures: list[str] = []

    def __call__(self, *batch: Tensor) -> StepLoss:
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in batch)
        entry = self.captured.get(key)
        if entry is None:
            entry = self.captured[key] = self._capture(batch)
        for buffer, value in zip(entry.inputs, batch, strict=True):
            buffer.copy_(value)
        return entry.run()

    def zero_grad(self) -> None:
        torch._foreach_zero_(self.grads)

    def _capture(self, batch: tuple[Tensor, ...]) -> _Entry:
        inputs = [t.clone(memory_format=torch.contiguous_format) for t in batch]
        step = self.step
        eager = _Entry(inputs, lambda: step(*inputs))
        if not any(t.is_cuda for t in batch):
            return eager
        before = [grad.clone() for grad in self.grads]  # this optimizer step's earlier micro-batches
        try:
            warm_up(step, inputs)  # eager calls on a side stream: compilation, autotuning, cuBLAS handles
            torch.cuda.empty_cache()  # the warm-up's cached activations: the graph's pool needs as much again
            graph, outputs = capture_graph(step, inputs)
        except Exception as err:  # noqa: BLE001 - any capture failure: train eagerly, and say so
            self.failures.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            warnings.warn(f"CUDA graph capture of the training step failed, training eagerly: {self.failures[-1]}",
                          stacklevel=3)
            return eager
        finally:
            torch._foreach_copy_(self.grads, before)  # the warm-up calls' gradients are not the step's
        return _Entry(inputs, lambda: (graph.replay(), outputs)[1])


def training_autocast(device: torch.device, cuda_graphs: bool):
    """bf16 autocast on a GPU (none elsewhere), without its cache of cast weights when the step is captured: a
    replay cannot keep that cache from one replay to the next."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not cuda_graphs)


def micro_step(forward: Callable[..., StepLoss], autocast, accumulation: int) -> MicroStep:
    """Forward under ``autocast``, then backward of the loss over ``accumulation`` (micro-batches per step)."""

    def run(*batch: Tensor) -> StepLoss:
        with autocast:
            out = forward(*batch)
        (out.loss / accumulation).backward()
        exact = None if out.exact is None else out.exact.detach()
        return StepLoss(out.loss.detach(), out.tokens, exact)

    return run
