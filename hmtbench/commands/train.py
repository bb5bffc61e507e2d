"""`hmtbench train`: RMT, HMT (stage 1, stage 2 or both) or plain + LoRA, with checkpoints and resume."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from hmtbench import distributed
from hmtbench.backbones import Backbone, load_backbone, pick_device
from hmtbench.checkpoints import apply_tensors, load_tensors, read_meta
from hmtbench.commands.common import console, parameter_counts, quiet_transformers, run_columns
from hmtbench.config import dump_yaml, from_dict, load_yaml, to_json
from hmtbench.data import load_corpus, tokenize_corpus
from hmtbench.errors import HmtbenchError
from hmtbench.methods import SegmentMethod, build_method, method_class
from hmtbench.progress import StepProgress
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import new_run_id, peak_host_mem_mb
from hmtbench.training.config import TrainConfig
from hmtbench.training.loop import StageOutcome, train_stage
from hmtbench.training.lora import add_lora
from hmtbench.training.windows import WindowSampler

CONFIG_FILE = "config.yaml"


def plan_stages(config: TrainConfig) -> list[tuple[str, int | None, int]]:
    """(folder name, HMT stage or None, steps) for each stage this run trains."""
    has_stages = "stage" in {f.name for f in dataclasses.fields(method_class(config.method).config_class)}
    if not has_stages:
        return [("train", None, config.train.steps)]
    stages = sorted(set(config.train.stages))
    return [(f"stage{s}", s, config.train.steps if s == stages[-1] else config.train.stage1_steps) for s in stages]


def load_run_config(resume: str) -> TrainConfig:
    path = Path(resume) / CONFIG_FILE
    if not path.is_file():
        raise HmtbenchError(
            f"--resume {resume}: no {CONFIG_FILE} there; point it at a run folder made by hmtbench train"
        )
    return from_dict(TrainConfig, load_yaml(path))


def run_train(config: TrainConfig, command_line: list[str] | None = None, resume: str | None = None) -> list[dict]:
    """Train every planned stage back to back; write one parquet record per stage."""
    method_class(config.method)
    plan = plan_stages(config)
    output = Path(config.output_dir or default_output_dir(config))
    if resume is None and (output / CONFIG_FILE).exists():
        raise HmtbenchError(f"{output} already holds a run; continue it with --resume {output} or pick --output-dir")
    quiet_transformers()
    device = distributed.setup(config.device, console)  # config.device itself in a single process
    distributed.check_divides(config.train.batch_size, "--batch-size")  # each rank takes an equal slice
    # rank 0's folder (the default one is named after the time), once every rank has checked it: a barrier
    output = Path(distributed.from_main(str(output)))
    with console.status(f"loading backbone {config.backbone}"):
        backbone = load_backbone(config.backbone, dtype=training_dtype(config), device=device)
    corpus = load_corpus(config.data.dataset, config.data.split, config.data.max_docs)
    documents = tokenize_corpus(corpus, backbone.tokenizer, None, 1).documents
    output.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(config, output_dir=str(output))
    if distributed.is_main():
        (output / CONFIG_FILE).write_text(dump_yaml(config))
    init_from, rows = config.train.init_from, []
    for folder_name, stage, steps in plan:
        folder = output / folder_name
        if (folder / "final").is_dir():
            console.print(f"{folder_name}: already complete, skipped")
        else:
            rows.append(_train_one(config, backbone, documents, stage, steps, folder, init_from, command_line))
        init_from = str(folder / "final")
    return rows


def _train_one(config, backbone, documents, stage, steps, folder: Path, init_from, command_line) -> dict[str, Any]:
    model = build_for_training(backbone, config, stage, init_from)
    settings = config.train
    sampler = WindowSampler(
        documents,
        settings.bptt_depth * model.segment_tokens,
        model.segment_tokens,
        settings.seed,
        f"dataset '{config.data.dataset}' ({config.data.split})",
    )
    meta = checkpoint_meta(config, backbone, model, stage)
    label = config.method + (f" stage {stage}" if stage else "")
    counts = parameter_counts(model)
    console.print(
        f"{label}: {counts['trainable_params']:,} trainable parameters ({settings.train}), "
        f"{len(sampler):,} windows of {sampler.window} tokens"
    )
    row = {"status": "failed", "steps": 0}
    outcome: StageOutcome | None = None
    try:
        with StepProgress(label, steps) as progress:
            outcome = train_stage(model, sampler, settings, steps, folder, meta, progress.update)
        row["status"] = "success"
    except KeyboardInterrupt:
        row["status"] = "canceled"
        raise
    except torch.OutOfMemoryError:
        raise HmtbenchError(
            f"out of memory with --batch-size {settings.batch_size} and --bptt-depth {settings.bptt_depth}; "
            "lower --batch-size (and raise --grad-accum) or lower --bptt-depth"
        ) from None
    finally:
        row.update(_record(config, backbone, model, stage, folder, outcome, init_from, command_line))
        if distributed.is_main():
            write_record(make_record(row), config.out, row["run_id"])
    return row


def build_for_training(
    backbone: Backbone, config: TrainConfig, stage: int | None, init_from: str | None
) -> SegmentMethod:
    """The method around the backbone with exactly the tensors ``--train`` names set to train."""
    settings = dataclasses.asdict(config.memory)
    if stage is not None:
        settings["stage"] = stage
    mode = config.train.train
    if mode == "lora" and not any("lora_" in n for n, _ in backbone.model.named_parameters()):
        add_lora(backbone.model, dataclasses.asdict(config.lora))
    torch.manual_seed(config.train.seed)
    model = build_method(config.method, backbone.model, settings)
    model.requires_grad_(mode == "full")
    for name, param in model.backbone.named_parameters():
        param.requires_grad_(mode == "full" or (mode == "lora" and "lora_" in name))
    for param in model.added_parameters().values():
        param.data = param.data.float()  # fp32 master weights even on a bf16 backbone
        param.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise HmtbenchError(
            f"--method {config.method} adds nothing to train with --train memory; use --train lora or full"
        )
    if init_from:
        meta = read_meta(init_from)
        if meta.get("method") != config.method:
            raise HmtbenchError(f"--init-from {init_from} holds a {meta.get('method')} checkpoint, not {config.method}")
        apply_tensors(model, load_tensors(init_from), init_from)
    return model


def checkpoint_meta(config: TrainConfig, backbone: Backbone, model: SegmentMethod, stage: int | None) -> dict:
    memory = dataclasses.asdict(config.memory)
    if stage is not None:
        memory["stage"] = stage
    return {
        "method": config.method,
        "backbone": config.backbone,
        "backbone_resolved": backbone.resolved.description,
        "backbone_identity": backbone.resolved.identity,
        "memory": memory,
        "train_mode": config.train.train,
        "lora": dataclasses.asdict(config.lora) if config.train.train == "lora" else None,
        "config": dataclasses.asdict(config),
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
    return f"runs/{Path(config.backbone).stem}-{config.method}-{stamp}"


def _record(config, backbone, model, stage, folder, outcome, init_from, command_line) -> dict[str, Any]:
    return {
        **run_columns("train", config.train.seed, backbone, config.method, model, command_line),
        "run_id": new_run_id("train", config.method + (f"{stage}" if stage else "")),
        "checkpoint": init_from,
        "dataset": config.data.dataset,
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
        "config": distributed.with_world_size(to_json(config)),
    }
