"""Measuring speed and memory: timing a workload (``measure``) and where a step's time goes (``profile``).

The `hmtbench bench` command itself lives in ``hmtbench.commands.bench``.
"""

from __future__ import annotations

from hmtbench.errors import HmtbenchError


def parse_counts(text: str, flag: str) -> list[int]:
    """'2k,4k,64k' -> [2048, 4096, 65536] (k = 1024); every count positive."""
    counts = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        scale = 1024 if part.endswith("k") else 1
        try:
            counts.append(int(part.removesuffix("k")) * scale)
        except ValueError:
            raise HmtbenchError(f"{flag} takes comma-separated counts such as 2k,4k or 1,8; got '{part}'") from None
    if not counts or min(counts) < 1:
        raise HmtbenchError(f"{flag} needs positive counts, got '{text}'")
    return counts
