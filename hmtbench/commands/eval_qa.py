"""`hmtbench eval-qa`: answer perplexity and generated-answer quality of plain / full / RMT / HMT on a QA task."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hmtbench import distributed
from hmtbench.backbones import load_backbone
from hmtbench.build import build_method, warn_if_untrained
from hmtbench.checkpoints import tensors_sha256
from hmtbench.config import to_json
from hmtbench.errors import HmtbenchError
from hmtbench.evaluation.attention import read_attention, require_read_slot
from hmtbench.evaluation.memory_swap import memory_swap
from hmtbench.fastpath import accelerate
from hmtbench.methods import method_class
from hmtbench.oom import HalvingBatches
from hmtbench.progress import TokenProgress, console, quiet_transformers
from hmtbench.qa.config import EVAL_SPLITS, QAConfig
from hmtbench.qa.metrics import require_scorers
from hmtbench.qa.partial import PartialRun
from hmtbench.qa.runner import PreparedSample, QAResult, batches, evaluate_qa, prepare_samples
from hmtbench.qa.tasks import Task, TaskOptions, check_split, task_factory
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import Measure, new_run_id, peak_host_mem_mb, run_start, tokens_sha256
from hmtbench.results.record_columns import checkpoint_columns, qa_columns, run_columns


def run_eval_qa(configs: list[QAConfig], command_line: list[str] | None = None,
                resume: bool = False) -> list[dict[str, Any]]:
    """Evaluate each config's method, length by length, on the same prepared samples; one parquet record and one
    predictions JSONL per method and length. ``resume``: continue an interrupted run of the same evaluation in
    ``out`` from the batches it had scored (``qa.partial``)."""
    config = configs[0]  # every config shares all but the method and the context length
    _check(configs)
    make_task = task_factory(config.task)  # an unknown task fails before anything loads
    require_scorers()  # ... and so does a missing scorer, rather than after the evaluation
    quiet_transformers()
    device = distributed.setup(config.device, console)  # config.device itself in a single process
    with console.status(f"loading backbone {config.backbone}"):
        backbone = load_backbone(config.backbone, dtype=config.dtype, device=device)
    lengths = list(dict.fromkeys(c.context_length for c in configs))
    rows = []
    for length in lengths:
        group = [c for c in configs if c.context_length == length]
        rows += _evaluate_length(group, make_task, backbone, command_line, sweep=len(lengths) > 1, resume=resume)
    return rows


def _evaluate_length(configs: list[QAConfig], make_task, backbone, command_line, sweep: bool,
                     resume: bool = False) -> list[dict[str, Any]]:
    """Every method of ``configs`` (one context length) on the same samples."""
    config = configs[0]
    options = TaskOptions(tokenizer=backbone.tokenizer, context_length=config.context_length, seed=config.seed,
                          limit=config.limit, data=config.data, depths=config.depths, filler=config.filler,
                          split=config.split)
    task = make_task(options)
    with console.status(f"preparing {task.name} samples"):
        prepared, skipped = prepare_samples(task, task.load(), backbone.tokenizer, config.context_length)
    if not prepared:
        raise HmtbenchError(f"task {task.name} has no sample to evaluate")
    max_new = config.max_new_tokens or task.max_new_tokens
    longest = max(len(p.prompt_ids) + max(len(p.answer_ids), max_new) for p in prepared)
    lengths = [len(p.prompt_ids) for p in prepared]
    note = f"; {skipped} shorter than --context-length skipped" if skipped else ""
    console.print(f"{len(prepared)} {task.name} samples, prompts of {min(lengths)}-{max(lengths)} tokens{note}")
    rows, built = [], []
    for c in configs:
        try:
            built.append((c, build_method(backbone, c.method, c.segment_length, seed=c.seed, document_length=longest,
                                          checkpoint=c.checkpoint, most_tokens=longest)))
        except HmtbenchError as err:  # a sweep goes on where one method cannot read the whole context (full)
            if not (sweep and method_class(c.method.name).reads_whole_document):
                raise
            console.print(f"[yellow]skipped[/] {c.method.name} at {config.context_length} tokens: {err}")
    if config.memory_attention:  # before any evaluation: a method without a read slot has nothing to measure
        for _, model in built:
            require_read_slot(model)
    for method_config, model in built:
        warn_if_untrained(model, config.checkpoint)
        model.eval()
        name = model.name
        label = f"{name:>5}" + (" rank 0" if distributed.is_distributed() else "")
        partial = _partial_run(method_config, prepared, resume)
        done, earlier_wall_s = partial.load()
        share = sum(len(prepared[i].prompt_ids) + len(prepared[i].answer_ids)
                    for _, batch in distributed.deal(batches(prepared, config.batch_size)) for i in batch
                    if i not in done)
        started = run_start()
        runner = accelerate(model, config.engine)
        halving = HalvingBatches(config.batch_size, "lower --context-length")
        with TokenProgress(label, share) as progress, Measure(backbone.device) as measured:
            result = evaluate_qa(model, runner, task, prepared, backbone.tokenizer, max_new, config.batch_size,
                                 lambda read: progress.advance(1, read), config.decode, partial, halving)
        if halving.retries:
            console.print(f"[yellow]{name}: out of device memory, {halving.retries} times: batches of "
                          f"{config.batch_size} were read {halving.size} at a time[/]")
        diagnostics = _memory_diagnostics(model, prepared, method_config)
        measured.wall_s += earlier_wall_s  # the batches an interrupted run scored count with the time they took
        resolved = dataclasses.replace(method_config, method=model.config, max_new_tokens=max_new)
        row = _write(resolved, task, model, backbone, result, measured, prepared, skipped, command_line, started,
                     resumed_samples=len(done), halving=halving, extra=diagnostics)
        partial.remove()
        rows.append(row)
    return rows


def _memory_diagnostics(model, prepared: list[PreparedSample], config: QAConfig) -> dict[str, Any]:
    """The memory diagnostics asked for (``--set memory_attention=N``, ``--set memory_swap=N``) over the cell's first
    N samples, as record columns; nothing when both are off."""
    columns: dict[str, Any] = {}
    for samples, measure, what in ((config.memory_attention, read_attention, "attention on the read slot"),
                                   (config.memory_swap, memory_swap, "memory swap")):
        if samples:
            chosen = prepared[:samples]
            with console.status(f"{model.name}: {what}, {len(chosen)} samples (eager)"):
                measured = measure(model, [p.prompt_ids for p in chosen], [p.answer_ids for p in chosen])
            console.print(f"{model.name}: {measured.summary()}")
            columns.update(measured.columns())
    return columns


def _partial_run(config: QAConfig, prepared: list[PreparedSample], resume: bool) -> PartialRun:
    """Where this evaluation keeps its scored batches: named by its settings (``out`` aside, the checkpoint by its
    tensors' sha256, not its path, so a partial file carried to another machine resumes there), its samples' tokens
    and the processes dealing them. Without ``resume`` an earlier, interrupted run's batches are dropped."""
    samples = tokens_sha256([[*p.prompt_ids.tolist(), *p.answer_ids] for p in prepared])
    checkpoint = tensors_sha256(config.checkpoint) if config.checkpoint else None
    identity = {"config": to_json(dataclasses.replace(config, out="", checkpoint=checkpoint)), "samples": samples,
                "world_size": distributed.world_size()}
    partial = PartialRun(config.out, identity, distributed.rank())
    if partial.exists() and not resume:
        console.print(f"[yellow]an interrupted run of this evaluation left {partial.path}; starting over "
                      "(--resume continues it)[/]")
        partial.remove()
    elif resume and not partial.exists():
        console.print(f"nothing to resume for {config.method.name} in {config.out}: starting from the first sample")
    return partial


def _check(configs: list[QAConfig]) -> None:
    config = configs[0]
    if config.checkpoint and len({c.method.name for c in configs}) > 1:
        raise HmtbenchError("--checkpoint belongs to one method: evaluate one --method at a time with it")
    for flag, value in (("--limit", config.limit), ("--max-new-tokens", config.max_new_tokens),
                        ("--context-length", config.context_length)):
        if value is not None and value < 1:
            raise HmtbenchError(f"{flag} must be positive, got {value}")
    if config.memory_attention < 0:
        raise HmtbenchError(f"memory_attention must be 0 (off) or a number of samples, got {config.memory_attention}")
    if config.memory_swap < 0 or config.memory_swap == 1:
        raise HmtbenchError(f"memory_swap must be 0 (off) or 2 samples or more (one donates its state to another), "
                            f"got {config.memory_swap}")
    if config.split not in EVAL_SPLITS:
        raise HmtbenchError(f"--split must be validation or test, got '{config.split}'")
    check_split(config.task, config.split)


def _write(config: QAConfig, task: Task, model, backbone, result: QAResult, measured: Measure,
           prepared: list[PreparedSample], skipped: int, command_line, started, resumed_samples: int = 0,
           halving: HalvingBatches | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    name = model.name
    run_id = new_run_id("eval-qa", name, started)
    out = Path(config.out)
    predictions = out / f"{run_id}.predictions.jsonl"
    row = _record(config, task, model, backbone, result, measured, prepared, command_line, started)
    row.update(qa_columns(result.records, [[*p.prompt_ids.tolist(), *p.answer_ids] for p in prepared]))
    row.update(run_id=run_id, docs_skipped=skipped, predictions_file=str(predictions), resumed_samples=resumed_samples)
    row.update(extra or {})
    if halving is not None:
        row.update(batch_size=halving.size, oom_retries=halving.retries)
    if not distributed.is_main():  # every rank holds the same numbers; rank 0 writes them
        return {**row, "path": None}
    out.mkdir(parents=True, exist_ok=True)
    with predictions.open("w", encoding="utf-8") as handle:
        for record in result.records:
            handle.write(json.dumps({"run_id": run_id, "task": task.name, "method": name, **record}) + "\n")
    row["path"] = str(write_record(make_record({k: v for k, v in row.items() if k != "path"}), out, run_id))
    console.print(f"{name}: {task.metric} {row[task.metric]:.3f} (the task's headline metric), answer ppl "
                  f"{row['answer_ppl']:.3f}, {len(result.records)} samples in {measured.wall_s:.1f} s")
    return row


def _record(config: QAConfig, task: Task, model, backbone, result: QAResult, measured: Measure,
            prepared: list[PreparedSample], command_line, started) -> dict[str, Any]:
    return {
        **run_columns("eval-qa", config.seed, backbone, model, command_line, started),
        "status": "success",
        **checkpoint_columns(config.checkpoint),
        "name": config.name,
        "selected_on": config.selected_on,
        "dataset": config.data or config.task,
        "split": config.split,
        "protocol": "qa",
        "test_length": max(len(p.prompt_ids) for p in prepared),
        "max_docs": config.limit,
        "batch_size": config.batch_size,
        "docs": len(result.records),
        "tokens_scored": result.answer_tokens,
        "nll_mean": result.nll_sum / result.answer_tokens if result.answer_tokens else None,
        "task": task.name,
        "context_length": config.context_length,
        "answer_ppl": result.answer_ppl,
        **{metric: result.mean(metric) for metric in ("rouge_l", "f1", "exact_match", "accuracy")},
        "answers": "greedy" if config.decode else "teacher-forced",
        "teacher_forced_exact": result.mean("teacher_forced_exact"),
        "decoding_agreement": result.decoding_agreement if config.decode else None,
        "peak_gpu_mem_mb": measured.peak_gpu_mb,
        "peak_host_mem_mb": peak_host_mem_mb(),
        "wall_s": measured.wall_s,
        "tokens_per_s": result.tokens_read / measured.wall_s if measured.wall_s else None,
        "tokens_skipped": result.tokens_skipped,
        "config": distributed.with_world_size(to_json(config)),
    }


def parse_depths(text: str | None) -> list[float] | None:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]; each in [0, 1]."""
    if not text:
        return None
    try:
        depths = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HmtbenchError(f"--depth expects numbers in [0, 1] separated by commas, got '{text}'") from None
    if not depths or any(not 0.0 <= d <= 1.0 for d in depths):
        raise HmtbenchError(f"--depth values must lie in [0, 1], got '{text}'")
    return depths


def print_qa_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"{rows[0]['task']} ({rows[0]['split']} split): answer ppl (lower is better) and "
                        "generated-answer quality",
                  caption="TF-EM: the teacher-forced argmax reproduces the gold answer")
    for column in ("method", "context", "samples", "answer ppl", "accuracy", "ROUGE-L", "F1", "EM", "TF-EM", "tok/s"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        context = f"{row['context_length']:,}" if row["context_length"] is not None else "-"
        table.add_row(row["method"], context, str(row["docs"]), f"{row['answer_ppl']:.3f}", f"{row['accuracy']:.1%}",
                      f"{row['rouge_l']:.3f}", f"{row['f1']:.3f}", f"{row['exact_match']:.1%}",
                      f"{row['teacher_forced_exact']:.1%}",
                      f"{row['tokens_per_s']:,.0f}" if row["tokens_per_s"] else "-")
    console.print(table)
