"""The tables of a results document, from compare's tables: every number linked to the record it comes from.

Three layouts (``report_spec.LAYOUTS``): compare's own (a column per method, the paper's deltas), one by context
length (a row per series of the accuracy-vs-length figure) and one per record (training and bench runs). Under
each table, the paired tests its differences were judged by and a line on where its numbers come from
(``report_provenance``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hmtbench.analysis.budgets import budget_summary
from hmtbench.analysis.cells import SEED_NAMES, lone_seed_text
from hmtbench.analysis.columns import plain
from hmtbench.analysis.compare import Comparison, Row, VariantTest, build, delta_label
from hmtbench.analysis.draw import METRIC_LABELS, length_label, titles
from hmtbench.analysis.paired import PAIRED_METRICS
from hmtbench.analysis.qa import LENGTHS, SAMPLE_COUNTS
from hmtbench.analysis.report_provenance import length_text, provenance, samples
from hmtbench.analysis.series import by_panel, entries, legend, ordered_series, setting_name
from hmtbench.analysis.table_text import bound, delta_text, differing_settings, number, paired_text, shown_keys
from hmtbench.errors import HmtbenchError
from hmtbench.methods import compared_pairs, method_label
from hmtbench.results.schema import METRIC_DIRECTION

NO_VALUE = "–"
_CHECKPOINT = re.compile(r"(checkpoint=)[^,;()\[]*\[([0-9a-f]{8})\]")


@dataclass
class Links:
    """Reference-style links from the document to records, ``[text][run_id]``, each defined once at its end."""

    base: Path  # the document's folder: targets are relative to it
    files: dict[str, str]  # run_id -> its record's file
    used: dict[str, None] = field(default_factory=dict)

    def to(self, text: str, run_id: str) -> str:
        self.used.setdefault(run_id)
        return f"[{text}][{run_id}]"

    def path(self, target: str | Path) -> str:
        return Path(os.path.relpath(Path(target).resolve(), self.base.resolve())).as_posix()

    def definitions(self) -> list[str]:
        return [f"[{run}]: {self.path(self.files[run])}" for run in self.used]


@dataclass
class TableContext:
    """What rendering one table needs besides its runs: links, checkpoint names, its records' folders."""

    links: Links
    names: dict[str, str]  # checkpoint sha256 prefix -> name
    folders: list[Path]
    variants: str = "checkpoint"  # which tests of one method in two settings are listed (report_spec.VARIANTS)
    tests_in: str | None = None  # a lengths table's paired tests listed there instead (the README's block points on)


def named(text: str, names: dict[str, str]) -> str:
    """Checkpoints shown as ``tail [sha8]`` renamed to the report's name for them (the hash kept)."""
    def rename(found: re.Match) -> str:
        name = next((n for key, n in names.items() if found.group(2).startswith(key[:8])), None)
        return f"{found.group(1)}{name} [{found.group(2)}]" if name else found.group(0)
    return _CHECKPOINT.sub(rename, text)


def cell_text(cell: Any, metric: str, runs: pd.DataFrame, links: Links, best: bool = False) -> str:
    """One cell: a 0/1 score of one measurement as right/n [Wilson %], else value [interval]; ± std over several
    seeds; the value linked to its record, further runs (identical repeats, or seeds) linked after it."""
    if cell is None or cell.mean is None:
        return NO_VALUE
    first = cell.runs[0]
    n = samples(runs.loc[first], metric) if metric in PAIRED_METRICS and cell.count == 1 else None
    value = f"{round(cell.mean * n)}/{n}" if n else number(cell.mean)
    text = links.to(value, first) if len(cell.runs) == 1 else value  # several runs: each linked below
    text = f"**{text}**" if best else text
    if cell.count > 1 and cell.std is not None:
        text += f" ± {number(cell.std)}"
    if cell.low is not None and cell.high is not None:
        text += f" [{cell.low * 100:.0f}–{cell.high * 100:.0f}%]" if n else f" [{bound(cell.low)}, {bound(cell.high)}]"
    if len(cell.runs) > 1:
        what = f"n={cell.count} seeds" if cell.count > 1 else "one measurement"  # identical repeats count once
        text += f" ({what}; runs " + ", ".join(links.to(label, r) for label, r in run_labels(cell)) + ")"
    if cell.lone_seed is not None:
        text += f" ({lone_seed_text(cell.lone_seed)})"
    return text


