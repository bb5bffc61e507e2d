"""Measuring speed and memory: timing a workload (``measure``) and where a step's time goes (``profile``).

The `hmtbench bench` command itself lives in ``hmtbench.commands.bench``.
"""

from __future__ import annotations

from hmtbench.errors import HmtbenchError


def parse_counts(text: str, flag: str) -> list[int]:
    """'2k,4k,64k,1m' -> [2048, 4096, 65536, 1048576] (k = 1024, m = 1024 k); every count positive."""
    counts = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        scale = {"k": 1024, "m": 1024**2}.get(part[-1:], 1)
        try:
            counts.append(int(part.rstrip("km")) * scale)
        except ValueError:
            raise HmtbenchError(f"{flag} takes comma-separated counts such as 2k,4k or 1,8; got '{part}'") from None
    if not counts or min(counts) < 1:
        raise HmtbenchError(f"{flag} needs positive counts, got '{text}'")
    return counts
