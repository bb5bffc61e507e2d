"""A table cell: one method's runs in one row, as measurements over seeds.

Runs of one configuration at the same seeds on the same data (only the run id and time differ) are one measurement
taken twice: averaging them would add nothing, and their standard deviation of ~0 would read as certainty. They
count once. Runs at different seeds (the training's, ``train_seed``, or the evaluation's, ``seed``) are separate
measurements: the cell shows their mean, the spread over seeds (± std) and an interval in which that spread adds
to each run's own uncertainty, never replaces it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hmtbench.analysis.columns import RunValues, interval_columns, is_recipe_checkpoint
from hmtbench.results.schema import SHARE_METRICS
from hmtbench.stats import seed_spread_interval

SEED_COLUMNS = ("train_seed", "seed")  # what tells a method's measurements apart within one configuration
SEED_NAMES = {"train_seed": "train seed", "seed": "seed"}
NEWER_COLUMNS = ("train_seed",)  # seed columns some records predate: their value there is unknown, not another seed


@dataclass(frozen=True)
class Measurement:
    """The runs of one cell at one set of seeds on one data: identical repeats, counted once."""

    seeds: tuple[tuple[str, Any], ...]  # (("train_seed", 1), ("seed", 3407)); None where a record lacks one
    runs: tuple[str, ...]
    value: float  # the repeats' mean (equal up to a GPU's nondeterminism)
    low: float | None = None  # the repeats' 95% interval (mean of theirs), None where a record has none
    high: float | None = None


@dataclass
class Cell:
    """One method's runs in one row: the mean over measurements (seeds), their spread and a 95% interval."""

    mean: float | None
    std: float | None  # over seeds; None for a single measurement
    count: int  # measurements (seeds) behind the mean
    runs: list[str]  # every successful run id (repeats included)
    failed: int = 0  # failed / canceled runs shown with --include-failed
    low: float | None = None  # 95% interval: one measurement's own, or over seeds (see ``interval``)
    high: float | None = None
    measurements: list[Measurement] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # the runs' --name values, distinct, in sorted order
    selected_on: list[str | None] = field(default_factory=list)  # the splits the runs' configurations were chosen on
    paths: list[str] = field(default_factory=list)  # the checkpoint folders the runs read, as recorded
    interval: str | None = None  # how an interval over seeds was made: "bootstrap" (documents x seeds) | "combined"
    lone_seed: Any = None  # the train seed of a cell read at one seed of a recipe's several (a seeded row's gap)

    @property
    def repeats(self) -> int:
        """Runs beyond one per measurement: identical repeats that were counted once."""
        return len(self.runs) - len(self.measurements)

    def first_runs(self) -> list[str]:
        """One run per measurement (the first of its repeats)."""
        return [m.runs[0] for m in self.measurements]


def lone_seed_text(seed: Any) -> str:
    """The note on a cell read at one seed of a recipe's several (the row's other cells average over seeds)."""
    return f"train seed {seed} only"


def make_cell(runs: RunValues, positions: Sequence[int], metric: str, documents: Any = None) -> Cell:
    """The cell of the runs at ``positions`` (one method, one configuration); ``documents`` (``DocumentScores``)
    bootstraps the interval over seeds from per-document NLL where every measurement has it on the same documents."""
    status, value = runs.column("status"), runs.column(metric)
    ok = [p for p in positions if status[p] == "success" and value[p] is not None]

    def read(name: str) -> list[Any]:  # the successful runs' values; none where the records lack the column
        return runs.at(name, ok) if name in runs else []

    found = measurements(runs, ok, metric)
    values = np.array([m.value for m in found])
    cell = Cell(
        mean=float(values.mean()) if len(values) else None,
        std=float(values.std(ddof=1)) if len(values) > 1 else None,
        count=len(found),
        runs=[str(r) for r in read("run_id")],
        failed=len(positions) - len(ok),
        measurements=found,
        names=sorted({str(n) for n in read("name") if n is not None}),
        selected_on=sorted(set(read("selected_on")), key=lambda s: (s is None, s or "")),
        paths=sorted({str(p) for p in read("checkpoint_path") if p is not None}),
    )
    if len(found) == 1:
        cell.low, cell.high = found[0].low, found[0].high
        if is_recipe_checkpoint(next(iter(read("checkpoint")), None)):
            cell.lone_seed = dict(found[0].seeds).get("train_seed")
    elif len(found) > 1:
        booted = documents.interval(found) if documents is not None else None
        if booted is not None:
            (cell.low, cell.high), cell.interval = booted, "bootstrap"
        elif all(m.low is not None and m.high is not None for m in found):
            cell.low, cell.high = seed_spread_interval([m.value for m in found], [m.low for m in found],
                                                       [m.high for m in found])
            if metric in SHARE_METRICS:  # the normal part of the interval can pass a share's bounds
                cell.low, cell.high = max(cell.low, 0.0), min(cell.high, 1.0)
            cell.interval = "combined"
    return cell


