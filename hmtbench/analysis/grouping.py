"""Runs grouped by position: a table splits its runs again and again (rows, methods, settings), so it reads each
column once as plain values and groups lists of row positions, never copies of the (wide) frame."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from hmtbench.analysis.columns import plain

Positions = list[int]  # rows of a ``RunValues``' frame, by position


class RunValues:
    """A frame's columns as plain Python values (``columns.plain``), each read once, when first asked for."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._columns: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.frame)

    def __contains__(self, column: str) -> bool:
        return column in self.frame

    def column(self, name: str) -> list[Any]:
        if name not in self._columns:
            self._columns[name] = [plain(value) for value in self.frame[name]]
        return self._columns[name]

    def split(self, positions: Iterable[int], keys: Sequence[str]) -> list[tuple[dict[str, Any], Positions]]:
        """``positions`` grouped by the values of ``keys``, missing values included, in sorted order of the keys;
        each group's positions in the order given."""
        columns = [self.column(key) for key in keys]
        found: dict[tuple, Positions] = {}
        for position in positions:
            found.setdefault(tuple(column[position] for column in columns), []).append(position)
        return [(dict(zip(keys, values, strict=True)), found[values]) for values in sorted(found, key=_order)]


def _order(values: tuple) -> tuple:
    """Missing values last, strings after numbers."""
    return tuple((v is None, isinstance(v, str), "" if v is None else v) for v in values)
