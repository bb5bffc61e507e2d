"""Several processes (``torchrun``): who am I, which device, gather and reduce.

Every helper is the identity in a single process (no ``WORLD_SIZE`` > 1 in the environment), so
the single-process code path never touches ``torch.distributed``. Launched, each process joins
the group from the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), on
``cuda:LOCAL_RANK`` with NCCL when GPUs are there, else on the CPU with gloo.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Iterable
from typing import Any

from hmtbench.errors import HmtbenchError


def launched() -> bool:
    """True when a launcher started several processes (torchrun sets WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True once this process belongs to a process group of more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return _dist().get_rank() if is_distributed() else 0


def world_size() -> int:
    return _dist().get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The process that writes files and prints (rank 0, or the only one)."""
    return rank() == 0


def setup(device: str = "auto", console: Any = None) -> str:
    """Join the launcher's process group if there is one; return the ``--device`` this process uses.

    A single process gets ``device`` back unchanged. Launched, ``auto``/``cuda`` become
    ``cuda:LOCAL_RANK`` (NCCL); ``cpu``, or no GPU, keep the CPU (gloo). Ranks other than 0
    print nothing (``console`` quiet, stdout to /dev/null); their errors still reach stderr.
    """
    if not launched():
        return device
    import torch
    import torch.distributed as dist

    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if device not in ("auto", "cuda"):
            raise HmtbenchError(
                f"--device {device} names one GPU, but each process of a launch takes cuda:LOCAL_RANK; "
                "leave --device auto (or pick GPUs with CUDA_VISIBLE_DEVICES)"
            )
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        atexit.register(_teardown)
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # for the rest of the process
        if console is not None:
            console.quiet = True
    return device


def with_world_size(config_json: str) -> str:
    """A record's resolved config, plus ``world_size`` when several processes made it (compare keeps them apart)."""
    if not is_distributed():
        return config_json
    return json.dumps({**json.loads(config_json), "world_size": world_size()}, sort_keys=True)


def barrier() -> None:
    if is_distributed():
        _dist().barrier()


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    _dist().all_gather_object(gathered, obj)
    return gathered


def from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (a collective: no process returns before all have called it)."""
    return gather_objects(obj)[0]


def mean(value: float) -> float:
    """The mean of ``value`` over all processes (for logging: a loss every process computed on its rows)."""
    if not is_distributed():
        return value
    return sum(gather_objects(value)) / world_size()


def deal(items: Iterable[Any]) -> list[tuple[int, Any]]:
    """(index, item) of the items this process takes: item k goes to rank k mod world (all of them alone)."""
    world, me = world_size(), rank()
    return [(k, item) for k, item in enumerate(items) if k % world == me]


def seed_step(seed: int, step: int) -> None:
    """Seed this rank's random draws (dropout) from (seed, step, rank): ranks draw different masks, and a
    resumed run draws the ones an uninterrupted run with as many processes would."""
    import torch

    torch.manual_seed(hash((seed, step, rank())) % 2**63)


def shard_rows(batch: Any) -> Any:
    """This process's contiguous slice of a global batch (B, ...): rows [r*B/W, (r+1)*B/W)."""
    if not is_distributed():
        return batch
    share = check_divides(batch.shape[0], "--batch-size")
    return batch[rank() * share : (rank() + 1) * share]


def check_divides(count: int, flag: str) -> int:
    """``count`` / world size, or a one-line error when the processes cannot share it evenly."""
    world = world_size()
    if count % world:
        raise HmtbenchError(f"{flag} {count} does not split evenly over {world} processes; use a multiple of {world}")
    return count // world


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
