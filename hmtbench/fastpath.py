"""The engine's opt-in fast path: compiled backbone blocks and loss, and segment steps replayed from CUDA graphs.

Two switches (``EngineOptions``), recorded in every result row:

* ``compile``: each repeated block of the backbone (its decoder layers) goes through
  ``torch.compile``; the blocks share one compilation, so compile time does not grow with depth
  (regional compilation). Calls with a KV cache (decoding) stay eager: the cache is per block. What
  is compiled is each block's ``forward``, not its ``__call__``: module hooks (a per-layer method's,
  ``hmtbench.methods.hooks``) run eagerly around it, so they never enter a compiled region, and a
  hook that reads its layer's own tensors adds no recompilation. The loss
  (output head + fp32 cross-entropy) is compiled too, which fuses the upcast into the reduction.
  Fused kernels round differently: numbers agree with the eager engine to rounding, not bit for bit.
* ``cuda_graphs`` (evaluation): each segment step and each batched summary pass is captured once
  per input signature (shapes, dtypes, which state tensors exist) and replayed: one launch per
  segment instead of one per operation, which is what a small backbone is bound by. Between
  segments the memory state stays in the graph's own buffers. Same kernels as eager, same numbers.

A segment step reads nothing back to the host (``hmtbench.methods.hf_calls``), which is what
makes it capturable; the two switches combine (the captured step runs the compiled blocks).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from hmtbench.config import EngineOptions
from hmtbench.methods.base import MemoryState, SegmentMethod
from hmtbench.methods.hooks import repeated_blocks
from hmtbench.methods.loss import chunk_nll
from hmtbench.methods.state import Layout, flatten, unflatten

WARMUP_CALLS = 2  # eager calls on a side stream before a capture (compilation, autotuning, cuBLAS handles)

_compiled_blocks: weakref.WeakSet[nn.Module] = weakref.WeakSet()
_compiled_nll: list[Callable[..., Tensor]] = []
_compiled_parts: dict[Callable[..., Any], Callable[..., Any]] = {}


def accelerate(method: SegmentMethod, options: EngineOptions) -> SegmentMethod | GraphedMethod:
    """The method as ``options`` run it: what ``score_segments`` and ``evaluate`` take in its place."""
    if options.compile:
        compile_blocks(method.backbone)
        method.chunk_nll = compiled_chunk_nll()
        for part in method.compiled_parts:
            setattr(method, part, compiled_part(getattr(type(method), part)))
    return GraphedMethod(method) if options.cuda_graphs else method


def capture_failures(runner: Any) -> list[str]:
    """Why steps of ``runner`` (a ``GraphedMethod``, a training step's ``GraphedSteps``) ran eagerly although CUDA
    graphs were asked for (empty: none did, or no graphs)."""
    return list(getattr(runner, "failures", []))


def compile_blocks(backbone: nn.Module) -> int:
    """torch.compile each repeated block's ``forward`` in place (once); returns how many blocks there are.

    The blocks' forwards share one compiled frame (the same code, guarded on shapes, not on which block). The
    block's module hooks stay outside it, which ``nn.Module.compile`` (compiling ``__call__``) would trace.
    """
    blocks = repeated_blocks(backbone)
    if blocks is None:
        return 0
    _allow_recompiles()
    for block in blocks:
        if block not in _compiled_blocks:
            block.forward = _compiled_without_cache(block.forward)
            _compiled_blocks.add(block)
    return len(blocks)


# The keyword a decoder block takes its KV cache by: transformers 5.x, 4.x (plural and singular), GPT-NeoX.
CACHE_KEYWORDS = ("cache", "past_key_values", "past_key_value", "layer_past")


def _compiled_without_cache(forward: Callable[..., Any]) -> Callable[..., Any]:
    """``forward`` compiled for calls without a KV cache (every segment read and training step); a call with one
    (decoding) runs eagerly.

    A cache's update indexes its per-layer list by the block's ``layer_idx``, which dynamo guards on: compiled,
    each block would compile apart, three graphs a block (prefill, first step, later steps), past the recompile
    limit at 30 blocks and minutes of compilation on a GPU. A decoding step is a token a row, bound by launches,
    not by the kernels compilation fuses.
    """
    compiled = torch.compile(forward)

    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        cached = any(kwargs.get(name) is not None for name in CACHE_KEYWORDS)
        return (forward if cached else compiled)(*args, **kwargs)

    return run


def compiled_chunk_nll() -> Callable[..., Tensor]:
    """``chunk_nll`` through torch.compile (the fp32 upcast fused into the reduction), shared by every method.

    Only a chunk is compiled, not the loop over chunks: one compilation per chunk shape, however long the input.
    """
    if not _compiled_nll:
        _allow_recompiles()
        _compiled_nll.append(torch.compile(chunk_nll))
    return _compiled_nll[0]


def compiled_part(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a method's ``compiled_parts`` function) through torch.compile, once per function: every layer and
    every instance share its compilation, guarded on shapes only."""
    if fn not in _compiled_parts:
        _allow_recompiles()
        _compiled_parts[fn] = torch.compile(fn)
    return _compiled_parts[fn]


def _allow_recompiles(limit: int = 64) -> None:
    """Several shapes (batch sizes, summary passes, segment 0) each compile once; the default limit is 8."""
    import torch._dynamo.config as dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), limit))


@dataclass
class _Captured:
    inputs: list[Tensor | None]  # static buffers the call's arguments are copied into
    run: Callable[[], Any]  # replay (or, with nothing captured, fn on the buffers)


