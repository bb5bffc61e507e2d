"""The warning before the host kills a run for memory (hmtbench.hostmemory)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hmtbench.hostmemory import HostMemory, low_memory_warning, read_host_memory, watch_host_memory

GIB = 2**30


def test_it_warns_only_when_little_is_left_and_this_process_holds_most_of_it() -> None:
    assert low_memory_warning(HostMemory(24 * GIB, 10 * GIB, 12 * GIB)) is None  # room left
    assert low_memory_warning(HostMemory(24 * GIB, GIB // 2, 2 * GIB)) is None  # another process holds it
    message = low_memory_warning(HostMemory(24 * GIB, GIB // 2, 22 * GIB))
    assert message == ("warning: host memory nearly exhausted (0.5 of 24.0 GiB left, this run holds 22.0 GiB); if the "
                       "system kills it (exit 137, no record), run again with a smaller --batch-size or "
                       "--context-length")


def test_proc_is_read_in_bytes(tmp_path: Path) -> None:
    meminfo, statm = tmp_path / "meminfo", tmp_path / "statm"
    meminfo.write_text("MemTotal:       25165824 kB\nMemFree:          100 kB\nMemAvailable:    1048576 kB\n")
    statm.write_text("900000 5000 300 1 0 2000 0\n")
    assert read_host_memory(meminfo, statm) == HostMemory(24 * GIB, GIB, 5000 * os.sysconf("SC_PAGE_SIZE"))
    assert read_host_memory(tmp_path / "absent", statm) is None


def test_the_watch_warns_once_while_the_block_runs() -> None:
    readings = iter([HostMemory(24 * GIB, 12 * GIB, GIB)] * 3 + [HostMemory(24 * GIB, GIB // 4, 23 * GIB)] * 10)
    warned, done = [], threading.Event()

    def warn(message: str) -> None:
        warned.append(message)
        done.set()

    with watch_host_memory(interval_s=0.001, read=lambda: next(readings), warn=warn):
        assert done.wait(5)
    assert len(warned) == 1 and "0.2 of 24.0 GiB left" in warned[0]


def test_nothing_is_watched_where_the_system_does_not_tell() -> None:
    with watch_host_memory(interval_s=0.001, read=lambda: None, warn=lambda m: (_ for _ in ()).throw(AssertionError)):
        pass
    assert not [t for t in threading.enumerate() if t.name == "hmtbench-host-memory"]
