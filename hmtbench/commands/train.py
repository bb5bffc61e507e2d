"""`hmtbench train`: RMT, HMT (stage 1, stage 2 or both) or plain + LoRA, with checkpoints and resume.

A run is a list of stages (HMT's training stages; with ``curriculum.restart_per_level``, one per curriculum
level), each in a folder of its own, each starting from the previous one's final tensors. ``--max-minutes``
ends the run at a logged step once that much time has passed since its first stage began; ``--resume``
continues it exactly, so a long training runs in chunks. Each chunk appends a row to ``<out>/ledger.csv``.
"""

from __future__ import annotations

import dataclasses
import gc
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hmtbench import distributed
from hmtbench.backbones import Backbone, load_backbone, pick_device
from hmtbench.build import build_method, make_trainable
from hmtbench.checkpoints import read_meta
from hmtbench.config import EngineOptions, dump_yaml, from_dict, load_yaml, to_dict, to_json
from hmtbench.data import load_corpus, tokenize_corpus
from hmtbench.errors import Canceled, HmtbenchError
from hmtbench.fastpath import accelerate
from hmtbench.methods.base import SegmentMethod
from hmtbench.progress import StepProgress, console, quiet_transformers
from hmtbench.resolve import resolve
from hmtbench.results import make_record, write_record
from hmtbench.results.ledger import append_ledger
from hmtbench.results.provenance import new_run_id, peak_host_mem_mb, run_start
from hmtbench.results.record_columns import parameter_counts, run_columns, training_columns
from hmtbench.training.config import TrainConfig
from hmtbench.training.layer_recompute import checkpoint_blocks
from hmtbench.training.loop import StageOutcome, train_stage
from hmtbench.training.objectives import AnswerTraining, make_objective
from hmtbench.training.plan import (
    Stage,
    StartPoint,
    budget_spent,
    check_resumable,
    last_begun,
    pending_stages,
    plan_stages,
    stage_complete,
    start_point,
    tokens_trained,
)

CONFIG_FILE = "config.yaml"


def train_config(given: dict[str, Any], recipe: str | None = None) -> TrainConfig:
    """The typed config: what was given, then (for a run started from a checkpoint) the checkpoint's settings;
    ``recipe``: the recipe file it came from, named in the run's records."""
    if recipe is not None:
        given = {**given, "recipe": recipe}
    init_from = (given.get("train") or {}).get("init_from")
    configs = resolve(TrainConfig, given, init_from, default_method="hmt")
    if len(configs) > 1:
        raise HmtbenchError("train takes one --method at a time")
    return configs[0]


CHUNK_SETTINGS = ("max_minutes", "compile")  # train settings a resumed chunk may set for itself


def load_run_config(resume: str, given: dict[str, Any] | None = None) -> TrainConfig:
    """The run's settings from its ``config.yaml``, to go on with, in the folder named (wherever the run was
    started: a moved or copied run goes on where it now is). Of the settings ``given`` with --resume only the
    chunk's own apply, ``train.max_minutes``, ``train.compile`` (a chunk may go on eager where compilation failed,
    or compiled: the same computation, rounded otherwise), ``out`` (where its records and ledger line go) and
    ``device``; anything else would make the run another one."""
    path = Path(resume) / CONFIG_FILE
    if not path.is_file():
        raise HmtbenchError(
            f"--resume {resume}: no {CONFIG_FILE} there; point it at a run folder made by hmtbench train"
        )
    config = dataclasses.replace(from_dict(TrainConfig, load_yaml(path)), output_dir=resume)
    given = dict(given or {})
    chunk = dict(given.pop("train", None) or {})
    own_chunk = {key: value for key in CHUNK_SETTINGS if (value := chunk.pop(key, None)) is not None}
    own = {key: given.pop(key) for key in ("out", "device") if key in given}
    others = sorted([*given, *(f"train.{key}" for key in chunk)])
    if others:
        raise HmtbenchError(f"--resume continues {resume} with its own settings ({CONFIG_FILE}); of the others only "
                            f"--max-minutes, --compile, --out and --device apply, got {', '.join(others)}")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, **own_chunk), **own)