def run_labels(cell: Any) -> list[tuple[str, str]]:
    """(label, run id) for each run of a cell: the seeds that tell its measurements apart ('train seed 2'), else
    its position; an identical repeat is numbered after its measurement's first run."""
    varying = [i for i, (column, _) in enumerate(cell.measurements[0].seeds)
               if len({m.seeds[i][1] for m in cell.measurements}) > 1] if cell.count > 1 else []
    if not varying:
        return [(str(i), run) for i, run in enumerate(cell.runs, 1)]
    labels = []
    for measurement in cell.measurements:
        name = ", ".join(f"{SEED_NAMES[measurement.seeds[i][0]]} {measurement.seeds[i][1]}" for i in varying)
        labels += [(name if k == 0 else f"{name} ({k + 1})", run) for k, run in enumerate(measurement.runs)]
    return labels


def markdown_table(header: list[str], rows: list[list[str]], left: int | list[bool] = 1) -> list[str]:
    """A markdown table; the first ``left`` columns (or those ``left`` marks) are labels, the rest numbers
    (right-aligned)."""
    marks = left if isinstance(left, list) else [i < left for i in range(len(header))]
    align = ["---" if mark else "--:" for mark in marks]
    return [f"| {' | '.join(header)} |", f"| {' | '.join(align)} |", *(f"| {' | '.join(r)} |" for r in rows)]


def render_table(table_spec: Any, frame: pd.DataFrame, context: TableContext) -> list[str]:
    """The markdown lines of one table (caption, table, notes, tests, provenance)."""
    ok = frame[frame["status"].eq("success").fillna(False).astype(bool)]
    tested = None
    if table_spec.layout == "runs":
        lines, shown = _runs_table(table_spec, ok, context)
    else:
        # the tests pair each trained method with the untrained baselines of its row (compare's table); the lengths
        # layout shows the runs as the accuracy-vs-length figure draws them, every baseline run in its own line
        tested = build(ok, table_spec.metric, join_baselines=True)
        if not tested.rows:
            raise HmtbenchError(f"no runs with {table_spec.metric} in {', '.join(table_spec.records)}")
        if table_spec.layout == "methods":
            lines = _methods_table(tested, ok.set_index("run_id"), context)
        else:
            lines = _lengths_table(build(ok, table_spec.metric), tested, ok.set_index("run_id"), context)
        shown = ok[ok["run_id"].isin({r for row in tested.rows for c in row.cells.values() for r in c.runs})]
    caption = [table_spec.caption.strip(), ""] if table_spec.caption.strip() else []
    if tested is not None and (budgets := budget_summary(tested.rows)):
        lines += ["", f"- note: {budgets}"]
    hidden = int((frame["command"].isin(set(shown["command"])) & ~frame["run_id"].isin(set(ok["run_id"]))).sum())
    return [*caption, *lines, "", provenance(table_spec.metric, shown, tested, hidden, context, table_spec.layout),
            ""]


def _methods_table(table: Comparison, runs: pd.DataFrame, context: TableContext) -> list[str]:
    keys, _ = shown_keys(table)
    footnotes = list(dict.fromkeys(named(row.key["variant"], context.names) for row in table.rows
                                   if row.key.get("variant")))
    header = [*keys, *map(method_label, table.methods), *(delta_label(p) for p in table.pairs)]
    rows = []
    for row in table.rows:
        key = [_key_text(k, row.key.get(k), footnotes, context.names) for k in keys]
        cells = [cell_text(row.cells.get(m), table.metric, runs, context.links, m in row.best) for m in table.methods]
        rows.append(key + cells + [delta_text(row, pair) for pair in table.pairs])
    lines = [f"**{METRIC_LABELS.get(table.metric, table.metric)}** ({table.direction} is better)", "",
             *markdown_table(header, rows, len(keys))]
    notes = [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)]
    tests = [(_row_place(row, keys, footnotes, context.names), pair, test)
             for row in table.rows for pair, test in row.paired.items()]
    notes += [f"{place}{method_label(a)} vs {method_label(b)}: {paired_text(test)}" for place, (a, b), test in tests]
    notes += [_variant_test_text(found, context.names) for found in _variant_tests(table, context.variants)]
    return lines + ([""] + [f"- {note}" for note in notes] if notes else [])


