"""Plan the benchmark's cases, measure each with a freshly built method, and write one result row per case.

A case is (mode, method, batch size, context length). ``eval``: a batch of random-token documents of
the context length, read with the real ``score_segments`` loop under inference mode; ``train``: one
forward and backward of ``window_loss`` over windows of D segments (memory training: the method's
own parameters train). Rows use the shared schema: protocol ``bench-eval`` / ``bench-train``,
test_length the context length (a training window's D x L positions), tokens_per_s, ms_per_segment,
peak_gpu_mem_mb, and the engine switches under ``config.engine``. A case the backbone cannot run
(``full`` beyond its positions, a method with nothing to train) is a ``skipped`` row saying why; one
that fails (out of memory) a ``failed`` row.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from hmtbench.backbones import Backbone, load_backbone
from hmtbench.benchmark.measure import Timing, eval_workload, time_workload, train_workload
from hmtbench.commands.common import quiet_transformers, run_columns
from hmtbench.config import MemorySettings
from hmtbench.errors import HmtbenchError
from hmtbench.fastpath import EngineOptions, accelerate
from hmtbench.methods import SegmentMethod, build_method, method_class
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import device_name, new_run_id, peak_host_mem_mb, provenance
from hmtbench.training.config import TrainSettings

MODES = ("eval", "train")
DATASET = "random-tokens"  # synthetic token ids: speed and memory do not depend on the text
CONSOLE_ONLY = ("path", "warmup_s", "timed_calls")  # row keys printed, not recorded


@dataclass
class BenchConfig:
    backbone: str = "smollm2-135m"
    methods: list[str] = field(default_factory=lambda: ["plain", "full", "rmt", "hmt"])
    lengths: list[int] = field(default_factory=lambda: [2**k for k in range(11, 17)])  # 2k ... 64k tokens
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    train_batch_sizes: list[int] | None = None  # of the training step (None: batch_sizes)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    memory: MemorySettings = field(default_factory=MemorySettings)
    bptt_depth: int = 6  # D: segments per training window
    engine: EngineOptions = field(default_factory=EngineOptions)
    warmup: int = 1  # untimed calls per case (compilation and graph capture happen here)
    repeat: int = 3  # timed calls per case, at most
    max_seconds: float = 5.0  # stop timing a case once this much is spent (one call at least)
    max_batch_tokens: int | None = None  # leave out evaluation cases whose batch holds more tokens
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 3407
    out: str = "results/bench"


@dataclass(frozen=True)
class Case:
    mode: str  # eval | train
    method: str
    batch_size: int
    length: int  # eval: tokens per document; train: segments per window (D)


def parse_counts(text: str, flag: str) -> list[int]:
    """'2k,4k,64k' -> [2048, 4096, 65536] (k = 1024); every count positive."""
    counts = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        scale = 1024 if part.endswith("k") else 1
        try:
            counts.append(int(part.removesuffix("k")) * scale)
        except ValueError:
            raise HmtbenchError(f"{flag} takes comma-separated counts such as 2k,4k or 1,8; got '{part}'") from None
    if not counts or min(counts) < 1:
        raise HmtbenchError(f"{flag} needs positive counts, got '{text}'")
    return counts


def plan_cases(config: BenchConfig) -> list[Case]:
    """Every case to measure, mode by mode, batch size by batch size, method by method, length by length."""
    cases = []
    for mode in config.modes:
        batches = config.batch_sizes if mode == "eval" else (config.train_batch_sizes or config.batch_sizes)
        for batch in batches:
            for name in config.methods:
                if mode == "train":
                    cases.append(Case(mode, name, batch, config.bptt_depth))
                    continue
                cases += [
                    Case(mode, name, batch, t)
                    for t in config.lengths
                    if config.max_batch_tokens is None or batch * t <= config.max_batch_tokens
                ]
    return cases


def run_bench(
    config: BenchConfig, command_line: list[str] | None = None, on_row: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Measure every planned case on one loaded backbone; write a parquet record per case into ``config.out``."""
    for mode in config.modes:
        if mode not in MODES:
            raise HmtbenchError(f"unknown --mode '{mode}'; use eval, train or eval,train")
    for name in config.methods:
        method_class(name)  # unknown names fail before anything loads
    if config.bptt_depth < 1 or config.warmup < 0 or config.repeat < 1:
        raise HmtbenchError("--bptt-depth and --repeat must be at least 1, --warmup at least 0")
    quiet_transformers()
    backbone = load_backbone(config.backbone, dtype=config.dtype, device=config.device)
    rows = []
    for case in plan_cases(config):
        row = _measure(config, backbone, case, command_line)
        _release(backbone.device)  # the case's method is gone: its graphs and their pools go back now
        row["run_id"] = new_run_id("bench", case.method)
        record = make_record({k: v for k, v in row.items() if k not in CONSOLE_ONLY})
        row["path"] = str(write_record(record, config.out, row["run_id"]))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _measure(config: BenchConfig, backbone: Backbone, case: Case, command_line: list[str] | None) -> dict[str, Any]:
    try:
        model = _build(backbone, case, config)
    except HmtbenchError as err:  # e.g. full context beyond the backbone's positions
        return _bare_row(config, backbone, case, command_line, "skipped", str(err))
    row = _row(config, backbone, case, model, command_line)
    if case.mode == "train" and not any(p.requires_grad for p in model.parameters()):
        return _outcome(row, "skipped", f"{case.method} has no parameters of its own to train (memory training)")
    runner = accelerate(model, config.engine)
    try:
        workload, segments, tokens = _workload(config, backbone, case, model, runner)
        timing = time_workload(workload, backbone.device, config.warmup, config.repeat, config.max_seconds)
    except torch.cuda.OutOfMemoryError:
        return _outcome(row, "failed", f"out of GPU memory at batch {case.batch_size}")
    except Exception as err:  # noqa: BLE001 - one case failing must not lose the others: a failed row says why
        return _outcome(row, "failed", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    finally:
        model.eval()
        failures = getattr(runner, "failures", [])
    if failures:  # a step ran eagerly: the row does not measure the graphs alone
        row["config"] = json.dumps({**json.loads(row["config"]), "cuda_graph_failures": failures}, sort_keys=True)
    return _fill(row, case, timing, segments, tokens)


def _build(backbone: Backbone, case: Case, config: BenchConfig) -> SegmentMethod:
    cls = method_class(case.method)
    length = case.length * config.memory.segment_length if case.mode == "train" else case.length
    torch.manual_seed(config.seed)
    return build_method(case.method, backbone.model, cls.settings_for(dataclasses.asdict(config.memory), length))


def _workload(config: BenchConfig, backbone: Backbone, case: Case, model: SegmentMethod, runner):
    """(workload, segment steps per call, text tokens per call) of one case."""
    generator = torch.Generator().manual_seed(config.seed)
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    batch = case.batch_size
    if case.mode == "eval":
        ids = torch.randint(0, vocab, (batch, case.length), generator=generator).to(backbone.device)
        lengths = torch.full((batch,), case.length, device=backbone.device)
        return eval_workload(runner, ids, lengths), math.ceil(case.length / model.segment_tokens), ids.numel()
    segments = 1 if case.method == "full" else case.length
    window = segments * model.segment_tokens
    ids = torch.randint(0, vocab, (batch, window), generator=generator).to(backbone.device)
    settings = TrainSettings(bptt_depth=segments, batch_size=batch, loss_on="last")
    model.train()
    return train_workload(model, ids, settings), segments, ids.numel()


def _release(device: torch.device) -> None:
    """Give a finished case's memory (its graphs' pools included) back to the device before the next case.

    Called once nothing refers to the case's method any more, so the next case's peak holds only its own memory.
    """
    gc.collect()
    if device.type == "cuda":
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)  # per stream, never freed otherwise
        if clear_workspaces is not None:
            clear_workspaces()
        torch.cuda.empty_cache()


