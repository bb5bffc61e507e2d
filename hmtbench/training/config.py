"""The training configuration: flags and YAML recipes both fill these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import DataSettings, method_field
from hmtbench.errors import HmtbenchError

TRAIN_MODES = ("memory", "lora", "full")
LOSS_ON = ("last", "all")
NEEDLE_PLACES = ("anywhere", "earlier", "apart")


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    targets: list[str] | None = None  # None: peft's default for the architecture (q_proj, v_proj for Llama)


@dataclass
class TrainSettings:
    steps: int = 500  # optimizer steps of the last (or only) stage
    stage1_steps: int = 200  # HMT stage 1 steps when --stages includes 1
    max_minutes: float | None = None  # end a stage early (final checkpoint saved) once this much wall time is spent
    stages: list[int] = field(default_factory=lambda: [1, 2])  # of a method with training stages (HMT: 1, then 2)
    init_from: str | None = None  # checkpoint the first stage starts from (stage 2 after a separate stage 1)
    train: str = "memory"  # memory (backbone frozen) | lora | full
    batch_size: int = 2
    grad_accum: int = 1
    bptt_depth: int = 2  # D: segments per training window
    bptt_truncate: int | None = None  # K: gradients reach only the last K segments (None = all D)
    loss_on: str = "last"  # last: the window's last segment (reference) | all
    grad_checkpoint: bool = False  # recompute each segment in the backward pass: memory flat in the BPTT depth
    recompute_share: float = 1.0  # with grad_checkpoint: the share of a window's segments recomputed (the earliest);
    # the others keep their activations: memory traded against time
    compile: bool = False  # torch.compile the backbone's blocks and the loss (eval's --compile): fewer, fused kernels
    cuda_graphs: bool = False  # replay each micro-batch's forward and backward from a CUDA graph (training/graphed.py)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    lr_decay: float = 0.9  # multiply the lr by this every decay_every steps (reference StepLR)
    decay_every: int = 100
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 3407

    def __post_init__(self) -> None:
        rules = [
            (self.steps > 0 and self.stage1_steps > 0, "--steps must be positive"),
            (self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be positive: {self.max_minutes}"),
            (self.bptt_depth >= 1, f"--bptt-depth must be at least 1, got {self.bptt_depth}"),
            (self.bptt_truncate is None or 1 <= self.bptt_truncate, "--bptt-truncate must be at least 1"),
            (self.train in TRAIN_MODES, f"--train must be one of {', '.join(TRAIN_MODES)}, got '{self.train}'"),
            (self.loss_on in LOSS_ON, f"--loss-on must be last or all, got '{self.loss_on}'"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be positive"),
            (len(self.stages) > 0, "--stages needs at least one stage"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "--checkpoint-every and --log-every must be positive"),
        ]
        for ok, message in rules:
            if not ok:
                raise HmtbenchError(message)
        check_recompute_share(self.recompute_share)

    @property
    def recompute(self) -> float:
        return checkpointed_share(self.grad_checkpoint, self.recompute_share)


def check_recompute_share(share: float) -> None:
    """--recompute-share is a share of a window's segments: in (0, 1] (train and bench check it before any work)."""
    if not 0 < share <= 1:
        raise HmtbenchError(f"--recompute-share must be in (0, 1], got {share}")


def checkpointed_share(grad_checkpoint: bool, recompute_share: float) -> float:
    """The share of a window's segments recomputed in the backward pass (0: activation checkpointing off)."""
    return recompute_share if grad_checkpoint else 0.0


@dataclass
class CurriculumSettings:
    """Answer training: the task and the curriculum over the segments a sample's context spans."""

    task: str | None = None  # passkey | multi-fact | babilong-qa1..5 | a .jsonl; None: language modelling
    segments: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # levels: segments per training context
    advance_at: float = 0.9  # move on once this share of training answers is exact (greedy) ...
    window: int = 10  # ... over the last this many steps
    needles: str = "anywhere"  # generated tasks: anywhere in the context | earlier: in a segment before the
    # question's from level 2 on, so every sample's answer needs the memory (none is answerable from the last segment)
    # | apart: as earlier, and each fact of a multi-fact sample in a segment of its own (a span write holds one)
    question_segment_share: float = 0.0  # with needles: earlier, this share of the samples (from level 2 on) puts
    # its facts in the question's own segment instead: trained on earlier keys alone, the model stops reading a key
    # it sees directly (results/h200-long-curriculum/: 1-2 of 25 at depth 1.0)
    filler: str = "pydoc-topics"  # generated tasks: the text the facts hide in
    data: str | None = None  # a local copy of a hub task's data (BABILong)

    def __post_init__(self) -> None:
        if not self.segments or min(self.segments) < 1 or self.segments != sorted(self.segments):
            raise HmtbenchError(f"curriculum.segments must be positive and ascending, got {self.segments}")
        if self.needles not in NEEDLE_PLACES:
            raise HmtbenchError(f"curriculum.needles must be one of {', '.join(NEEDLE_PLACES)}, got '{self.needles}'")
        share = self.question_segment_share
        if not 0 <= share <= 1:
            raise HmtbenchError(f"curriculum.question_segment_share must be in [0, 1], got {share}")
        if share and self.needles == "anywhere":
            raise HmtbenchError("curriculum.question_segment_share applies to needles: earlier or apart (anywhere "
                                "already puts some facts in the question's segment)")
        if not 0 < self.advance_at <= 1 or self.window < 1:
            raise HmtbenchError("curriculum.advance_at must be in (0, 1] and curriculum.window at least 1")


@dataclass
class TrainConfig:
    backbone: str = "smollm2-135m"
    method: Any = method_field("hmt")  # the method's config dataclass (hmtbench.methods)
    segment_length: int = 256  # L: positions per backbone step
    data: DataSettings = field(default_factory=lambda: DataSettings(split="train"))
    train: TrainSettings = field(default_factory=TrainSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)  # answer training (--task)
    output_dir: str | None = None  # default: runs/<backbone>-<method>-<time>
    dtype: str = "auto"  # auto: bf16 weights on GPU (fp32 for --train full), fp32 on CPU
    device: str = "auto"
    out: str = "results"  # where the run's parquet record goes
    name: str | None = None  # the run's short name in tables and legends

    def __post_init__(self) -> None:
        if self.train.cuda_graphs and self.curriculum.task is not None:
            raise HmtbenchError("--cuda-graphs captures language-modelling windows (one shape per run); answer "
                                "training changes its shapes with the curriculum and reads its answers back each "
                                "step: train it without --cuda-graphs")
