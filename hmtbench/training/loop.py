"""The one training loop: set-up, then forward / backward / accumulate / clip / step / log / checkpoint.

Per-method behaviour (memory, recall, BPTT truncation through ``grad_segments``) lives in the
method and the shared segment loop; this file never asks which method it trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hmtbench import distributed
from hmtbench.checkpoints import apply_tensors, load_tensors, save_checkpoint
from hmtbench.errors import HmtbenchError
from hmtbench.methods.base import SegmentMethod
from hmtbench.training.config import TrainSettings
from hmtbench.training.graphed import GraphedSteps, MicroStep, micro_step, training_autocast
from hmtbench.training.objectives import StepLoss
from hmtbench.training.state import has_trainer_state, load_trainer_state, replace_folder, save_trainer_state


@dataclass
class StageOutcome:
    steps: int  # run by this process (a resumed stage: since it resumed)
    final_loss: float
    tokens: int  # read by those steps
    wall_s: float
    peak_gpu_mb: float | None
    objective: dict[str, Any]  # where the objective ended (the curriculum's level)
    start: int = 0  # the step the stage resumed from (0: it started here); ``steps`` were run after it
    stage_tokens: int = 0  # read by the stage from its first step, over every chunk it was trained in
    stage_s: float = 0.0  # wall seconds of the stage, over every chunk
    no_gradient: tuple[str, ...] = ()  # trainable tensors no step of the stage had given a gradient by its end

    @property
    def end_step(self) -> int:
        """The stage's step count when this process stopped (below its steps: ended by --max-minutes)."""
        return self.start + self.steps


