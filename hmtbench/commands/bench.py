"""Plan the benchmark's cases, measure each with a freshly built method, and write one result row per case.

A case is (mode, method, batch size, context length). ``eval``: a batch of random-token documents of
the context length, read with the real ``score_segments`` loop under inference mode; ``train``: one
forward and backward of ``window_loss`` over windows of D segments (memory training: the method's
own parameters train). Rows use the shared schema: protocol ``bench-eval`` / ``bench-train``,
test_length the context length (a training window's D x L positions), tokens_per_s, ms_per_segment,
peak_gpu_mem_mb, and the engine switches under ``config.engine``. A case the backbone cannot run
(``full`` beyond its positions, a method with nothing to train) is a ``skipped`` row saying why; one
that runs out of memory is measured again at half the batch (``batch_size`` as run, ``oom_retries``), and
one that fails even so, or otherwise, a ``failed`` row.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import torch

from hmtbench.backbones import Backbone, load_backbone
from hmtbench.benchmark.cases import Case, build_case, case_workload, plan_cases
from hmtbench.benchmark.config import MODES, BenchConfig
from hmtbench.benchmark.measure import Timing, time_workload
from hmtbench.benchmark.roofline import roofline_columns
from hmtbench.config import to_dict
from hmtbench.errors import HmtbenchError
from hmtbench.fastpath import accelerate, capture_failures
from hmtbench.methods.base import SegmentMethod
from hmtbench.oom import HalvingBatches, OutOfMemoryAtOne
from hmtbench.progress import quiet_transformers
from hmtbench.resolve import names_per_method
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import new_run_id, peak_host_mem_mb, run_start
from hmtbench.results.record_columns import backbone_columns, run_columns
from hmtbench.training.config import check_recompute_share, recomputed_forwards
from hmtbench.training.layer_recompute import checkpoint_blocks

DATASET = "random-tokens"  # synthetic token ids: speed and memory do not depend on the text
CONSOLE_ONLY = ("path",)  # row keys printed, not recorded


def run_bench(
    config: BenchConfig, command_line: list[str] | None = None, on_row: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Measure every planned case on one loaded backbone; write a parquet record per case into ``config.out``."""
    for mode in config.mode:
        if mode not in MODES:
            raise HmtbenchError(f"unknown --mode '{mode}'; use eval, train or eval,train")
    if config.bptt_depth < 1 or config.warmup < 0 or config.repeat < 1:
        raise HmtbenchError("--bptt-depth and --repeat must be at least 1, --warmup at least 0")
    check_recompute_share(config.recompute_share)  # else every training case would fail on its own
    quiet_transformers()
    backbone = load_backbone(config.backbone, dtype=config.dtype, device=config.device)
    rows = []
    for case in plan_cases(config):
        started = run_start()
        row = _measure(config, backbone, case, command_line, started)
        _release(backbone.device)  # the case's method is gone: its graphs and their pools go back now
        row["run_id"] = new_run_id("bench", case.method.name, started)
        record = make_record({k: v for k, v in row.items() if k not in CONSOLE_ONLY})
        row["path"] = str(write_record(record, config.out, row["run_id"]))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def _measure(config: BenchConfig, backbone: Backbone, case: Case, command_line: list[str] | None,
             started: datetime) -> dict[str, Any]:
    """The case's row; out of memory, the case is measured again at half the batch (the row says which)."""
    halving = HalvingBatches(case.batch_size)
    try:
        row = halving.retry(lambda size: _measure_at(config, backbone, dataclasses.replace(case, batch_size=size),
                                                     command_line, started))
    except OutOfMemoryAtOne:
        one = dataclasses.replace(case, batch_size=1)
        row = _bare_row(config, backbone, one, command_line, started, "failed",
                        f"out of GPU memory down to batch 1 (from {case.batch_size})")
    row["oom_retries"] = halving.retries
    return row


def _measure_at(config: BenchConfig, backbone: Backbone, case: Case, command_line: list[str] | None,
                started: datetime) -> dict[str, Any]:
    """The case's row at ``case.batch_size``; out of memory propagates (``_measure`` halves the batch)."""
    try:
        model = build_case(backbone, case, config)
    except HmtbenchError as err:  # e.g. full context beyond the backbone's positions
        return _bare_row(config, backbone, case, command_line, started, "skipped", str(err))
    row = _row(config, backbone, case, model, command_line, started)
    if case.mode == "train" and not any(p.requires_grad for p in model.parameters()):
        return _outcome(row, "skipped", f"{case.method.name} has no parameters of its own to train (memory training)")
    runner = accelerate(model, config.engine)
    if case.mode == "train" and config.layer_checkpoint:  # around the compiled blocks, as train wraps them
        checkpoint_blocks(backbone.model)
    replayer = runner  # what replays the case's graphs (a training step's own, once built): its failed captures
    try:
        workload, segments, tokens, graphed = case_workload(config, backbone, case, model, runner)
        replayer = runner if graphed is None else graphed
        timing = time_workload(workload, backbone.device, config.warmup, config.repeat, config.max_seconds)
    except torch.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - one case failing must not lose the others: a failed row says why
        return _outcome(row, "failed", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}")
    finally:
        model.eval()
        failures = capture_failures(replayer)
    if failures:  # a step ran eagerly: the row does not measure the graphs alone
        row["config"] = json.dumps({**json.loads(row["config"]), "cuda_graph_failures": failures}, sort_keys=True)
    _fill(row, case, timing, segments, tokens)
    positions = model.positions_per_segment(case.batch_size, training=case.mode == "train")
    recompute = recomputed_forwards(config.grad_checkpoint, config.recompute_share, config.layer_checkpoint)
    row.update(roofline_columns(backbone.model, row.get("device_name"), case.mode, config.train, recompute,
                                row["tokens_per_s"], case.batch_size, model.segment_tokens, positions))
    return row


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