def _key_text(name: str, value: Any, footnotes: list[str], names: dict[str, str]) -> str:
    if value is None:
        return NO_VALUE
    if name == "variant":
        return f"[{footnotes.index(named(value, names)) + 1}]"
    return length_text(value) if name in LENGTHS else str(value)


def _row_place(row: Row, keys: list[str], footnotes: list[str], names: dict[str, str]) -> str:
    parts = [f"{k} {_key_text(k, row.key.get(k), footnotes, names)}" for k in keys if row.key.get(k) is not None]
    return f"{', '.join(parts)}: " if parts else ""


def _variant_tests(table: Comparison, which: str) -> list[VariantTest]:
    """The table's variant tests, each pair of settings once: ``checkpoint``, those of one trained model (or none)
    under two evaluation settings; ``all``, any two settings of a method."""
    kept, seen = [], set()
    for found in table.variant_tests:
        if which == "checkpoint" and found.first.get("checkpoint") != found.second.get("checkpoint"):
            continue
        pair = frozenset((_settings_key(found.first), _settings_key(found.second), _key_key(found.key)))
        if pair not in seen:
            seen.add(pair)
            kept.append(found)
    return kept


def _settings_key(settings: dict[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in settings.items()))


def _key_key(key: dict[str, Any]) -> tuple:
    return ("key", *sorted((k, str(v)) for k, v in key.items()))


def _numbered_test(length: Any, first: int, second: int, method: str, test: Any) -> str:
    """'4k: #2 vs #1 (plain) +15 / -0 of 100, p = ...': a paired test between two numbered rows of a table."""
    where = length_label(length) if length else ""
    return f"{where}: #{first} vs #{second} ({method_label(method)}) {paired_text(test)}"


def _variant_test_line(found: VariantTest, row_of: dict[tuple, int], names: dict[str, str]) -> str:
    """A variant test by its rows' numbers where both cells are rows of the table, else by its settings."""
    first, second = (row_of.get(runs) for runs in found.runs)
    if first is None or second is None:
        return _variant_test_text(found, names)
    return _numbered_test(found.key.get("context_length"), first, second, found.method, found.test)


def _variant_test_text(found: VariantTest, names: dict[str, str]) -> str:
    first, second = differing_settings(found)
    where = "".join(f"{length_label(found.key[k])}, " for k in ("context_length",) if found.key.get(k))
    checkpoint = found.first.get("checkpoint")
    model = f" ({named(f'checkpoint={checkpoint}', names)})" if checkpoint else ""
    return (f"{where}{method_label(found.method)}{model} {_settings(first)} vs {_settings(second)}: "
            f"{paired_text(found.test)}")


def _settings(settings: dict[str, Any]) -> str:
    return ", ".join(f"{setting_name(k)}={v}" for k, v in sorted(settings.items()))


def _lengths_table(table: Comparison, tested: Comparison, runs: pd.DataFrame, context: TableContext) -> list[str]:
    """A row per series (method and the settings that keep its runs apart), a column per context length, rows
    numbered; under it the paired tests of ``tested`` (the same runs, baselines joined to trained methods' rows)."""
    panels = by_panel(entries(table), LENGTHS, join=SAMPLE_COUNTS)
    looks = legend((e for panel in panels.values() for e in panel), context.names)
    shown, _ = titles([dict(key) for key in panels], wrap=None)
    row_of: dict[tuple, int] = {}  # a cell's runs -> the number of its row
    lines = [f"**{METRIC_LABELS.get(table.metric, table.metric)}** ({table.direction} is better)"]
    count = 0
    for panel, title in zip(panels.values(), shown, strict=True):
        lengths = sorted({int(e.row.key["context_length"]) for e in panel})
        rows = []
        for series in ordered_series(panel):
            count += 1
            at = {int(e.row.key["context_length"]): e for e in panel if (e.method, e.own) == series}
            row_of.update({tuple(e.cell.runs): count for e in at.values()})
            rows.append([str(count), named(looks.labels[series], context.names)]
                        + [cell_text(at[n].cell, table.metric, runs, context.links) if n in at else NO_VALUE
                           for n in lengths])
        heading = [f"*{title}*", ""] if len(panels) > 1 else []
        lines += ["", *heading, *markdown_table(["#", "", *map(length_label, lengths)], rows, 2)]
    tests = _length_tests(tested, row_of, context.names, context.variants)
    if tests and context.tests_in:
        tests = [f"Paired tests of these rows on the same samples, seed by seed: [{context.tests_in}]"
                 f"({context.tests_in})."]
    return lines + (["", *tests] if tests else [])