def make_optimizer(params: list[torch.nn.Parameter], settings: TrainSettings, steps: int):
    """AdamW and the lr schedule of a stage of ``steps`` steps: linear warm-up, then the reference's step decay (x
    lr_decay every decay_every steps), or (``lr_schedule: linear``) transformers' linear schedule: from 0 up to the
    lr over the warm-up, then down to 0 at ``decay_horizon`` x ``steps`` (get_linear_schedule_with_warmup's
    factors, which RMT's trainer uses)."""
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = settings.warmup_for(steps)
    horizon = int(settings.decay_horizon * steps)

    def step_decay(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return settings.lr_decay ** (step // settings.decay_every)

    def linear(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (horizon - step) / max(1, horizon - warmup))

    factor = linear if settings.lr_schedule == "linear" else step_decay
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ObjectiveLoss(torch.nn.Module):
    """The objective's loss as one module call: DistributedDataParallel needs one forward per backward."""

    def __init__(self, model: SegmentMethod, objective: Any) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, *tensors: torch.Tensor) -> StepLoss:
        return self.objective.loss(self.model, *tensors)


def data_parallel(model: SegmentMethod, objective: Any, settings: TrainSettings):
    """The loss wrapped in DistributedDataParallel: gradients of the trainable tensors averaged over ranks.

    Each rank takes an equal slice of every global micro-batch (``--batch-size`` stays the global
    size). Every window scores the same number of tokens, so the mean of the ranks' mean losses is
    the single process's loss, and so are the averaged gradients (up to float summation order).
    """
    from torch.nn.parallel import DistributedDataParallel

    distributed.check_divides(settings.batch_size, "--batch-size")
    device_ids = [model.device.index] if model.device.type == "cuda" else None
    # the backbone's buffers (rotary tables) never change, so they need no broadcast each forward
    return DistributedDataParallel(ObjectiveLoss(model, objective), device_ids=device_ids, broadcast_buffers=False)


def train_stage(
    model: SegmentMethod,
    objective: Any,
    settings: TrainSettings,
    steps: int,
    folder: Path,
    meta: dict[str, Any],
    on_step: Callable[[int, dict[str, Any] | None], None] | None = None,
    deadline: float | None = None,
) -> StageOutcome:
    """Train ``model``'s trainable parameters on ``objective`` for ``steps`` optimizer steps, resuming from
    ``folder/last`` (``training/objectives.py``: language-modelling windows or answers with a curriculum).

    Checkpoints' meta gain ``stage_tokens`` (tokens this stage read, over every chunk) and ``train_tokens``
    (those plus ``meta["tokens_before"]``, what the tensors it started from had read): the run's training budget.
    ``deadline`` (``time.perf_counter()``): end the stage at the first logged step past it (``--max-minutes``
    counts from the first stage of a run; default: ``settings.max_minutes`` from this stage's start).
    ``settings.max_tokens``: end it, complete, at the first step whose ``train_tokens`` reaches that budget.
    A curriculum level that ends inside the stage leaves its tensors in ``folder/levelN/final`` (N from 1).
    """
    device = model.device
    torch.set_flush_denormal(True)  # CPU: denormal optimizer states otherwise slow each step by 30x
    params = [p for p in model.parameters() if p.requires_grad]
    names = {p: name for name, p in model.named_parameters() if p.requires_grad}
    optimizer, scheduler = make_optimizer(params, settings, steps)
    start, spent = _resume(model, optimizer, scheduler, objective, folder / "last")
    folder.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        _keep_log_until(folder / "log.jsonl", start)
    ddp = data_parallel(model, objective, settings) if distributed.is_distributed() else None
    forward = ddp if ddp is not None else ObjectiveLoss(model, objective)
    micro = micro_step(forward, training_autocast(device, settings.cuda_graphs), settings.grad_accum)
    graphed = None
    if settings.cuda_graphs:
        if ddp is not None:
            raise HmtbenchError("--cuda-graphs trains in a single process; several processes train without it")
        micro = graphed = GraphedSteps(micro, params)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began, tokens, loss_value = time.perf_counter(), 0, float("nan")
    if deadline is None and settings.max_minutes is not None:
        deadline = began + 60 * settings.max_minutes
    tokens_before, seconds_before = int(spent.get("tokens", 0)), float(spent.get("seconds", 0.0))
    silent: list[str] = []  # at the last logged step: the tensors no step had given a gradient

    def budget(done: int) -> dict[str, Any]:
        """The meta of a checkpoint at step ``done``: the step and the tokens read up to it."""
        stage_tokens = tokens_before + tokens
        return {**meta, "step": done, "stage_tokens": stage_tokens,
                "train_tokens": int(meta.get("tokens_before", 0)) + stage_tokens}

    def outcome_now(end: int) -> StageOutcome:
        """What the stage ran in this process up to step ``end``."""
        wall = time.perf_counter() - began
        return StageOutcome(end - start, loss_value, tokens, wall, _peak_mb(device), objective.state_dict(), start,
                            tokens_before + tokens, seconds_before + wall, tuple(silent))

    def spent_now() -> dict[str, float]:
        return {"tokens": tokens_before + tokens, "seconds": seconds_before + time.perf_counter() - began}

    limit = settings.max_file_bytes
    model.train()
    log_file = (folder / "log.jsonl").open("a") if distributed.is_main() else contextlib.nullcontext()
    with log_file as log:  # None on other ranks
        for step in range(start, steps):
            try:
                total, step_tokens, exact, grad_norm = _optimizer_step(micro, objective, settings, step, params,
                                                                       optimizer, scheduler, ddp, graphed, device)
            except torch.OutOfMemoryError as error:
                # the steps before this one count in the record and the ledger
                raise _saved_on_oom(error, model, optimizer, scheduler, objective, folder, budget(step), start,
                                    spent_now(), limit, outcome_now(step)) from None
            tokens += step_tokens
            done = step + 1
            # The host reads the device only for a number it needs: the curriculum's exact share (answer training,
            # every step) and the logged values; a language-modelling step otherwise queues work without waiting.
            exact_share = distributed.mean(torch.cat(exact).float().mean().item()) if exact else None
            position = objective.end_step(exact_share)
            entry = None
            if _out_of_time(settings, deadline, done) or _budget_spent(settings, budget(done)["train_tokens"]):
                steps = done  # this step is the stage's last: logged, and its final checkpoint saved
            if done % settings.log_every == 0 or done == steps or "advanced_to" in position:
                loss_value = distributed.mean(total.item())  # each rank's mean loss over its equal share of the windows
                entry = {
                    "step": done,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    **position,
                    "tokens_per_s": tokens / (time.perf_counter() - began),
                    "peak_mem_mb": _peak_mb(device),
                    "train_tokens": budget(done)["train_tokens"],  # the budget so far, over every stage and chunk
                    **({"no_gradient": silent} if (silent := without_gradient(optimizer, names)) else {}),
                    **({"recipe": meta["recipe"]} if meta.get("recipe") else {}),
                }
                if log is not None:
                    log.write(json.dumps(entry) + "\n")
                    log.flush()
            if distributed.is_main() and (done % settings.checkpoint_every == 0 or done == steps):
                _save(model, optimizer, scheduler, objective, folder / "last", budget(done), spent_now(), limit)
            if distributed.is_main() and "level_done" in position:  # each level a stage passes is evaluated alone
                _save(model, optimizer, scheduler, objective, folder / f"level{position['level_done']}" / "final",
                      budget(done), limit=limit)
            if on_step is not None:
                on_step(done, entry)  # None between logged steps: the bar advances, its numbers stay
            if done == steps:
                break
    model.eval()
    if distributed.is_main():
        _save(model, optimizer, scheduler, objective, folder / "final", budget(steps), limit=limit)
    distributed.barrier()  # the next stage starts from this checkpoint on every rank
    return outcome_now(steps)


def without_gradient(optimizer: torch.optim.Optimizer, names: dict[torch.nn.Parameter, str]) -> list[str]:
    """The trainable tensors no step has given a gradient yet (their AdamW first moment is exactly zero): they do
    not train. HMT's recall at two-segment contexts is one: with a single memory in the cache its attention weight
    is one whatever the query, so the query, key and summary prompt get none. A LoRA A matrix is one for the first
    step alone (its B starts at zero). One read-back for all tensors, at logged steps only."""
    moments = [(names[param], state["exp_avg"]) for param, state in optimizer.state.items()
               if "exp_avg" in state and param in names]
    if not moments:
        return []
    peaks = torch.stack([moment.detach().abs().amax().float() for _, moment in moments]).tolist()
    return [name for (name, _), peak in zip(moments, peaks, strict=True) if peak == 0]


def _keep_log_until(path: Path, step: int) -> None:
    """Keep the log lines of steps up to ``step`` (a resumed stage runs the later ones again and logs them anew);
    a line cut short by a kill goes too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text("".join(kept))
    os.replace(staging, path)


def _optimizer_step(micro: MicroStep, objective: Any, settings: TrainSettings, step: int,
                    params: list[torch.nn.Parameter], optimizer, scheduler, ddp, graphed: GraphedSteps | None,
                    device: torch.device) -> tuple[torch.Tensor, int, list[torch.Tensor], torch.Tensor]:
    """One optimizer step over ``grad_accum`` micro-batches: (mean loss on the device, tokens read, each
    micro-batch's exact answers (answer training), gradient norm before clipping)."""
    total = torch.zeros((), device=device)
    tokens, exact = 0, []
    if ddp is not None:
        distributed.seed_step(settings.seed, step)
    for index in range(settings.grad_accum):
        # the global micro-batch's index, so the data position is the same for any number of processes
        batch = objective.batch(step * settings.grad_accum + index, settings.batch_size)
        batch = [_to_device(distributed.shard_rows(t), device) for t in batch]
        with _sync_gradients(ddp, index == settings.grad_accum - 1):
            out = micro(*batch)  # forward and backward
        total += out.loss / settings.grad_accum
        tokens += out.tokens * distributed.world_size()
        if out.exact is not None:
            exact.append(out.exact)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)  # stays on the device
    optimizer.step()
    scheduler.step()
    if graphed is not None:
        graphed.zero_grad()  # in place: the graphs write into these gradients
    else:
        optimizer.zero_grad(set_to_none=True)
    return total, tokens, exact, grad_norm


class TrainingOutOfMemory(torch.OutOfMemoryError):
    """Out of device memory after the stage's ``steps_done`` steps (``steps_run`` of them in this process);
    ``saved``: the resumable checkpoint of the last one, if any; ``outcome``: what those steps ran (tokens, time),
    for the record and the ledger (None when this process finished none)."""

    def __init__(self, message: str, steps_done: int, steps_run: int, saved: Path | None,
                 outcome: StageOutcome | None = None) -> None:
        super().__init__(message)
        self.steps_done, self.steps_run, self.saved, self.outcome = steps_done, steps_run, saved, outcome


def _saved_on_oom(error: torch.OutOfMemoryError, model: SegmentMethod, optimizer, scheduler, objective: Any,
                  folder: Path, meta: dict[str, Any], start: int, spent: dict[str, float],
                  limit: int | None, outcome: StageOutcome) -> TrainingOutOfMemory:
    """The steps finished before the failing one are not lost: their weights, optimizer and curriculum state go to
    ``folder/last`` (the step that failed changed no weight: it fails in its forward or backward pass), so the run
    resumes from there with a smaller micro-batch instead of from the last periodic checkpoint."""
    optimizer.zero_grad(set_to_none=True)  # the failed step's partial gradients
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    saved, done = None, meta["step"]
    if done > start and distributed.is_main():
        saved = folder / "last"
        _save(model, optimizer, scheduler, objective, saved, meta, spent, limit)
    return TrainingOutOfMemory(str(error), done, done - start, saved, outcome if done > start else None)


def _budget_spent(settings: TrainSettings, train_tokens: int) -> bool:
    """Has the run read its ``train.max_tokens``? Every rank agrees (each counts its own micro-batches' tokens)."""
    if settings.max_tokens is None:
        return False
    return distributed.mean(float(train_tokens >= settings.max_tokens)) > 0


def _out_of_time(settings: TrainSettings, deadline: float | None, done: int) -> bool:
    """Past the ``--max-minutes`` deadline? Checked every ``log_every`` steps (a read every rank agrees on)."""
    if deadline is None or done % settings.log_every:
        return False
    return distributed.mean(float(time.perf_counter() > deadline)) > 0


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch onto the device without a host wait: a copy from pageable memory blocks until it is done."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _sync_gradients(ddp, last_micro_batch: bool):
    """Several processes: all-reduce gradients only on a step's last micro-batch (DDP's ``no_sync`` before)."""
    return ddp.no_sync() if ddp is not None and not last_micro_batch else contextlib.nullcontext()


def trainable_tensors(model: SegmentMethod) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _save(model, optimizer, scheduler, objective, folder: Path, meta: dict[str, Any],
          spent: dict[str, float] | None = None, limit: int | None = None) -> None:
    """Tensors and meta, plus (given what the stage has ``spent``) the trainer state: assembled in a staging folder,
    then swapped in. ``limit``: tensor files over it are written in parts (``hmtbench.tensorfiles``)."""
    tensors = trainable_tensors(model)
    if spent is None:
        save_checkpoint(folder, tensors, meta, max_file_bytes=limit)
        return
    staging = folder.with_name(f".{folder.name}.staging")
    save_checkpoint(staging, tensors, meta, max_file_bytes=limit)
    save_trainer_state(staging, optimizer, scheduler, meta["step"], _rng_states(), objective.state_dict(), spent,
                       limit)
    replace_folder(staging, folder)


def _rng_states() -> dict[str, torch.Tensor]:
    """The CPU generator's state, and each GPU's in a single process.

    Several processes reseed every step (distributed.seed_step), and reading every GPU's state from
    each rank would open a CUDA context on each GPU.
    """
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and not distributed.is_distributed():
        states.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return states


def _resume(model, optimizer, scheduler, objective, folder: Path) -> tuple[int, dict[str, float]]:
    """Restore tensors, optimizer, scheduler, RNG and the objective's position from ``folder``; return the step
    to continue from and what the stage had spent up to it (tokens, seconds)."""
    if not has_trainer_state(folder):
        return 0, {}
    step, rng, position, spent = load_trainer_state(folder, optimizer, scheduler)  # refuses old pickled states
    objective.load_state_dict(position)
    apply_tensors(model, load_tensors(folder), str(folder))
    torch.set_rng_state(rng["cpu"])
    cuda = [rng[f"cuda.{i}"] for i in range(sum(name.startswith("cuda.") for name in rng))]
    if cuda and torch.cuda.is_available() and not distributed.is_distributed():
        torch.cuda.set_rng_state_all(cuda)
    return step, spent


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
