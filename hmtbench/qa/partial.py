"""A QA evaluation's scored batches, kept as it goes so that a killed run resumes (``eval-qa --resume``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


class PartialRun:
    """Append-only JSONL of scored batches in the run's ``--out`` folder, named by what the run evaluates.

    Each line is one batch (its sample indices, records and wall seconds), flushed and fsynced before the next batch
    starts: a kill loses at most the batch in progress, and a torn last line is ignored. A resumed run skips the batches
    found here and scores the others exactly as an uninterrupted run would (``runner.batches`` cuts the same batches),
    so its final record is the uninterrupted one's. One file per process (``rank``).
    """

    def __init__(self, folder: str | Path, identity: Any, rank: int = 0) -> None:
        key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.path = Path(folder) / f".eval-qa-{key}-rank{rank}.partial.jsonl"

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> tuple[dict[int, dict[str, Any]], float]:
        """The records already scored, by sample index, and the wall seconds their batches took."""
        records: dict[int, dict[str, Any]] = {}
        wall_s = 0.0
        if not self.exists():
            return records, wall_s
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                batch = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short: its batch runs again
                break
            records.update(zip(batch["indices"], batch["records"], strict=True))
            wall_s += batch["wall_s"]
        return records, wall_s

    def add(self, indices: list[int], records: list[dict[str, Any]], wall_s: float) -> None:
        """Keep one scored batch, on disk before this returns."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"indices": indices, "records": records, "wall_s": wall_s}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
