"""The record columns every command fills the same way: provenance, backbone, method and parameters; the checkpoint
and the training behind it; and those computed from what a run measured (intervals, per-depth scores, the data's
hash).

Each is computed here once, so every command that fills a column fills it the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from hmtbench import distributed
from hmtbench.backbones import Backbone
from hmtbench.checkpoints import read_meta, tensors_sha256
from hmtbench.methods.base import SegmentMethod
from hmtbench.results.provenance import device_name, provenance, tokens_sha256
from hmtbench.stats import proportion_interval

BINARY_METRICS = ("accuracy", "exact_match")  # 0/1 per sample: Wilson intervals apply
# Parts of a training configuration that do not change what it trains: its seed (runs of one recipe differ in it),
# where it writes, what it is called, how often it logs, the chunks it runs in, the file it came from. Paths into the
# nested configuration.
NOT_RECIPE = (("train", "seed"), ("train", "init_from"), ("train", "log_every"), ("train", "checkpoint_every"),
              ("train", "max_minutes"), ("train", "max_file_mb"), ("output_dir",), ("out",), ("name",), ("device",),
              ("recipe",))
# Training settings added after records of their recipes were made, each at the value that trains as before: left
# out of the recipe there, so a recipe trained again under newer code keeps its hash.
LATER_SETTINGS = {("train", "lora_seed"): None}


def run_columns(
    command: str, seed: int, backbone: Backbone, model: SegmentMethod, command_line: list[str] | None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """The record columns every command fills the same way: provenance, backbone, method, parameters, device."""
    return {
        **backbone_columns(command, seed, backbone, command_line, started_at),
        "method": model.name,
        **parameter_counts(model),
        **model.record_columns(),
    }


def backbone_columns(
    command: str, seed: int, backbone: Backbone, command_line: list[str] | None, started_at: datetime | None = None
) -> dict[str, Any]:
    """Provenance, the backbone and the device: the columns of a run whether or not a method could be built."""
    return {
        **provenance(command_line, started_at),
        "command": command,
        "seed": seed,
        "backbone": backbone.resolved.given,
        "backbone_resolved": backbone.resolved.description,
        "weights": "random" if backbone.resolved.random_weights else "pretrained",
        "device": backbone.device.type,
        "device_name": device_name(backbone.device),
        "dtype": str(backbone.dtype).removeprefix("torch."),
        "world_size": distributed.world_size(),
    }


def parameter_counts(model: SegmentMethod) -> dict[str, int]:
    backbone = sum(p.numel() for p in model.backbone.parameters())
    lora = sum(p.numel() for n, p in model.backbone.named_parameters() if "lora_" in n)
    added = sum(p.numel() for p in model.added_parameters().values()) + lora
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"backbone_params": backbone - lora, "added_params": added, "trainable_params": trainable}


def checkpoint_columns(checkpoint: str | None) -> dict[str, Any]:
    """The record's checkpoint (path and content hash), how its tensors were trained (null = untrained memory), the
    seed and recipe of that training, and on how many tokens (``train_tokens``)."""
    if checkpoint is None:
        return {"checkpoint": None, "checkpoint_sha256": None, "train_mode": None, "train_tokens": None,
                **training_columns(None)}
    meta = read_meta(checkpoint)
    return {
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": tensors_sha256(checkpoint),
        "train_mode": meta.get("train_mode"),
        **training_columns(meta.get("config"), meta),
        "train_tokens": meta.get("train_tokens"),
    }


def training_columns(config: dict[str, Any] | None, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """train_seed, train_data_seed, train_lora_seed, train_recipe and train_budget (its train.max_tokens) of a training
    configuration (``to_dict(TrainConfig)``, as a train run holds it and its checkpoints keep it in checkpoint.json);
    null without one. ``checkpoint``: that checkpoint's meta, whose step and method settings (HMT's stage) join the
    recipe: two checkpoints of one run (stage 1 and 2, an earlier step) are two recipes, one recipe at several seeds
    is one. A stage trained from --init-from is told apart by its own settings only, not by the recipe of the
    checkpoint it started from."""
    if not isinstance(config, dict):
        return {"train_seed": None, "train_data_seed": None, "train_lora_seed": None, "train_recipe": None,
                "train_budget": None}
    recipe = json.loads(json.dumps(config))  # a deep copy of plain values
    if checkpoint is not None:
        recipe["checkpoint"] = {"step": checkpoint.get("step"), "method": checkpoint.get("method")}
    later = [path for path, same in LATER_SETTINGS.items() if _at(config, path) == same]
    for *parents, leaf in (*NOT_RECIPE, *later):
        node = _at(recipe, parents)
        if isinstance(node, dict):
            node.pop(leaf, None)
    train = config.get("train") or {}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return {"train_seed": train.get("seed"), "train_data_seed": train.get("data_seed"),
            "train_lora_seed": train.get("lora_seed"), "train_recipe": digest, "train_budget": train.get("max_tokens")}


def _at(config: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` in a nested configuration; None where any part is missing."""
    for part in path:
        config = config.get(part) if isinstance(config, dict) else None
    return config


def ppl_columns(result: Any, documents: Sequence[Sequence[int]], order: Sequence[int] | None = None
                ) -> dict[str, Any]:
    """eval-ppl: 95% bootstrap interval of ppl (``PerplexityResult.ppl_interval``), the token ids' sha256 and the
    per-document NLL and token counts in the order that hash reads the documents (``order``: the order they were
    scored in, see ``PerplexityResult.per_document``), for paired tests between runs."""
    low, high = result.ppl_interval()
    doc_nll, doc_tokens = result.per_document(order)
    return {"ppl_ci_low": low, "ppl_ci_high": high, "data_sha256": tokens_sha256(documents), "doc_nll": doc_nll,
            "doc_tokens": doc_tokens}


def qa_columns(records: Sequence[dict[str, Any]], documents: Sequence[Sequence[int]]) -> dict[str, Any]:
    """eval-qa: 95% Wilson intervals of accuracy and exact match, scores by needle depth, the token ids' sha256."""
    columns: dict[str, Any] = {"by_depth": depth_breakdown(records), "data_sha256": tokens_sha256(documents)}
    for metric in BINARY_METRICS:
        columns[f"{metric}_ci_low"], columns[f"{metric}_ci_high"] = proportion_interval([r[metric] for r in records])
    return columns


def depth_breakdown(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """[{"depth", "n", "accuracy", "exact_match"}] by needle depth (``meta.depth``), shallowest first.

    None when no sample has a depth (tasks without needles), so the column stays null there.
    """
    groups: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        depth = (record.get("meta") or {}).get("depth")
        if depth is not None:
            groups.setdefault(float(depth), []).append(record)
    if not groups:
        return None
    return [
        {"depth": depth, "n": len(group), **{m: sum(r[m] for r in group) / len(group) for m in BINARY_METRICS}}
        for depth, group in sorted(groups.items())
    ]
