"""The training configuration: flags, YAML recipes and ``--set`` fill these dataclasses; each field carries its
``--help`` text (``setting``), whether or not ``train`` shows it as a flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import SEED, DataSettings, ModelSettings, method_field
from hmtbench.errors import HmtbenchError
from hmtbench.methods.config import setting

TRAIN_MODES = ("memory", "lora", "full")
LOSS_ON = ("last", "all")
NEEDLE_PLACES = ("anywhere", "earlier", "apart")
LR_SCHEDULES = ("step", "linear")
ANSWER_LAYOUTS = ("answer", "start")


@dataclass
class LoraSettings:
    r: int = setting(8, "LoRA rank.")
    alpha: int = setting(32, "LoRA alpha.")
    dropout: float = setting(0.1, "LoRA dropout.")
    targets: list[str] | None = setting(None, "Module names LoRA sits on; None: peft's default for the architecture "
                                              "(q_proj, v_proj for Llama).")


@dataclass
class TrainSettings:
    steps: int = setting(500, "Optimizer steps of the last (or only) stage.")
    stage1_steps: int = setting(200, "Steps of the earlier stages (HMT's stage 1).")
    max_minutes: float | None = setting(None, "End the run early, at a logged step with its checkpoints, after this "
                                              "many minutes of training (a budgeted GPU call); --resume continues it "
                                              "(and takes --max-minutes for the next chunk).")
    max_tokens: int | None = setting(None, "The run's training budget in tokens (train_tokens: every stage and chunk "
                                           "since the first tensors): a stage ends at the first step that reaches it "
                                           "and no later stage starts. Give every method of a comparison the same "
                                           "one (docs/methods.md, 'Equal budgets'); None: the steps alone.")
    stages: list[int] = setting(help="Stages of a staged method to train, back to back (HMT: 1, then 2); --stage N "
                                     "trains one.", default_factory=lambda: [1, 2])
    init_from: str | None = setting(None, "Checkpoint the first stage starts from (its settings fill what you do "
                                          "not give; stage 2 after a separate stage 1).")
    train: str = setting("memory", "What trains: memory (backbone frozen) | lora | full.")
    batch_size: int = setting(2, "Windows (or answer samples) per micro-batch.")
    grad_accum: int = setting(1, "Micro-batches per optimizer step.")
    halve_on_oom: bool = setting(False, "Out of device memory: go on from the steps done with half the micro-batch "
                                        "and twice --grad-accum (the same samples a step), down to one row; off: stop "
                                        "and say what to change.")
    bptt_depth: int = setting(2, "D: segments per training window.")
    bptt_truncate: int | None = setting(None, "K: gradients reach only the last K segments (None: all D).")
    k2: int | None = setting(None, "The official RMT code's rule instead: the state leaves the graph after every "
                                   "segment i >= 1 with i + k2 <= n (booydar's babilong branches; docs/methods.md).")
    loss_on: str = setting("last", "last: the window's last segment (HMT reference) | all (the RMT LM script).")
    grad_checkpoint: bool = setting(False, "Recompute each segment in the backward pass: memory flat in the BPTT "
                                           "depth, for ~1/3 more time.")
    recompute_share: float = setting(1.0, "With grad_checkpoint: the share of a window's segments recomputed (the "
                                           "earliest); the others keep their activations: memory traded for time.")
    layer_checkpoint: bool = setting(False, "Recompute each decoder block in the backward pass (its forward wrapped "
                                             "in a checkpoint: training/layer_recompute.py): a long segment keeps one "
                                             "block's activations at a time, not every block's (full context).")
    compile: bool = setting(False, "torch.compile the backbone's blocks and the loss: fewer, fused kernels for a "
                                   "host-bound step (the first steps compile).")
    cuda_graphs: bool = setting(False, "Replay each micro-batch's forward and backward from a CUDA graph: one launch "
                                       "instead of thousands (language modelling; a GPU; training/graphed.py).")
    lr: float = setting(1e-4, "Peak learning rate.")
    weight_decay: float = setting(0.01, "AdamW weight decay.")
    lr_schedule: str = setting("step", "step: x lr_decay every decay_every steps (the HMT reference's StepLR) | "
                                       "linear: warm-up from 0, then down to 0 at decay_horizon x the stage's steps "
                                       "(transformers' linear schedule, RMT's).")
    warmup_steps: int = setting(0, "Linear warm-up steps.")
    warmup_share: float = setting(0.0, "Warm-up as a share of the stage's steps (RMT's BABILong script: 0.1), not "
                                       "with warmup_steps.")
    lr_decay: float = setting(0.9, "Multiply the lr by this every decay_every steps (the reference's StepLR).")
    decay_every: int = setting(100, "Steps between lr decays.")
    decay_horizon: float = setting(1.0, "linear: the lr reaches 0 after this many times the stage's steps (RMT's "
                                        "BABILong script: 2, so a level ends near half its peak lr).")
    grad_clip: float = setting(1.0, "Gradient-norm clip.")
    max_file_mb: float | None = setting(None, "Write checkpoint tensor files over this many MiB in parts (16: what a "
                                              "GPU machine hands back and a commit holds); None: one file each.")
    checkpoint_every: int = setting(100, "Save the resumable checkpoint every N steps.")
    log_every: int = setting(10, "Write a JSON log line every N steps.")
    seed: int = setting(SEED, "Random seed (initialisation of the method's tensors, LoRA unless lora_seed; and the "
                              "training data: windows, samples, unless data_seed).")
    data_seed: int | None = setting(None, "Seed of the training data alone (windows and their order, answer "
                                          "samples); None: seed. Vary seed with it fixed to vary only the "
                                          "initialisation, or the other way round.")
    lora_seed: int | None = setting(None, "Seed of LoRA's initial matrices alone (a new LoRA; a checkpoint's own "
                                          "keeps its tensors); None: seed. Vary it with seed fixed to tell LoRA's "
                                          "draw from the memory's.")

    @property
    def sample_seed(self) -> int:
        """The seed the training data is drawn from: data_seed, else the run's seed."""
        return self.seed if self.data_seed is None else self.data_seed

    def __post_init__(self) -> None:
        rules = [
            (self.steps > 0 and self.stage1_steps > 0, "--steps must be positive"),
            (self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be positive: {self.max_minutes}"),
            (self.max_tokens is None or self.max_tokens > 0, f"train.max_tokens must be positive: {self.max_tokens}"),
            (self.bptt_depth >= 1, f"--bptt-depth must be at least 1, got {self.bptt_depth}"),
            (self.bptt_truncate is None or 1 <= self.bptt_truncate, "--bptt-truncate must be at least 1"),
            (self.k2 is None or self.k2 >= 1, f"train.k2 must be at least 1 (leave it unset for full BPTT), got "
                                              f"{self.k2}"),
            (self.bptt_truncate is None or self.k2 is None, "--bptt-truncate and train.k2 are two truncation rules: "
                                                            "give one"),
            (self.lr_schedule in LR_SCHEDULES, f"train.lr_schedule must be step or linear, got '{self.lr_schedule}'"),
            (0 <= self.warmup_share < 1, f"train.warmup_share must be in [0, 1), got {self.warmup_share}"),
            (not (self.warmup_share and self.warmup_steps), "give train.warmup_steps or train.warmup_share, not both"),
            (self.decay_horizon >= 1, f"train.decay_horizon must be at least 1, got {self.decay_horizon}"),
            (self.max_file_mb is None or self.max_file_mb >= 1, f"train.max_file_mb must be at least 1: "
                                                                f"{self.max_file_mb}"),
            (self.train in TRAIN_MODES, f"--train must be one of {', '.join(TRAIN_MODES)}, got '{self.train}'"),
            (self.loss_on in LOSS_ON, f"train.loss_on must be last or all, got '{self.loss_on}'"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "--batch-size and --grad-accum must be positive"),
            (len(self.stages) > 0, "train.stages needs at least one stage"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "train.checkpoint_every and train.log_every must be "
                                                                 "positive"),
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


def recomputed_forwards(grad_checkpoint: bool, recompute_share: float, layer_checkpoint: bool) -> float:
    """The forward passes a backward runs again, in forwards of the whole window: the recomputed segments' share,
    plus one with recomputed blocks (each block runs once more, inside a recomputed segment as well)."""
    return checkpointed_share(grad_checkpoint, recompute_share) + float(layer_checkpoint)


@dataclass
class CurriculumSettings:
    """Answer training: the task and the curriculum over the segments a sample's context spans."""

    task: str | None = setting(None, "Train for answers: passkey | multi-fact | babilong-qa1..5 | a .jsonl; the loss "
                                     "is on the answer tokens only, the context read through the memory. None: "
                                     "language modelling.")
    segments: list[int] = setting(help="Segments per training context, level by level; the next level once "
                                       "advance_at of the answers are exact.", default_factory=lambda: [1, 2, 4, 8])
    advance_at: float = setting(0.9, "Move on once this share of training answers is exact (greedy) ...")
    window: int = setting(10, "... over the last this many steps.")
    level_steps: list[int] | None = setting(None, "Or: this many steps at each level, whatever the answers (the RMT "
                                                  "BABILong script: 5000, then 10000 each; the HMT reference: "
                                                  "training_step per level); the stage's steps.")
    restart_per_level: bool = setting(False, "With level_steps: each level a stage of its own, from the previous "
                                             "level's tensors with a fresh optimizer and lr schedule (the RMT BABILong "
                                             "script runs each level as a new run).")
    layout: str = setting("answer", "answer: each prompt ends ANSWER_ROOM positions before a segment ends | start: "
                                    "segments cut from the sample's start (the official RMT wrapper); where the "
                                    "question and answer fall then varies.")
    sample_length: str = setting("uniform", "Generated tasks. uniform: each prompt's length drawn over its level | "
                                            "full: every prompt fills its level up to ANSWER_ROOM (the BABILong "
                                            "script's fixed sample_size).")
    needles: str = setting("anywhere", "Generated tasks: anywhere in the context | earlier: in a segment before the "
                                       "question's from level 2 on, so every answer needs the memory | apart: as "
                                       "earlier, and each fact of a multi-fact sample in a segment of its own.")
    question_segment_share: float = setting(0.0, "With needles: earlier, this share of the samples (from level 2 on) "
                                                 "puts its facts in the question's own segment instead: trained on "
                                                 "earlier keys alone, the model stops reading a key it sees directly "
                                                 "(results/h200-long-curriculum/: 1-2 of 25 at depth 1.0).")
    filler: str = setting("pydoc-topics", "Generated tasks: the text the facts hide in.")
    data: str | None = setting(None, "A local copy of a hub task's data (BABILong).")

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

    method: Any = method_field("hmt", "Any registered method (rmt, hmt, armt, ...); those with nothing of their own "
                                      "to train need --train lora or full.")
    data: DataSettings = field(default_factory=lambda: DataSettings(split="train"))
    train: TrainSettings = field(default_factory=TrainSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)  # answer training (--task)
    output_dir: str | None = setting(None, "Run folder [default: runs/BACKBONE-METHOD-TIME, the UTC time].")
    recipe: str | None = setting(None, "The recipe the run was started from (--recipe), named in its records, log "
                                       "and ledger.")
    out: str = setting("results", "Folder for the run's parquet records and ledger.csv.")
    name: str | None = setting(None, "The run's short name in tables and legends.")

    def __post_init__(self) -> None:
        if self.train.cuda_graphs and self.curriculum.task is not None:
            raise HmtbenchError("--cuda-graphs captures language-modelling windows (one shape per run); answer "
                                "training changes its shapes with the curriculum and reads its answers back each "
                                "step: train it without --cuda-graphs")
