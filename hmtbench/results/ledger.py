"""The training ledger: one CSV row per trained chunk, beside the records in the results folder.

``train`` appends a row each time a stage finishes or stops at ``--max-minutes``, so a training run in chunks
(``--resume``) leaves one line per chunk: what it trained (method, stage, curriculum level, steps), the tokens it
read and the run's totals (``stage_tokens``, ``train_tokens``: every stage and chunk since the first tensors),
and what it cost (device minutes: wall time x processes) on which device at which commit. Small and plain, so a
budget can be read with ``column -s, -t`` or summed with pandas, and committed with the results.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

LEDGER = "ledger.csv"
FIELDS = ("created_at", "run_id", "recipe", "method", "stage", "curriculum_segments", "steps_from", "steps_to",
          "tokens", "stage_tokens", "train_tokens", "device_minutes", "device_name", "world_size", "git_commit",
          "git_dirty", "output_dir")


def append_ledger(out: str | Path, row: dict[str, Any], stage: str, outcome: Any) -> Path:
    """Append one chunk's line (``row``: its record's values; ``outcome``: the loop's ``StageOutcome``)."""
    path = Path(out) / LEDGER
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        **{name: row.get(name) for name in FIELDS},
        "stage": stage,
        "steps_from": outcome.end_step - outcome.steps,
        "steps_to": outcome.end_step,
        "tokens": outcome.tokens,
        "stage_tokens": outcome.stage_tokens,
        "device_minutes": round(outcome.wall_s * (row.get("world_size") or 1) / 60, 3),
    }
    new = not path.is_file()
    with path.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({name: "" if line[name] is None else line[name] for name in FIELDS})
    return path


def read_ledger(out: str | Path) -> list[dict[str, str]]:
    """The ledger's rows as strings (empty where none was written)."""
    path = Path(out) / LEDGER
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))