def _length_tests(table: Comparison, row_of: dict[tuple, int], names: dict[str, str], variants: str) -> list[str]:
    """Paired tests at each length against plain, of the compared pairs (HMT vs RMT, ...) and of each memory against the
    strong baselines (``methods.baseline_pairs``), and of one checkpoint under two settings; pairs that answered
    every sample alike (+0 / -0) left out. Rows are named by their number (#)."""
    found: dict[tuple, str] = {}
    for row in table.rows:
        for (a, b), test in row.paired.items():
            runs = (tuple(row.cells[a].runs), tuple(row.cells[b].runs))
            if test.gained + test.lost and runs[0] in row_of and runs[1] in row_of:
                found.setdefault((row.key["context_length"], row_of[runs[0]], row_of[runs[1]]),
                                 "- " + _numbered_test(row.key["context_length"], row_of[runs[0]], row_of[runs[1]],
                                                       b, test))
    lines = [found[key] for key in sorted(found)]
    lines += [f"- {_variant_test_line(test, row_of, names)}" for test in _variant_tests(table, variants)
              if test.test.gained + test.test.lost]
    if not lines:
        return []
    which = "any two rows of one method" if variants == "all" else "one checkpoint under two settings"
    pairs = ", ".join(f"{method_label(a)} vs {method_label(b)}" for a, b in table.pairs if (a, b) in compared_pairs())
    compared = f"in the compared pairs ({pairs}), " if pairs else ""
    return [f"Tested on the same samples, against plain, {compared}each memory against the "
            f"strong baselines (full context, BM25) and as {which} (pairs that answered every sample alike left out):",
            "", *lines]


def _runs_table(table_spec: Any, runs: pd.DataFrame, context: TableContext) -> tuple[list[str], pd.DataFrame]:
    """A row per record: its method, where it sits (its training run, else its folder), the spec's columns, each
    number linked to the record."""
    if runs.empty:
        raise HmtbenchError(f"no successful runs in {', '.join(table_spec.records)}")
    columns = table_spec.columns or [table_spec.metric]
    missing = [c for c in columns if c not in runs]
    if missing:
        raise HmtbenchError(f"no column {', '.join(missing)} in the records of {', '.join(table_spec.records)}")
    runs = runs.sort_values(["created_at", "run_id"])
    rows = [[method_label(run["method"]), _run_name(run, context.folders)]
            + [_run_value(run, column, context.links) for column in columns] for _, run in runs.iterrows()]
    labels = [True, True, *(not _numbers(runs[c]) for c in columns)]
    return markdown_table(["method", "run", *map(setting_name, columns)], rows, labels), runs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _numbers(values: pd.Series) -> bool:
    """Whether a column holds numbers (right-aligned): by dtype, or by value for settings read as objects."""
    if values.dtype == bool:
        return False
    if pd.api.types.is_numeric_dtype(values):
        return True
    present = values.dropna()
    return not present.empty and all(map(_is_number, present))


def _numeric_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0 and all(map(_is_number, value))


def _run_name(run: pd.Series, folders: list[Path]) -> str:
    """A training run by its folder's last two parts; any other record by its folder under the table's records."""
    if plain(run["output_dir"]):
        return "/".join(Path(run["output_dir"]).parts[-2:])
    parent = Path(run["source_file"]).resolve().parent
    for folder in folders:
        if parent == folder.resolve() or folder.resolve() in parent.parents:
            return parent.relative_to(folder.resolve()).as_posix() if parent != folder.resolve() else parent.name
    return parent.name


def _run_value(run: pd.Series, column: str, links: Links) -> str:
    value = plain(run[column])
    if value is None:
        return NO_VALUE
    if _numeric_list(value):  # a value per layer (read_attention): their mean, three significant digits
        return f"{sum(map(float, value)) / len(value):.3g} (mean of {len(value)})"
    if column == "git_commit":
        return str(value)[:7]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if column in LENGTHS:
        return length_text(value)
    if column not in METRIC_DIRECTION:  # a setting, not a measurement
        return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"
    return links.to(f"{value:,}" if isinstance(value, int) else number(value), run["run_id"])