def _config_json(config: BenchConfig, case: Case, method: Any, summaries: str | None = None) -> str:
    """The settings that make this row comparable (not the lists the invocation swept, not the timing procedure)."""
    bench: dict[str, Any] = {"mode": case.mode}
    if case.mode == "train":
        bench.update(bptt_depth=case.length, loss_on="last", train=config.train)
        if config.grad_checkpoint:
            bench["grad_checkpoint"] = True
            if config.recompute_share < 1:
                bench["recompute_share"] = config.recompute_share
        if config.layer_checkpoint:
            bench["layer_checkpoint"] = True
    elif summaries is not None:
        bench["summaries"] = summaries  # what HMT's summary_pass resolved to for this batch size
    values = {
        "backbone": config.backbone,
        "method": to_dict(method),
        "segment_length": config.segment_length,
        "engine": dataclasses.asdict(config.engine),
        "bench": bench,
        "dtype": config.dtype,
        "seed": config.seed,
    }
    return json.dumps(values, sort_keys=True)


def _case_columns(config: BenchConfig, case: Case, method: Any, summaries: str | None = None) -> dict[str, Any]:
    window = case.length * config.segment_length  # a training window's positions, equal for every method
    return {
        "status": "success",
        "dataset": DATASET,
        "protocol": f"bench-{case.mode}",
        "test_length": case.length if case.mode == "eval" else window,
        "batch_size": case.batch_size,
        "train_mode": config.train if case.mode == "train" else None,
        "name": names_per_method(config.name, [m.name for m in config.method]).get(method.name),
        "config": _config_json(config, case, method, summaries),
    }


def _row(config: BenchConfig, backbone: Backbone, case: Case, model: SegmentMethod, command_line,
         started: datetime) -> dict[str, Any]:
    return {
        **run_columns("bench", config.seed, backbone, model, command_line, started),
        **_case_columns(config, case, model.config, model.summary_schedule(case.batch_size) if case.mode == "eval"
                        else None),
    }


def _bare_row(config: BenchConfig, backbone: Backbone, case: Case, command_line, started: datetime, status: str,
              why: str):
    """A row for a case no method could be built for."""
    row = {
        **backbone_columns("bench", config.seed, backbone, command_line, started),
        "method": case.method.name,
        **_case_columns(config, case, case.method),
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
        timed_calls=len(timing.seconds),
        call_seconds=list(timing.seconds),
        warmup_s=timing.warmup_s,
        tokens_per_s=tokens / median,
        ms_per_segment=1000 * median / segments,
        peak_gpu_mem_mb=timing.peak_gpu_mb,
        peak_host_mem_mb=peak_host_mem_mb(),
    )
    if case.mode == "eval":
        row.update(docs=case.batch_size, tokens_scored=case.batch_size * (case.length - 1), nll_mean=timing.value)
    else:
        row.update(final_loss=timing.value)
    return row


def describe_row(row: dict[str, Any]) -> str:
    """One console line per measured case."""
    mode = row["protocol"].removeprefix("bench-")
    what = f"{row['method']:>5} {mode:<5} T={row['test_length']:>6,} B={row['batch_size']:<4}"
    if row.get("oom_retries"):
        what += f" (out of memory: batch halved {row['oom_retries']}x)"
    if row["status"] != "success":
        return f"{what} {row['status']}: {json.loads(row['config']).get('reason', '')}"
    peak = f"{row['peak_gpu_mem_mb']:,.0f} MiB" if row.get("peak_gpu_mem_mb") is not None else "n/a"
    shares = [f"{row[key]:.0f}% of {name}" for key, name in (("peak_flops_pct", "peak FLOP/s"),
              ("backbone_flops_pct", "peak counting every backbone position"),
              ("bandwidth_bound_pct", "weight-bandwidth bound")) if row.get(key) is not None]
    return (
        f"{what} {row['tokens_per_s']:>12,.0f} tok/s {row['ms_per_segment']:>9.2f} ms/segment  peak {peak}"
        f"  {row['model_tflops']:.1f} TFLOP/s {' '.join(shares)}"
        f"  (warm-up {row['warmup_s']:.1f} s, {row['timed_calls']} timed)"
    )