def run_train(config: TrainConfig, command_line: list[str] | None = None, resume: str | None = None) -> list[dict]:
    """Train every planned stage back to back; write one parquet record per stage.

    Everything that can be checked is checked before the run folder is written (settings, checkpoints, the
    corpus, the first stage's model and data), so a run that fails at start-up leaves the folder free."""
    plan = plan_stages(config)
    output = Path(config.output_dir or default_output_dir(config))
    if resume is None and (output / CONFIG_FILE).exists():
        raise HmtbenchError(f"{output} already holds a run; continue it with --resume {output} or pick --output-dir")
    budget = config.train.max_tokens
    if config.train.init_from:
        read_meta(config.train.init_from)  # missing or corrupt files: refused before the backbone loads
        read = tokens_trained(config.train.init_from)
        if budget is not None and read >= budget:
            raise HmtbenchError(f"--init-from {config.train.init_from} has read {read:,} tokens, the whole "
                                f"train.max_tokens ({budget:,}): nothing to train")
    pending = pending_stages(plan, output, budget)
    if pending:
        check_resumable(output / pending[0].folder / "last")
    quiet_transformers()
    device = distributed.setup(config.device, console)  # config.device itself in a single process
    distributed.check_divides(config.train.batch_size, "--batch-size")  # each rank takes an equal slice
    # rank 0's folder (the default one is named after the time), once every rank has checked it: a barrier
    output = Path(distributed.from_main(str(output)))
    with console.status(f"loading backbone {config.backbone}"):
        backbone = load_backbone(config.backbone, dtype=training_dtype(config), device=device)
    documents = None  # answer training makes its own samples
    if config.curriculum.task is None:
        corpus = load_corpus(config.data.dataset, config.data.split, config.data.max_docs)
        documents = tokenize_corpus(corpus, backbone.tokenizer, None, 1).documents
    config = dataclasses.replace(config, output_dir=str(output))
    first = None
    if pending:  # the first stage to train, built before the run folder is written: its errors leave it free
        index = plan.index(pending[0])
        previous = str(output / plan[index - 1].folder / "final") if index else config.train.init_from
        first = _prepare(config, backbone, documents, pending[0], start_point(output / pending[0].folder, previous))
    output.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        (output / CONFIG_FILE).write_text(dump_yaml(config))
    init_from, rows = config.train.init_from, []
    ended = last_begun(plan, output)  # the stages before it ended, their finals here or not
    minutes = config.train.max_minutes
    deadline = None if minutes is None else time.perf_counter() + 60 * minutes  # the run's, over its stages
    try:
        for index, stage in enumerate(plan):
            folder = output / stage.folder
            if stage not in pending:
                complete = stage_complete(folder / "final", stage.steps, budget)
                if index >= ended and not complete:
                    console.print(f"{stage.folder}: not started (the run's train.max_tokens, {budget:,}, is spent)")
                    break
                elsewhere = "" if complete else " (its final is not in this folder; a later stage has begun)"
                console.print(f"{stage.folder}: already complete{elsewhere}, skipped")
            elif rows and deadline is not None and time.perf_counter() > deadline:  # no second stage past it
                console.print(f"{stage.folder}: not started (--max-minutes spent); continue with --resume {output}")
                break
            else:
                prepared = first if stage is pending[0] else _prepare(config, backbone, documents, stage,
                                                                      start_point(folder, init_from))
                row, config = _train_fitting(config, prepared, backbone, documents, stage, folder, init_from,
                                             command_line, deadline)
                rows.append(row)
                if budget_spent(folder / "final", budget):
                    console.print(f"{stage.folder}: the run's train.max_tokens ({budget:,}) reached at step "
                                  f"{rows[-1]['end_step']} of {stage.steps}; the run is complete")
                    break
                if not stage_complete(folder / "final", stage.steps):  # ended by --max-minutes: the next stage waits
                    console.print(f"{stage.folder}: stopped at step {rows[-1]['end_step']} of {stage.steps} "
                                  f"(--max-minutes); continue with --resume {output}")
                    break
            init_from = str(folder / "final")
    except KeyboardInterrupt:
        raise Canceled(f"continue with: hmtbench train --resume {shlex.quote(str(output))}") from None
    return rows


class StageOutOfMemory(HmtbenchError):
    """A stage out of device memory; the message says what was kept and how to go on."""