class CapturedCalls:
    """``fn(static, *tensors)``, replayed from one CUDA graph per input signature.

    ``static`` is a hashable value the call depends on (such as a state's layout); it is part of the
    signature with the tensors' shapes, dtypes and devices (or None). A call copies its tensor
    arguments into the signature's static buffers (skipping any argument that is already that
    buffer) and replays; it returns the graph's static outputs, which the next replay of that
    signature overwrites. Off CUDA nothing is captured: the same buffers, ``fn`` run eagerly
    (how the tests exercise this plumbing). A capture that fails falls back to eager, with a warning
    and an entry in ``failures``.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.captured: dict[tuple, _Captured] = {}
        self.failures: list[str] = []

    def __call__(self, static: Any, *args: Tensor | None) -> Any:
        key = (static, *(None if a is None else (tuple(a.shape), a.dtype, a.device) for a in args))
        entry = self.captured.get(key)
        if entry is None:
            entry = self.captured[key] = self._capture(functools.partial(self.fn, static), args)
        for buffer, value in zip(entry.inputs, args, strict=True):
            if value is not None and value is not buffer:
                buffer.copy_(value)
        return entry.run()

    def _capture(self, fn: Callable[..., Any], args: tuple[Tensor | None, ...]) -> _Captured:
        # closures hold fn, never self: no reference cycle, so dropping a method frees its graphs
        inputs = [None if a is None else a.clone(memory_format=torch.contiguous_format) for a in args]
        eager = _Captured(inputs, lambda: fn(*inputs))
        if not any(a is not None and a.is_cuda for a in args):
            return eager
        try:
            if warm_up(fn, inputs) is None:  # nothing computed (a method without summaries): nothing to replay
                return _Captured(inputs, lambda: None)
            graph, outputs = capture_graph(fn, inputs)
        except Exception as err:  # noqa: BLE001 - any capture failure: run eagerly, and say so
            self.failures.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
            warnings.warn(f"CUDA graph capture failed, running eagerly: {self.failures[-1]}", stacklevel=3)
            return eager
        return _Captured(inputs, lambda: (graph.replay(), outputs)[1])


@functools.cache
def _warm_up_stream(device: int) -> torch.cuda.Stream:
    """One side stream per device for every warm-up: cuBLAS keeps a workspace (tens of MiB) per stream it meets."""
    return torch.cuda.Stream(device)


def warm_up(fn: Callable[..., Any], inputs: list[Tensor | None]) -> Any:
    """Call ``fn`` on a side stream (on copies: it may update its inputs in place); return the last result."""
    stream = _warm_up_stream(torch.cuda.current_device())
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(WARMUP_CALLS):
            result = fn(*[None if b is None else b.clone() for b in inputs])
    torch.cuda.current_stream().wait_stream(stream)
    return result


def capture_graph(fn: Callable[..., Any], inputs: list[Tensor | None]) -> tuple[torch.cuda.CUDAGraph, Any]:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn(*inputs)
    return graph, outputs


class GraphedMethod:
    """A method whose summary passes and segment steps (evaluation) replay from CUDA graphs.

    ``summarize`` and ``score`` replay; every other attribute is the method's own (``__getattr__``), so the
    loops that take a method take this in its place. With gradients enabled it simply calls the method: a
    training step is captured whole, forward and backward, by ``hmtbench.training.graphed``.
    """

    def __init__(self, method: SegmentMethod) -> None:
        self.method = method
        self._summaries = CapturedCalls(functools.partial(_summarize, method))
        self._steps = CapturedCalls(functools.partial(_step, method))

    def __getattr__(self, name: str) -> Any:
        if name == "method":  # not set yet: no method to ask
            raise AttributeError(name)
        return getattr(self.method, name)

    @property
    def failures(self) -> list[str]:
        return self._summaries.failures + self._steps.failures

    def summarize(self, segment_ids: Tensor, lengths: Tensor, checkpointed: int = 0) -> Tensor | None:
        if torch.is_grad_enabled():
            return self.method.summarize(segment_ids, lengths, checkpointed)
        return self._summaries(None, segment_ids, lengths)

    def score(
        self,
        state: MemoryState,
        segment_ids: Tensor,
        lengths: Tensor,
        targets: Tensor | None,
        summary: Tensor | None = None,
        upcoming: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor | None, MemoryState]:
        """``SegmentMethod.score``, replayed. The state returned lives in the graph's buffers until the next step.
        A method whose steps read back to the host (``host_steps``) runs them eagerly: no graph can hold them."""
        if torch.is_grad_enabled() or self.method.host_steps:
            return self.method.score(state, segment_ids, lengths, targets, summary, upcoming)
        layout, carry = flatten(state)
        upcoming = upcoming or (None, None)
        nll, after_layout, after = self._steps(layout, *carry, segment_ids, lengths, targets, summary, *upcoming)
        return (None if nll is None else nll.clone()), unflatten(after_layout, list(after))


def _summarize(method: SegmentMethod, static: None, segment_ids: Tensor, lengths: Tensor) -> Tensor | None:
    return method.summarize(segment_ids, lengths)


def _step(method: SegmentMethod, layout: Layout, *args: Tensor | None) -> tuple[Tensor | None, Layout, tuple]:
    """One segment as a function of tensors: (state tensors..., ids, lengths, targets, summary, next ids, next lengths)
    -> (nll, the next state's layout, its tensors). ``layout`` says how the state tensors fit together."""
    carry, (segment_ids, lengths, targets, summary, next_ids, next_lengths) = args[:-6], args[-6:]
    upcoming = None if next_ids is None else (next_ids, next_lengths)
    nll, after = method.score(unflatten(layout, list(carry)), segment_ids, lengths, targets, summary, upcoming)
    after_layout, new = flatten(after)
    if after_layout == layout:  # same layout: the state stays in these buffers
        for buffer, value in zip(carry, new, strict=True):
            buffer.copy_(value)
        new = list(carry)
    return nll, after_layout, tuple(new)
