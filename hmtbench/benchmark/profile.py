"""Where the time of a segmented evaluation goes, per method: the summary pass, the segment steps, their kernels.

One document of random tokens, read by the real ``score_segments`` loop (as ``hmtbench bench`` reads
it), with device-side timers around the summary pass and around each segment step; then one step and
one summary pass under ``torch.profiler``, eagerly, for the kernels they launch and their busy time.
On a launch-bound GPU a step costs about its kernel count times the per-kernel latency, whatever its
arithmetic: the numbers that say why a method is slower than plain at batch 1.

    python -m hmtbench.benchmark.profile --backbone smollm2-135m --length 64k --compile --cuda-graphs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from hmtbench.backbones import load_backbone
from hmtbench.build import build_method
from hmtbench.config import SEED, EngineOptions, method_config, parse_counts
from hmtbench.engine import score_segments, segment_batch
from hmtbench.fastpath import accelerate
from hmtbench.methods import BASELINE, config_class
from hmtbench.progress import quiet_transformers

VARIANTS = {  # name: method settings beyond the defaults
    "plain": {"name": "plain"},
    "rmt": {"name": "rmt"},
    "hmt-ahead": {"name": "hmt", "summary_pass": "ahead"},
    "hmt-inline": {"name": "hmt", "summary_pass": "inline"},
}


@dataclass
class Profile:
    variant: str
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


def _kernels(device: torch.device, call: Callable[[], Any]) -> tuple[int, float]:
    """(kernels launched, their summed device ms) by ``call``; on a CPU, (aten operators, their CPU ms)."""
    activity = torch.profiler.ProfilerActivity
    activities = [activity.CUDA if device.type == "cuda" else activity.CPU]
    with torch.profiler.profile(activities=activities) as prof:
        call()
        if device.type == "cuda":
            torch.cuda.synchronize()
    if device.type == "cuda":
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(getattr(e, "device_time", 0.0) or getattr(e, "cuda_time", 0.0) for e in events)
    else:
        events = [e for e in prof.events() if e.name.startswith("aten::") and e.cpu_parent is None]
        busy = sum(e.cpu_time_total for e in events)
    return len(events), busy / 1000


def profile_variant(backbone: Any, variant: str, length: int, batch_size: int, segment_length: int,
                    settings: dict[str, Any], engine: EngineOptions, seed: int = SEED, repeat: int = 5) -> Profile:
    """Time one document batch of ``length`` random tokens through ``variant`` (see ``VARIANTS``).

    ``settings``: method settings (sensory_tokens, recall_hidden_dim, ...) for the variants that have them.
    """
    values = dict(VARIANTS[variant])
    name = values.pop("name")
    own = {key: value for key, value in settings.items() if key in _fields(name)}
    config = method_config(name, {**own, **values})
    method = build_method(backbone, config, segment_length, seed=seed).eval()
    device = backbone.device
    generator = torch.Generator().manual_seed(seed)
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch_size, length), generator=generator).to(device)
    batch = segment_batch(ids, torch.full((batch_size,), length, device=device), method.segment_tokens)
    n = batch.segments.shape[1]
    with torch.inference_mode():
        timed = _Timed(accelerate(method, engine), _Clock(device))
        score_segments(timed, batch)  # warm-up: compilation and graph capture
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
    return Profile(variant, n, total_ms, summary_ms, step_ms, kernels, busy, summary_kernels)


def _fields(name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class(name))}


def describe(profiles: list[Profile]) -> str:
    """A table, with each variant's time per token relative to plain's (same document, same tokens)."""
    plain = next((p for p in profiles if p.variant == BASELINE), None)
    lines = [f"{'variant':<11} {'segments':>8} {'ms/doc':>9} {'x plain':>8} {'summary ms':>10} {'step ms':>8} "
             f"{'kernels/step':>12} {'busy ms/step':>12} {'summary kernels':>15}"]
    for p in profiles:
        ratio = f"{p.ms_per_document / plain.ms_per_document:.3f}" if plain else "-"
        lines.append(f"{p.variant:<11} {p.segments:>8} {p.ms_per_document:>9.2f} {ratio:>8} {p.summary_ms:>10.2f} "
                     f"{p.step_ms:>8.3f} {p.kernels_per_step:>12} {p.step_busy_ms:>12.3f} {p.summary_kernels:>15}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--length", default="64k", help="tokens per document, comma-separated (k = 1024)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--sensory-tokens", type=int, default=0)
    parser.add_argument("--recall-hidden-dim", type=int, default=None, help="default: the backbone's width")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cuda-graphs", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the profiles here")
    args = parser.parse_args(argv)
    quiet_transformers()
    backbone = load_backbone(args.backbone, dtype="auto", device=args.device)
    settings = {"sensory_tokens": args.sensory_tokens, "recall_hidden_dim": args.recall_hidden_dim}
    engine = EngineOptions(compile=args.compile, cuda_graphs=args.cuda_graphs)
    profiles = []
    for length in parse_counts(args.length, "--length"):
        runs = [profile_variant(backbone, v, length, args.batch_size, args.segment_length, settings, engine)
                for v in args.variants.split(",")]
        print(f"== {length:,} tokens, batch {args.batch_size}, {backbone.device.type}, engine {vars(engine)}")
        print(describe(runs), flush=True)
        profiles += [{"length": length, "batch_size": args.batch_size, **asdict(p)} for p in runs]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"engine": vars(engine), "backbone": args.backbone, "profiles": profiles}, f, indent=1)


if __name__ == "__main__":
    main()
