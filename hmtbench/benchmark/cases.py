"""The benchmark's cases: (mode, method, batch size, context length), each with the method built for it and the
workload it times (``hmtbench.benchmark.measure``): what ``hmtbench bench`` measures."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from hmtbench.backbones import Backbone
from hmtbench.benchmark.config import BenchConfig
from hmtbench.benchmark.measure import eval_workload, train_workload
from hmtbench.build import build_method, make_trainable
from hmtbench.methods.base import SegmentMethod
from hmtbench.training.config import LoraSettings, TrainSettings


@dataclass(frozen=True)
class Case:
    mode: str  # eval | train
    method: Any  # the method's settings
    batch_size: int
    length: int  # eval: tokens per document; train: segments per window (D)


def plan_cases(config: BenchConfig) -> list[Case]:
    """Every case to measure, mode by mode, batch size by batch size, method by method, length by length."""
    cases = []
    for mode in config.mode:
        batches = config.batch_size if mode == "eval" else (config.train_batch_size or config.batch_size)
        for batch in batches:
            for method in config.method:
                if mode == "train":
                    cases.append(Case(mode, method, batch, config.bptt_depth))
                    continue
                cases += [
                    Case(mode, method, batch, t)
                    for t in config.lengths
                    if config.max_batch_tokens is None or batch * t <= config.max_batch_tokens
                ]
    return cases


def build_case(backbone: Backbone, case: Case, config: BenchConfig) -> SegmentMethod:
    """The case's method around ``backbone``, its tensors set to train for a training case."""
    length = case.length * config.segment_length if case.mode == "train" else case.length
    lora = dataclasses.asdict(LoraSettings()) if case.mode == "train" and config.train == "lora" else None
    model = build_method(backbone, case.method, config.segment_length, seed=config.seed, document_length=length,
                         lora=lora)
    if case.mode == "train":
        make_trainable(model, config.train)
    return model


def case_workload(config: BenchConfig, backbone: Backbone, case: Case, model: SegmentMethod, runner):
    """(workload, segment steps per call, text tokens per call, the ``GraphedSteps`` replaying a training step from
    CUDA graphs or None) of one case."""
    generator = torch.Generator().manual_seed(config.seed)
    vocab = backbone.model.get_input_embeddings().weight.shape[0]
    batch = case.batch_size
    if case.mode == "eval":
        ids = torch.randint(0, vocab, (batch, case.length), generator=generator).to(backbone.device)
        lengths = torch.full((batch,), case.length, device=backbone.device)
        return eval_workload(runner, ids, lengths), math.ceil(case.length / model.segment_tokens), ids.numel(), None
    segments = math.ceil(case.length * config.segment_length / model.segment_length)  # D, or 1 for a whole window
    window = segments * model.segment_tokens
    ids = torch.randint(0, vocab, (batch, window), generator=generator).to(backbone.device)
    settings = TrainSettings(bptt_depth=segments, batch_size=batch, loss_on="last",
                             grad_checkpoint=config.grad_checkpoint, recompute_share=config.recompute_share,
                             cuda_graphs=config.engine.cuda_graphs)
    model.train()
    workload, graphed = train_workload(model, ids, settings)
    return workload, segments, ids.numel(), graphed


