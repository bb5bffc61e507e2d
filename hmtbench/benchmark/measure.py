"""Timing one workload on the device: warm-up calls, then synchronised wall-clock iterations and the peak memory.

Device work is asynchronous, so the device is synchronised before and after every timed
iteration and the host clock measures the work itself; the peak memory is reset after the
warm-up, so compilation and graph capture transients stay out of it. Graphs kept for replay are
memory the method holds: a replay allocates nothing (the peak of allocated tensors misses its
workspace), so the free part of the graphs' private pools is added to that peak.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from hmtbench.engine import score_segments, segment_batch
from hmtbench.training.config import TrainSettings
from hmtbench.training.graphed import GraphedSteps, micro_step, training_autocast
from hmtbench.training.objectives import StepLoss, window_loss

Workload = Callable[[], Tensor]  # one iteration; returns a 0-d tensor (mean NLL or loss), read after timing


@dataclass
class Timing:
    seconds: list[float]  # each timed iteration
    warmup_s: float  # all warm-up calls (compilation and graph capture included)
    peak_gpu_mb: float | None  # max_memory_allocated over the timed iterations
    value: float  # the last iteration's mean NLL (evaluation) or loss (training)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_workload(run: Workload, device: torch.device, warmup: int, repeat: int, max_seconds: float) -> Timing:
    """``warmup`` calls, then one to ``repeat`` timed calls, stopping once ``max_seconds`` are spent."""
    start = time.perf_counter()
    for _ in range(warmup):
        run()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds: list[float] = []
    while not seconds or (len(seconds) < repeat and sum(seconds) < max_seconds):
        _sync(device)
        began = time.perf_counter()
        value = run()
        _sync(device)
        seconds.append(time.perf_counter() - began)
    peak = None
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) + graph_workspace_bytes(device)) / 2**20
    return Timing(seconds, warmup_s, peak, float(value))


def graph_workspace_bytes(device: torch.device) -> int:
    """Bytes the CUDA graphs' private memory pools hold beyond live tensors: what replays use as workspace."""
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    return sum(
        segment["total_size"] - segment["allocated_size"]
        for segment in torch.cuda.memory_snapshot()
        if segment["device"] == index and tuple(segment.get("segment_pool_id", (0, 0))) != (0, 0)
    )


def eval_workload(runner, ids: Tensor, lengths: Tensor) -> Workload:
    """The evaluation loop over one batch of documents (B, T): ``segment_batch`` + ``score_segments``."""

    def run() -> Tensor:
        with torch.inference_mode():
            batch = segment_batch(ids, lengths, runner.segment_tokens)
            nll, tokens = score_segments(runner, batch)
            return nll.sum() / tokens.sum()

    return run


def train_workload(model, ids: Tensor, settings: TrainSettings) -> tuple[Workload, GraphedSteps | None]:
    """One training step's forward and backward of ``window_loss`` (no optimizer step), as ``train`` runs it;
    with ``settings.cuda_graphs`` replayed from a CUDA graph (returned too: it lists failed captures)."""
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = training_autocast(ids.device, settings.cuda_graphs)
    step = micro_step(lambda window: StepLoss(*window_loss(model, window, settings)), autocast, 1)
    if settings.cuda_graphs:
        graphed = GraphedSteps(step, params)

        def replay() -> Tensor:
            loss = graphed(ids).loss
            graphed.zero_grad()
            return loss

        return replay, graphed

    def run() -> Tensor:
        loss = step(ids).loss
        for param in params:
            param.grad = None
        return loss

    return run, None
