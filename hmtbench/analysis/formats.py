"""Comparison tables as text: a boxed terminal table, markdown, CSV or JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hmtbench.analysis.cells import seeds_text
from hmtbench.analysis.compare import ROW_KEYS, Comparison, delta_label, sign_rule
from hmtbench.analysis.documents import BootstrapTest
from hmtbench.analysis.paired import PairedTest, SeedTests
from hmtbench.analysis.row_text import describe, settings_text
from hmtbench.analysis.table_text import (
    NOT_SIGNIFICANT,
    differing_settings,
    header,
    notes,
    provenance_lines,
    shown_keys,
    test_kind,
    text_rows,
)
from hmtbench.analysis.terminal import boxed
from hmtbench.errors import unknown_choice

FORMATS = ("table", "markdown", "csv", "json")
def render(tables: list[Comparison], fmt: str, per_seed: bool = False) -> str:
    """All tables in ``fmt``; the header of each states the direction, the cell format and the delta sign.
    ``per_seed``: the table and markdown list each seed's value under the table (CSV and JSON always hold them)."""
    writers = {"table": boxed, "markdown": _markdown, "csv": _csv, "json": _json}
    if fmt not in writers:
        raise unknown_choice("--format", fmt, FORMATS)
    return writers[fmt](tables, per_seed) if fmt in ("table", "markdown") else writers[fmt](tables)


def _markdown(tables: list[Comparison], per_seed: bool = False) -> str:
    parts = []
    for table in tables:
        names, rows, footnotes = text_rows(table, "**{}**")
        _, common = shown_keys(table)
        align = ["---" if n in ROW_KEYS or n == "variant" else "--:" for n in names]
        lines = [header(table).replace(table.metric, f"**{table.metric}**", 1).replace("* = best", "bold = best"), ""]
        if common:
            lines += [f"settings: {describe(common)}", ""]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in [names, align, *rows]]
        below = notes(table, footnotes, per_seed)
        lines += ["", *(f"- {line}" for line in below)] if below else []
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def records(table: Comparison) -> list[dict[str, Any]]:
    """One flat dict per row: keys, per method mean / std / n seeds / 95% interval / repeats / per-seed values, the
    deltas (whether each is significant, and its paired test) and the best methods."""
    out = []
    for row in table.rows:
        record: dict[str, Any] = {"metric": table.metric, "direction": table.direction, **row.key}
        for method in table.methods:
            cell = row.cells.get(method)
            record[method] = cell.mean if cell else None
            record[f"{method}_std"] = cell.std if cell else None
            record[f"{method}_n"] = cell.count if cell else 0
            record[f"{method}_ci_low"], record[f"{method}_ci_high"] = (cell.low, cell.high) if cell else (None, None)
            record[f"{method}_repeats"] = cell.repeats if cell else 0
            record[f"{method}_per_seed"] = "; ".join(f"{seeds_text(m)}: {m.value!r}" for m in cell.measurements) \
                if cell else None
        for pair in table.pairs:
            label, test = delta_label(pair), row.paired.get(pair)
            record[label] = row.deltas.get(pair)
            record[f"{label}{NOT_SIGNIFICANT}"] = pair in row.unclear
            record[f"{label} paired test"] = test_kind(test)
            record[f"{label} paired p"] = test.p if test else None
            bootstrap = isinstance(test, BootstrapTest)
            record[f"{label} paired low"] = test.low if bootstrap else None
            record[f"{label} paired high"] = test.high if bootstrap else None
        record["best"] = ";".join(row.best)
        out.append(record)
    return out


def variant_records(table: Comparison) -> list[dict[str, Any]]:
    """One flat dict per variant test (``Comparison.variant_tests``): its key, the method, the settings that differ
    on each side and the paired test (its numbers, p, significant)."""
    out = []
    for found in table.variant_tests:
        first, second = differing_settings(found)
        out.append({"metric": table.metric, "direction": table.direction, **found.key, "variant_test": found.method,
                    "variant_first": settings_text(first), "variant_second": settings_text(second),
                    **_test_fields(found.test)})
    return out


def _csv(tables: list[Comparison]) -> str:
    """The rows of every table, then its variant tests (rows with ``variant_test`` set)."""
    import pandas as pd

    frame = pd.DataFrame([r for table in tables for r in (*records(table), *variant_records(table))])
    return frame.to_csv(index=False).rstrip("\n")


def _test_fields(test: PairedTest | SeedTests | BootstrapTest) -> dict[str, Any]:
    """A paired test's numbers, flat (a per-seed test: its sums, largest p and each seed's counts as text)."""
    if isinstance(test, SeedTests):
        numbers = {"gained": test.gained, "lost": test.lost, "samples": test.samples, "p": test.p,
                   "per_seed": "; ".join(f"{seed}: +{t.gained} / -{t.lost}, p = {t.p:.3g}" for seed, t in test.tests)}
    else:
        numbers = vars(test)
    return {"paired test": test_kind(test), **numbers, "significant": test.significant}


def _test_json(test: PairedTest | SeedTests | BootstrapTest) -> dict[str, Any]:
    fields = _test_fields(test)
    return {"test": fields.pop("paired test"), **fields}


def _json(tables: list[Comparison]) -> str:
    payload = []
    for table in tables:
        rows = [{"key": row.key, "best": row.best,
                 "cells": {m: {**dataclasses.asdict(c), "repeats": c.repeats} for m, c in row.cells.items()},
                 "deltas": {delta_label(p): v for p, v in row.deltas.items()},
                 "not_significant": [delta_label(p) for p in row.unclear],
                 "paired_tests": {delta_label(p): _test_json(t) for p, t in row.paired.items()}} for row in table.rows]
        variants = [{"key": found.key, "method": found.method, "first": found.first, "second": found.second,
                     **_test_json(found.test)} for found in table.variant_tests]
        payload.append({"metric": table.metric, "direction": table.direction, "sign": sign_rule(table.direction),
                        "methods": table.methods, "rows": rows, "notes": table.notes,
                        "provenance": provenance_lines(table), "variant_tests": variants})
    return json.dumps(payload, indent=2, ensure_ascii=False, default=_json_value)


def _json_value(value: Any) -> Any:
    """A value json has no type for: a dataclass (a recipe's training tokens over seeds) as its fields, else text."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)