def _train_fitting(config: TrainConfig, prepared: Prepared, backbone: Backbone, documents, stage: Stage,
                   folder: Path, init_from: str | None, command_line, deadline: float | None,
                   ) -> tuple[dict[str, Any], TrainConfig]:
    """``_train_one``, and with ``train.halve_on_oom`` a stage out of memory goes on from the steps it finished with
    half the micro-batch and twice the micro-batches a step (the same samples a step, summed in another order),
    down to one row. The run's config.yaml keeps the micro-batch that fit, for its later stages and chunks. Returns
    the stage's row and the run's config as it ended."""
    while True:
        try:
            return _train_one(prepared, backbone, stage, folder, command_line, deadline), config
        except StageOutOfMemory:
            train = config.train
            if not train.halve_on_oom or train.batch_size % 2 or distributed.is_distributed():
                raise
        # out of the except block: the failed step's frames, and the activations they hold, are gone
        train = dataclasses.replace(train, batch_size=train.batch_size // 2, grad_accum=train.grad_accum * 2)
        config = dataclasses.replace(config, train=train)
        (Path(config.output_dir) / CONFIG_FILE).write_text(dump_yaml(config))
        console.print(f"{stage.label}: out of memory; going on with micro-batches of {train.batch_size}, "
                      f"{train.grad_accum} a step (train.halve_on_oom; the same samples a step)")
        prepared = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        prepared = _prepare(config, backbone, documents, stage, start_point(folder, init_from))


@dataclasses.dataclass
class Prepared:
    """A stage ready to train: its method built (tensors set to train), its objective, its resolved config."""

    config: TrainConfig
    model: SegmentMethod
    objective: Any
    start: StartPoint
    started: datetime


def _prepare(config: TrainConfig, backbone, documents, stage: Stage, start: StartPoint) -> Prepared:
    started = run_start()
    model = build_for_training(backbone, dataclasses.replace(config, method=stage.method), start.checkpoint)
    config = dataclasses.replace(config, method=model.config)  # the settings as built (defaults resolved)
    if config.train.compile:  # after LoRA is in place: the compiled blocks trace its layers with theirs
        accelerate(model, EngineOptions(compile=True))
    if config.train.layer_checkpoint:  # around the compiled blocks: a recomputed block runs its compiled code again
        checkpoint_blocks(model.backbone)
    return Prepared(config, model, make_objective(config, model, backbone, documents, stage.level), start, started)


def _train_one(prepared: Prepared, backbone, stage: Stage, folder: Path, command_line,
               deadline: float | None = None) -> dict[str, Any]:
    config, model, objective = prepared.config, prepared.model, prepared.objective
    settings = config.train
    meta = {**checkpoint_meta(config, backbone), "tokens_before": prepared.start.tokens}
    label, steps = stage.label, stage.steps
    counts = parameter_counts(model)
    recipe = f" (recipe {config.recipe})" if config.recipe else ""
    console.print(f"{label}{recipe}: {counts['trainable_params']:,} trainable parameters ({settings.train}), "
                  f"{objective.describe()}; {meta['tokens_before']:,} tokens trained before")
    row = {"status": "failed", "steps": 0}
    outcome: StageOutcome | None = None
    try:
        with StepProgress(label, steps) as progress:
            outcome = train_stage(model, objective, settings, steps, folder, meta, progress.update, deadline)
        row["status"] = "success"
    except KeyboardInterrupt:
        row["status"] = "canceled"
        raise
    except torch.OutOfMemoryError as error:
        outcome = getattr(error, "outcome", None)  # the steps finished (and saved) before it: recorded, in the ledger
        raise StageOutOfMemory(out_of_memory_message(config, objective, error, folder.parent)) from None
    finally:
        row.update(_record(config, backbone, model, stage, folder, outcome, prepared.start, command_line,
                           prepared.started))
        if distributed.is_main():
            write_record(make_record(row), config.out, row["run_id"])
            if outcome is not None:
                append_ledger(config.out, row, stage.label, outcome)
    console.print(f"{label}: {outcome.stage_tokens:,} tokens in this stage, {row['train_tokens']:,} trained in all")
    if outcome.no_gradient:
        console.print(f"warning: {label}: {len(outcome.no_gradient)} trainable tensors have had no gradient in the "
                      f"stage's {outcome.end_step} steps, so they do not train: {', '.join(outcome.no_gradient)} "
                      f"(each logged step in log.jsonl lists those still without one)")
    # console only: the record holds the steps run
    return {**row, "stage": label, "first_step": outcome.start, "end_step": outcome.end_step, "stage_steps": steps}


def describe_stage(row: dict[str, Any]) -> str:
    """The line that closes a stage: complete, or where a chunk stopped; the step it ended at, and for a resumed
    stage the steps run now."""
    start, end, planned = row["first_step"], row["end_step"], row["stage_steps"]
    state, of = ("complete", "") if end >= planned else ("stopped", f" of {planned}")
    resumed = f" ({row['steps']} run now, resumed at step {start})" if start else ""
    return f"{row['stage']} {state}: final loss {row['final_loss']:.4f} at step {end}{of}{resumed}"


def out_of_memory_message(config: TrainConfig, objective: Any, error: Exception, run: Path) -> str:
    """What ran out of memory, what was kept of the run, and how to go on."""
    settings = config.train
    if isinstance(objective, AnswerTraining):
        size = f"{objective.segments}-segment contexts at --batch-size {settings.batch_size}"
        lower = "lower --batch-size (raising --grad-accum keeps the batch)"
    else:
        size = f"--batch-size {settings.batch_size} and --bptt-depth {settings.bptt_depth}"
        lower = "lower --batch-size (and raise --grad-accum) or --bptt-depth"
    recompute = [flag for flag, on in (("--grad-checkpoint", settings.grad_checkpoint),
                                       ("--set train.layer_checkpoint=true", settings.layer_checkpoint)) if not on]
    if recompute:
        lower += f", or add {' or '.join(recompute)}"
    saved = getattr(error, "saved", None)
    kept = "no step had finished" if saved is None else (
        f"the {error.steps_done} steps done are saved in {saved}: set batch_size / grad_accum in {run / CONFIG_FILE} "
        f"and continue with --resume {run}")
    return f"out of memory with {size}; {lower}; {kept}"


def build_for_training(backbone: Backbone, config: TrainConfig, init_from: str | None) -> SegmentMethod:
    """The method around the backbone with exactly the tensors ``--train`` names set to train."""
    mode = config.train.train
    lora = dataclasses.asdict(config.lora) if mode == "lora" else None
    if init_from:
        _check_init_from(init_from, config)
    model = build_method(backbone, config.method, config.segment_length, seed=config.train.seed,
                         lora_seed=config.train.lora_seed,
                         checkpoint=init_from, lora=lora)
    make_trainable(model, mode)
    if not any(p.requires_grad for p in model.parameters()):
        raise HmtbenchError(
            f"--method {model.name} adds nothing to train with --train memory; use --train lora or full"
        )
    return model


def _check_init_from(init_from: str, config: TrainConfig) -> None:
    trained_for = read_meta(init_from).get("method")
    name = trained_for.get("name") if isinstance(trained_for, dict) else trained_for
    if name != config.method.name:
        raise HmtbenchError(f"--init-from {init_from} holds a {name} checkpoint, not {config.method.name}")


def checkpoint_meta(config: TrainConfig, backbone: Backbone) -> dict:
    """What a checkpoint says about itself: the method's settings as trained, the backbone, LoRA, the run's config."""
    return {
        "method": config.method.settings(),
        "segment_length": config.segment_length,
        "backbone": config.backbone,
        "backbone_resolved": backbone.resolved.description,
        "backbone_identity": backbone.resolved.identity,
        "train_mode": config.train.train,
        "lora": dataclasses.asdict(config.lora) if config.train.train == "lora" else None,
        "recipe": config.recipe,
        "config": to_dict(config),
    }


def training_dtype(config: TrainConfig) -> str:
    """auto: bf16 weights on a GPU for frozen/LoRA backbones, fp32 (with bf16 autocast) for full fine-tuning."""
    if config.dtype != "auto":
        return config.dtype
    if pick_device(config.device).type == "cuda" and config.train.train != "full":
        return "bf16"
    return "fp32"


def default_output_dir(config: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"runs/{Path(config.backbone).stem}-{config.method.name}-{stamp}"


def _record(config, backbone, model, stage, folder, outcome, start: StartPoint, command_line,
            started) -> dict[str, Any]:
    return {
        **run_columns("train", config.train.seed, backbone, model, command_line, started),
        "run_id": new_run_id("train", stage.label.replace(" stage ", "").replace(" level ", "-level"), started),
        "name": config.name,
        **training_columns(to_dict(config)),
        "checkpoint": start.checkpoint,
        "dataset": config.curriculum.task or config.data.dataset,
        "split": config.data.split,
        "max_docs": config.data.max_docs,
        "batch_size": config.train.batch_size,
        "train_mode": config.train.train,
        "steps": outcome.steps if outcome else None,
        "final_loss": outcome.final_loss if outcome else None,
        "output_dir": str(folder),
        "peak_gpu_mem_mb": outcome.peak_gpu_mb if outcome else None,
        "peak_host_mem_mb": peak_host_mem_mb(),
        "wall_s": outcome.wall_s if outcome else None,
        "tokens_per_s": outcome.tokens / outcome.wall_s if outcome and outcome.wall_s else None,
        "train_tokens": start.tokens + outcome.stage_tokens if outcome else None,
        "recipe": config.recipe,
        "task": config.curriculum.task,
        "curriculum_segments": _reached(config, stage, outcome),
        "config": distributed.with_world_size(to_json(config)),
    }


def _reached(config: TrainConfig, stage: Stage, outcome: StageOutcome | None) -> int | None:
    """Answer training: the segments per context of the curriculum level the stage ended at."""
    if config.curriculum.task is None or outcome is None:
        return None
    level = stage.level if stage.level is not None else outcome.objective.get("level", 0)
    return config.curriculum.segments[level]