def _config_json(config: BenchConfig, case: Case, summaries: str | None = None) -> str:
    """The settings that make this row comparable (not the lists the invocation swept, not the timing procedure)."""
    bench: dict[str, Any] = {"mode": case.mode}
    if case.mode == "train":
        bench.update(bptt_depth=case.length, loss_on="last", train="memory")
    elif summaries is not None:
        bench["summaries"] = summaries  # what HMT's summary_pass resolved to for this batch size
    values = {
        "backbone": config.backbone,
        "memory": dataclasses.asdict(config.memory),
        "engine": config.engine.as_dict(),
        "bench": bench,
        "dtype": config.dtype,
        "seed": config.seed,
    }
    return json.dumps(values, sort_keys=True)


def _case_columns(config: BenchConfig, case: Case, summaries: str | None = None) -> dict[str, Any]:
    window = case.length * config.memory.segment_length  # a training window's positions, equal for every method
    return {
        "status": "success",
        "dataset": DATASET,
        "protocol": f"bench-{case.mode}",
        "test_length": case.length if case.mode == "eval" else window,
        "batch_size": case.batch_size,
        "train_mode": "memory" if case.mode == "train" else None,
        "config": _config_json(config, case, summaries),
    }


def _row(config: BenchConfig, backbone: Backbone, case: Case, model: SegmentMethod, command_line) -> dict[str, Any]:
    return {
        **run_columns("bench", config.seed, backbone, case.method, model, command_line),
        **_case_columns(config, case, _summaries_used(model, case)),
    }