def measurements(runs: RunValues, positions: Sequence[int], metric: str) -> list[Measurement]:
    """The runs at ``positions`` grouped into measurements: by seeds, then by data where two of one seed's runs
    name different data (``data_sha256``); a run without a data hash (older records) joins its seeds' first
    measurement, and one without a ``NEWER_COLUMNS`` value takes the one value the other runs have (a record made
    before ``train_seed`` existed, of the same checkpoint). Each is the mean of its runs, with the mean interval
    of those that recorded one (a repeat recorded before the interval columns existed has none)."""
    def read(name: str) -> list[Any]:
        return runs.at(name, positions)

    seeds = [name for name in SEED_COLUMNS if name in runs]
    columns = {name: read(name) for name in seeds}
    for column, values in columns.items():
        known = {v for v in values if v is not None}
        if column in NEWER_COLUMNS and len(known) == 1:
            columns[column] = [known.pop()] * len(values)
    keys = [tuple(zip(seeds, values, strict=True)) for values in zip(*columns.values(), strict=True)] if seeds \
        else [()] * len(positions)
    data = read("data_sha256") if "data_sha256" in runs else [None] * len(positions)
    ids = [str(r) for r in read("run_id")]
    values = np.array(read(metric), dtype=float)
    low, high = interval_columns(metric)
    recorded = low in runs and high in runs  # a missing bound reads NaN
    bounds = np.array([read(low), read(high)], dtype=float).T if recorded else np.full((len(positions), 2), np.nan)
    groups: dict[tuple, dict[Any, list[int]]] = {}
    for position, (key, sha) in enumerate(zip(keys, data, strict=True)):
        groups.setdefault(key, {}).setdefault(sha, []).append(position)
    found = []
    for key in sorted(groups, key=lambda k: tuple((v is None, v if v is not None else 0) for _, v in k)):
        by_data = groups[key]
        unknown = by_data.pop(None, [])
        parts = list(by_data.values()) or [[]]
        parts[0] = sorted(parts[0] + unknown)
        for part in parts:
            known = bounds[part][~np.isnan(bounds[part]).any(axis=1)]
            interval = (float(known[:, 0].mean()), float(known[:, 1].mean())) if len(known) else (None, None)
            found.append(Measurement(key, tuple(ids[i] for i in part), float(values[part].mean()), *interval))
    return found


def seeds_text(measurement: Measurement) -> str:
    """'train seed 1, seed 3407': the seeds a record has ('seed ?' where it has none)."""
    parts = [f"{SEED_NAMES[name]} {value}" for name, value in measurement.seeds if value is not None]
    return ", ".join(parts) or "seed ?"


def seed_labels(found: list[Measurement]) -> list[str]:
    """Each measurement by the seeds that tell it from the others ('train seed 2'), else by all of its seeds."""
    seeds = [dict(m.seeds) for m in found]
    names = [name for name, _ in found[0].seeds if len({s.get(name) for s in seeds}) > 1] if found else []
    return [", ".join(f"{SEED_NAMES[name]} {s.get(name)}" for name in names) or seeds_text(m)
            for m, s in zip(found, seeds, strict=True)]


def varying_seeds(cells: list[Cell]) -> dict[str, list[Any]]:
    """The seed columns whose values differ between the measurements of ``cells``, with their values."""
    values: dict[str, set] = {}
    for cell in cells:
        for measurement in cell.measurements:
            for name, value in measurement.seeds:
                values.setdefault(name, set()).add(value)
    return {name: sorted(v, key=lambda x: (x is None, x if x is not None else 0)) for name, v in values.items()}
