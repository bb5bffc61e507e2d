"""A warning before the host kills a run for memory.

On Linux an allocation beyond the host's memory does not raise: the kernel's out-of-memory killer ends the process
(exit 137) with no message and no record (a CPU eval-qa of full context at 4k tokens, 125 samples a batch, died so
after 40 minutes). ``watch_host_memory`` polls the host's available memory from a daemon thread and, once, when it
runs low while this process holds most of the host's memory, says so on stderr with what to lower: a killed run's log
then says why it died. Device memory needs no watch: running out of it raises (``hmtbench.oom``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

LOW_AVAILABLE = 0.05  # warn below this share of the host's memory available...
MOST_HELD = 0.5  # ...when this process holds at least this share (another process's hunger is not ours to report)


@dataclass(frozen=True)
class HostMemory:
    """Bytes: the host's total and available memory, and this process's resident set."""

    total: int
    available: int
    held: int


def read_host_memory(meminfo: Path = Path("/proc/meminfo"),
                     statm: Path = Path("/proc/self/statm")) -> HostMemory | None:
    """The host's memory now, or None where /proc does not tell it (not Linux)."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        total, available = (int(fields[name].split()[0]) * 1024 for name in ("MemTotal", "MemAvailable"))
        held = int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, KeyError, ValueError, IndexError):
        return None
    return HostMemory(total, available, held)


def low_memory_warning(memory: HostMemory) -> str | None:
    """The warning to give at ``memory``, or None while there is room or another process holds the memory."""
    if memory.available >= LOW_AVAILABLE * memory.total or memory.held < MOST_HELD * memory.total:
        return None
    gib = 2**30
    return (f"warning: host memory nearly exhausted ({memory.available / gib:.1f} of {memory.total / gib:.1f} GiB "
            f"left, this run holds {memory.held / gib:.1f} GiB); if the system kills it (exit 137, no record), run "
            "again with a smaller --batch-size or --context-length")


@contextlib.contextmanager
def watch_host_memory(interval_s: float = 2.0, read: Callable[[], HostMemory | None] = read_host_memory,
                      warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Inside the block, warn once (``warn``: stderr) when ``low_memory_warning`` has something to say."""
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    if read() is None:  # nothing to watch on this system
        yield
        return
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            memory = read()
            message = low_memory_warning(memory) if memory is not None else None
            if message:
                warn(message)
                return

    thread = threading.Thread(target=poll, name="hmtbench-host-memory", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
