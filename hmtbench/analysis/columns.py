"""Column names and value helpers that load, compare and plot share (so none of them imports another for these),
and runs grouped by position (``RunValues``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hmtbench.results.schema import COLUMN_NAMES

# Columns "config.<key>": the resolved configuration's settings that no column carries (load.config_settings).
CONFIG_PREFIX = "config."
# eval-qa: a list of {"depth", "n", "accuracy", "exact_match"}, one per needle depth present.
BY_DEPTH = "by_depth"
# Scores over the samples whose needle lies before the question (depth < 1), derived from by_depth when records are
# read: the retrieval a memory has to do, apart from the depth-1.0 keys that sit in the question's own segment and
# that a plain segment reads itself. With their Wilson interval, as the recorded scores.
DEEP_SCORES = {"accuracy_deep": "accuracy", "exact_match_deep": "exact_match"}
DEEP_BELOW = 1.0
# Metrics whose records may carry a 95% interval (newer records; older ones lack the columns).
INTERVAL_METRICS = ("ppl", "accuracy", "exact_match", *DEEP_SCORES)


def interval_columns(metric: str) -> tuple[str, str]:
    """The columns holding ``metric``'s 95% interval (bootstrap for ppl, Wilson for QA scores)."""
    return f"{metric}_ci_low", f"{metric}_ci_high"


# Every column compare and plot read: the schema's, plus those newer records add (absent ones read as missing).
READ_COLUMNS = list(dict.fromkeys([*COLUMN_NAMES, *(c for m in INTERVAL_METRICS for c in interval_columns(m)),
                                   BY_DEPTH, *DEEP_SCORES]))


def depth_totals(depths: Any, score: str) -> dict[float, tuple[float, int]]:
    """One record's by_depth as {depth: (score x n, n)}: for a 0/1 score, the samples right and the samples at that
    depth. Depths without samples or without the score are left out; no by_depth (another task, an older record): {}."""
    if not isinstance(depths, (list, tuple, np.ndarray)):
        return {}
    totals: dict[float, tuple[float, int]] = {}
    for item in depths:
        n, value = int(item["n"]), item.get(score)
        if n and value is not None and not pd.isna(value):
            depth = round(float(item["depth"]), 6)
            right, count = totals.get(depth, (0.0, 0))
            totals[depth] = (right + float(value) * n, count + n)
    return totals


def deep_counts(depths: Any, score: str) -> tuple[int, int] | None:
    """(samples right, samples) at depths below 1 in one record's by_depth; None when it holds none."""
    deep = [(right, n) for depth, (right, n) in depth_totals(depths, score).items() if depth < DEEP_BELOW]
    total = sum(n for _, n in deep)
    return (round(sum(right for right, _ in deep)), total) if total else None  # shares of 0/1 outcomes: whole


RECIPE_LABEL = "recipe "  # how analysis.load names the checkpoints of one recipe at several training seeds


def is_recipe_checkpoint(name: Any) -> bool:
    """Whether a checkpoint setting names one recipe's checkpoints at several training seeds
    (``analysis.load.recipe_checkpoints``)."""
    return isinstance(name, str) and name.startswith(RECIPE_LABEL)


def plain(value: Any) -> Any:
    """A pandas/numpy scalar as a plain Python value; missing values as None."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return value
    if value is None or pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


# A table splits its runs again and again (rows, methods, settings): it reads each column once as plain values
# and groups lists of row positions, never copies of the (wide) frame.
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

    def at(self, name: str, positions: Iterable[int]) -> list[Any]:
        """Column ``name``'s values at ``positions``, in their order."""
        column = self.column(name)
        return [column[p] for p in positions]

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