def _summaries_used(model: SegmentMethod, case: Case) -> str | None:
    """HMT evaluation: whether its summaries run ahead of the segments or inline (``summary_pass`` auto decides)."""
    if case.mode != "eval" or getattr(model, "recall", None) is None:  # no HMT recall (stage 2): no summaries
        return None
    with torch.no_grad():
        return "inline" if model.summarizes_inline(case.batch_size) else "ahead"


def _bare_row(config: BenchConfig, backbone: Backbone, case: Case, command_line, status: str, why: str):
    """A row for a case no method could be built for."""
    row = {
        **provenance(command_line),
        "command": "bench",
        "seed": config.seed,
        "backbone": backbone.resolved.given,
        "backbone_resolved": backbone.resolved.description,
        "method": case.method,
        "device": backbone.device.type,
        "device_name": device_name(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        **_case_columns(config, case),
    }
    return _outcome(row, status, why)


def _outcome(row: dict[str, Any], status: str, why: str) -> dict[str, Any]:
    config = json.loads(row["config"])
    row.update(status=status, config=json.dumps({**config, "reason": why}, sort_keys=True))
    return row


def _fill(row: dict[str, Any], case: Case, timing: Timing, segments: int, tokens: int) -> dict[str, Any]:
    median = timing.median_s
    row.update(
        wall_s=sum(timing.seconds),
        tokens_per_s=tokens / median,
        ms_per_segment=1000 * median / segments,
        peak_gpu_mem_mb=timing.peak_gpu_mb,
        peak_host_mem_mb=peak_host_mem_mb(),
    )
    if case.mode == "eval":
        row.update(docs=case.batch_size, tokens_scored=case.batch_size * (case.length - 1), nll_mean=timing.value)
    else:
        row.update(final_loss=timing.value)
    row["warmup_s"], row["timed_calls"] = timing.warmup_s, len(timing.seconds)  # console only (CONSOLE_ONLY)
    return row


def describe_row(row: dict[str, Any]) -> str:
    """One console line per measured case."""
    mode = row["protocol"].removeprefix("bench-")
    what = f"{row['method']:>5} {mode:<5} T={row['test_length']:>6,} B={row['batch_size']:<4}"
    if row["status"] != "success":
        return f"{what} {row['status']}: {json.loads(row['config']).get('reason', '')}"
    peak = f"{row['peak_gpu_mem_mb']:,.0f} MiB" if row.get("peak_gpu_mem_mb") is not None else "n/a"
    return (
        f"{what} {row['tokens_per_s']:>12,.0f} tok/s {row['ms_per_segment']:>9.2f} ms/segment  peak {peak}"
        f"  (warm-up {row['warmup_s']:.1f} s, {row['timed_calls']} timed)"
    )
