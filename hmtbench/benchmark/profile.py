"""Where the time of a segmented evaluation goes, per method: the summary pass, the segment steps, their kernels.

One batch of documents of random tokens (a ``hmtbench bench`` evaluation case), read by the real
``score_segments`` loop, with device-side timers around the summary pass and around each segment step; then one
step and one summary pass under ``torch.profiler``, eagerly, for the kernels they launch and their busy time. On a
launch-bound GPU a step costs about its kernel count times the per-kernel latency, whatever its arithmetic: the
numbers that say why a method is slower than plain at batch 1. ``hmtbench profile`` runs it on bench's cases.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hmtbench.benchmark.cases import Case
from hmtbench.engine import score_segments, segment_batch
from hmtbench.fastpath import accelerate
from hmtbench.methods import BASELINE


@dataclass
class Profile:
    method: str  # the method's name, or the run's --name
    length: int  # tokens per document
    batch_size: int
    segments: int
    ms_per_document: float  # the whole loop, device-synchronised (median of the timed calls)
    summary_ms: float  # the batched summary pass(es) before the recurrence (0 when there are none)
    step_ms: float  # median segment step after the first
    kernels_per_step: int  # device kernels (on a CPU: operators) one eager segment step launches
    step_busy_ms: float  # their summed device time
    summary_kernels: int  # of one eager summary pass over the document (0 when none)


class _Clock:
    """Elapsed time between marks, on the device's own clock where there is one."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def ms(self, start: Any, end: Any) -> float:
        if not self.cuda:
            return 1000 * (end - start)
        torch.cuda.synchronize()
        return start.elapsed_time(end)


class _Timed:
    """The runner ``score_segments`` drives, with marks around its summary pass and each segment step."""

    def __init__(self, runner: Any, clock: _Clock) -> None:
        self.runner, self.clock = runner, clock
        self.summary: list[tuple[Any, Any]] = []
        self.steps: list[tuple[Any, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def summarize(self, *args: Tensor) -> Tensor | None:
        return self._timed(self.summary, self.runner.summarize, *args)

    def score(self, *args: Any) -> Any:
        return self._timed(self.steps, self.runner.score, *args)

    def _timed(self, marks: list, call: Callable[..., Any], *args: Any) -> Any:
        start = self.clock.mark()
        result = call(*args)
        marks.append((start, self.clock.mark()))
        return result


def device_kernels(device: torch.device, call: Callable[[], Any]) -> tuple[dict[str, list[float]], float]:
    """(``{kernel: [summed device seconds, launches]}`` of what ``call`` runs, the call's wall seconds, synchronised);
    on a CPU, the outermost aten operators and their CPU time instead of kernels."""
    activity = torch.profiler.ProfilerActivity
    activities = [activity.CUDA if device.type == "cuda" else activity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        began = time.perf_counter()
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - began
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if device.type == "cuda":
            if event.device_type != torch.autograd.DeviceType.CUDA:
                continue
            micros = getattr(event, "device_time", 0.0) or getattr(event, "cuda_time", 0.0)
        elif event.name.startswith("aten::") and event.cpu_parent is None:
            micros = event.cpu_time_total
        else:
            continue
        entry = kernels.setdefault(event.name, [0.0, 0])
        entry[0] += micros / 1e6
        entry[1] += 1
    return kernels, wall


def _kernels(device: torch.device, call: Callable[[], Any]) -> tuple[int, float]:
    """(kernels launched, their summed device ms) by ``call``; on a CPU, (aten operators, their CPU ms)."""
    kernels, _ = device_kernels(device, call)
    return int(sum(n for _, n in kernels.values())), 1000 * sum(seconds for seconds, _ in kernels.values())


def profile_eval(backbone: Any, method: Any, case: Case, label: str, warmup: int = 1, repeat: int = 5,
                 seed: int = 0, engine: Any = None) -> Profile:
    """Time ``case`` (an evaluation case: a batch of ``case.length`` random tokens per document) through ``method``
    (built for it), ``warmup`` untimed calls first, then ``repeat`` timed ones (their median)."""
    method = method.eval()
    batch_size, length = case.batch_size, case.length
    device = backbone.device
    generator = torch.Generator().manual_seed(seed)
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch_size, length), generator=generator).to(device)
    batch = segment_batch(ids, torch.full((batch_size,), length, device=device), method.segment_tokens)
    n = batch.segments.shape[1]
    with torch.inference_mode():
        timed = _Timed(accelerate(method, engine), _Clock(device))
        for _ in range(warmup):  # compilation and graph capture
            score_segments(timed, batch)
        totals = []
        for _ in range(repeat):  # the last call's marks are kept
            timed.summary.clear(), timed.steps.clear()
            began = time.perf_counter()
            score_segments(timed, batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            totals.append(1000 * (time.perf_counter() - began))
        total_ms, clock = statistics.median(totals), timed.clock
        summary_ms = sum(clock.ms(a, b) for a, b in timed.summary)
        step_ms = statistics.median(clock.ms(a, b) for a, b in timed.steps[1:] or timed.steps)
        # one eager middle step (state after segment 0), and one eager summary pass over the document
        state = method.initial_state(batch_size)
        inline = method.summarizes_inline(batch_size)
        upcoming = (batch.segments[:, 1], batch.lengths[:, 1]) if inline and n > 1 else None
        _, state = method.score(state, batch.segments[:, 0], batch.lengths[:, 0], batch.targets[:, 0], None, upcoming)
        summaries = None if inline else method.summarize(batch.segments, batch.lengths)
        i = min(1, n - 1)
        summary = None if summaries is None else summaries[:, i]
        upcoming = (batch.segments[:, i + 1], batch.lengths[:, i + 1]) if inline and i + 1 < n else None
        step = (state, batch.segments[:, i], batch.lengths[:, i], batch.targets[:, i], summary, upcoming)
        kernels, busy = _kernels(device, lambda: method.score(*step))
        summary_kernels = 0 if inline or summaries is None else _kernels(
            device, lambda: method.summarize(batch.segments, batch.lengths))[0]
    return Profile(label, length, batch_size, n, total_ms, summary_ms, step_ms, kernels, busy, summary_kernels)


def describe(profiles: list[Profile]) -> str:
    """A table per (length, batch size), with each method's time per token relative to plain's (same documents)."""
    tables = []
    for length, batch_size in dict.fromkeys((p.length, p.batch_size) for p in profiles):
        group = [p for p in profiles if (p.length, p.batch_size) == (length, batch_size)]
        plain = next((p for p in group if p.method == BASELINE), None)
        lines = [f"== {length:,} tokens, batch {batch_size}",
                 f"{'method':<11} {'segments':>8} {'ms/doc':>9} {'x plain':>8} {'summary ms':>10} {'step ms':>8} "
                 f"{'kernels/step':>12} {'busy ms/step':>12} {'summary kernels':>15}"]
        for p in group:
            ratio = f"{p.ms_per_document / plain.ms_per_document:.3f}" if plain else "-"
            lines.append(f"{p.method:<11} {p.segments:>8} {p.ms_per_document:>9.2f} {ratio:>8} {p.summary_ms:>10.2f} "
                         f"{p.step_ms:>8.3f} {p.kernels_per_step:>12} {p.step_busy_ms:>12.3f} "
                         f"{p.summary_kernels:>15}")
        tables.append("\n".join(lines))
    return "\n".join(tables)
