"""Reading ``.jsonl`` files line by line, with one clear error naming the file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

from hmtbench.errors import HmtbenchError


def read_jsonl(path: Path, fields: tuple[str, ...], what: str = "file") -> list[tuple[int, dict]]:
    """(line number, row) of every non-empty line; a bad line or a missing field is one clear error."""
    if not path.is_file():
        raise HmtbenchError(f"{what} '{path}' does not exist; check the path")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HmtbenchError(f"{path}:{number} is not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise HmtbenchError(f"{path}:{number} is not a JSON object; every line needs {', '.join(fields)}")
        for name in fields:
            if name not in row:
                raise HmtbenchError(f"{path}:{number} has no '{name}' field; every line needs {', '.join(fields)}")
        rows.append((number, row))
    if not rows:
        raise HmtbenchError(f"{what} '{path}' holds no sample")
    return rows
