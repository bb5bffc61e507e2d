"""The training configuration: flags and YAML recipes both fill these dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import SEED, DataSettings, ModelSettings, method_field
from hmtbench.errors import HmtbenchError

TRAIN_MODES = ("memory", "lora", "full")
LOSS_ON = ("last", "all")
NEEDLE_PLACES = ("anywhere", "earlier", "apart")
LR_SCHEDULES = ("step", "linear")
ANSWER_LAYOUTS = ("answer", "start")


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
    k2: int | None = None  # the official RMT code's k2: the state leaves the graph after every segment i >= 1 with
    # i + k2 <= n (n segments; booydar's babilong branches), a rule apart from bptt_truncate (docs/methods.md)
    loss_on: str = "last"  # last: the window's last segment (HMT reference) | all (the RMT LM script)
    grad_checkpoint: bool = False  # recompute each segment in the backward pass: memory flat in the BPTT depth
    recompute_share: float = 1.0  # with grad_checkpoint: the share of a window's segments recomputed (the earliest);
    # the others keep their activations: memory traded against time
    compile: bool = False  # torch.compile the backbone's blocks and the loss (eval's --compile): fewer, fused kernels
    cuda_graphs: bool = False  # replay each micro-batch's forward and backward from a CUDA graph (training/graphed.py)
    lr: float = 1e-4
    weight_decay: float = 0.01
    lr_schedule: str = "step"  # step: x lr_decay every decay_every steps (the HMT reference's StepLR) | linear:
    # warm-up from 0, then down to 0 at decay_horizon x the stage's steps (transformers' linear schedule, RMT's)
    warmup_steps: int = 0
    warmup_share: float = 0.0  # warm-up as a share of the stage's steps (RMT's BABILong script: 0.1), not with
    # warmup_steps
    lr_decay: float = 0.9  # multiply the lr by this every decay_every steps (reference StepLR)
    decay_every: int = 100
    decay_horizon: float = 1.0  # linear: the lr reaches 0 after this many times the stage's steps (RMT's BABILong
    # script: 2, so a level ends near half its peak lr)
    grad_clip: float = 1.0
    max_file_mb: float | None = None  # checkpoints' tensor files over this many MiB are written in parts (16: what a
    # GPU machine hands back and a commit holds); None: one file each
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = SEED

    def __post_init__(self) -> None:
        rules = [
            (self.steps > 0 and self.stage1_steps > 0, "--steps must be positive"),
            (self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be positive: {self.max_minutes}"),
            (self.bptt_depth >= 1, f"--bptt-depth must be at least 1, got {self.bptt_depth}"),
            (self.bptt_truncate is None or 1 <= self.bptt_truncate, "--bptt-truncate must be at least 1"),
            (self.k2 is None or self.k2 >= 1, f"--k2 must be at least 1 (leave it unset for full BPTT), got {self.k2}"),
            (self.bptt_truncate is None or self.k2 is None, "--bptt-truncate and --k2 are two truncation rules: "
                                                            "give one"),
            (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be step or linear, got '{self.lr_schedule}'"),
            (0 <= self.warmup_share < 1, f"train.warmup_share must be in [0, 1), got {self.warmup_share}"),
            (not (self.warmup_share and self.warmup_steps), "give --warmup-steps or train.warmup_share, not both"),
            (self.decay_horizon >= 1, f"train.decay_horizon must be at least 1, got {self.decay_horizon}"),
            (self.max_file_mb is None or self.max_file_mb >= 1, f"--max-file-mb must be at least 1: "
                                                                f"{self.max_file_mb}"),
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

    @property
    def max_file_bytes(self) -> int | None:
        return None if self.max_file_mb is None else int(self.max_file_mb * 2**20)

    def warmup_for(self, steps: int) -> int:
        """Warm-up steps of a stage of ``steps`` steps."""
        return int(self.warmup_share * steps) if self.warmup_share else self.warmup_steps


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
    level_steps: list[int] | None = None  # or: this many steps at each level, whatever the answers (the RMT
    # BABILong script: 5000, then 10000 each; the HMT reference: training_step per level); the stage's steps
    restart_per_level: bool = False  # with level_steps: each level a stage of its own, from the previous level's
    # tensors with a fresh optimizer and lr schedule (the RMT BABILong script runs each level as a new run)
    layout: str = "answer"  # answer: each prompt ends ANSWER_ROOM positions before a segment ends | start: segments
    # cut from the sample's start (the official RMT wrapper); where the question and answer fall then varies
    sample_length: str = "uniform"  # generated tasks: uniform: each prompt's length drawn over its level | full:
    # every prompt fills its level up to ANSWER_ROOM (the BABILong script's fixed sample_size)
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
        steps = self.level_steps
        if steps is not None and (len(steps) != len(self.segments) or min(steps) < 1):
            raise HmtbenchError(f"curriculum.level_steps needs a positive step count per level of curriculum.segments "
                                f"({len(self.segments)}), got {steps}")
        if self.restart_per_level and steps is None:
            raise HmtbenchError("curriculum.restart_per_level needs curriculum.level_steps (the steps of each level)")
        if self.layout not in ANSWER_LAYOUTS:
            raise HmtbenchError(f"curriculum.layout must be answer or start, got '{self.layout}'")
        if self.sample_length not in ("uniform", "full"):
            raise HmtbenchError(f"curriculum.sample_length must be uniform or full, got '{self.sample_length}'")


@dataclass
class TrainConfig(ModelSettings):
    """The run's seed is ``train.seed``, a training setting beside the others (recipes and records hold it there)."""

    method: Any = method_field("hmt")  # the method's config dataclass (hmtbench.methods)
    data: DataSettings = field(default_factory=lambda: DataSettings(split="train"))
    train: TrainSettings = field(default_factory=TrainSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)  # answer training (--task)
    output_dir: str | None = None  # default: runs/<backbone>-<method>-<time>
    recipe: str | None = None  # the recipe the run was started from (--recipe), named in its records, log and ledger
    out: str = "results"  # where the run's parquet record goes
    name: str | None = None  # the run's short name in tables and legends

    def __post_init__(self) -> None:
        if self.train.cuda_graphs and self.curriculum.task is not None:
            raise HmtbenchError("--cuda-graphs captures language-modelling windows (one shape per run); answer "
                                "training changes its shapes with the curriculum and reads its answers back each "
                                "step: train it without --cuda-graphs")
