"""Comparison tables as text: a boxed terminal table, markdown, CSV or JSON."""

from __future__ import annotations

import io
import json
import textwrap
from collections.abc import Iterator
from typing import Any

from hmtbench.analysis.compare import (
    ROW_KEYS,
    Cell,
    Comparison,
    Row,
    VariantTest,
    delta_label,
    describe,
    settings_text,
    sign_rule,
)
from hmtbench.analysis.paired import PairedTest
from hmtbench.errors import unknown_choice
from hmtbench.methods import method_label

FORMATS = ("table", "markdown", "csv", "json")
ALWAYS_SHOWN = ("backbone", "dataset", "task")  # shown even when every row has the same value


WIDTH = 120  # the terminal table's width: long variant texts become numbered footnotes under it
NOT_SIGNIFICANT = " n.s."


def render(tables: list[Comparison], fmt: str) -> str:
    """All tables in ``fmt``; the header of each states the direction, the cell format and the delta sign."""
    writers = {"table": _boxed, "markdown": _markdown, "csv": _csv, "json": _json}
    if fmt not in writers:
        raise unknown_choice("--format", fmt, FORMATS)
    return writers[fmt](tables)


def header(table: Comparison) -> str:
    single = "; one run: value [95% interval]" if any(c.low is not None for r in table.rows
                                                         for c in r.cells.values()) else ""
    return (f"{table.metric} ({table.direction} is better); cells: mean ± std (n runs){single}; * = best in row; "
            f"{sign_rule(table.direction)}")


def notes(table: Comparison, footnotes: list[str]) -> list[str]:
    """Lines under a table: the variants' footnotes, and what n.s. means where a delta carries it."""
    lines = [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)]
    paired = any(row.paired for row in table.rows)
    if any(row.unclear for row in table.rows):
        how = "p >= 0.05 where tested pairwise, else " if paired else ""
        lines.append(f"{NOT_SIGNIFICANT.strip()} = not significant: {how}the two methods' 95% intervals overlap")
    if any(_of_zero(row, pair) for row in table.rows for pair in table.pairs):
        lines.append("– where B's mean is 0: a change in % of 0 is undefined (the cells and paired tests stand)")
    return lines + paired_lines(table, footnotes) + variant_lines(table)


def _of_zero(row: Row, pair: tuple[str, str]) -> bool:
    """Whether the delta 'A vs B' of ``row`` is missing because B's mean is 0 (A's is known)."""
    first, second = (row.cells.get(method) for method in pair)
    return row.deltas.get(pair) is None and None not in (first, second) and first.mean is not None \
        and second.mean == 0


PAIRED_LEGEND = "(exact McNemar; +a / -b: samples only the first / only the second gets right):"


def paired_lines(table: Comparison, footnotes: list[str]) -> list[str]:
    """One line per delta tested on the same samples (``Row.paired``), with its counts and p; a variant row is
    named by its footnote's number."""
    tested = [(row, pair, test) for row in table.rows for pair, test in row.paired.items()]
    if not tested:
        return []
    varying, _ = shown_keys(table, always=())
    lines = [f"deltas on the same samples, tested pairwise {PAIRED_LEGEND}"]
    for row, (first, second), test in tested:
        where = ", ".join(f"[{footnotes.index(row.key[k]) + 1}]" if k == "variant" and row.key[k] in footnotes
                          else f"{k}={row.key[k]}" for k in varying if row.key.get(k) is not None)
        lines.append(f"  {where + ': ' if where else ''}{method_label(first)} vs {method_label(second)}: "
                     f"{paired_text(test)}")
    return lines


def variant_lines(table: Comparison) -> list[str]:
    """One line per method tested in two settings on the same samples (``Comparison.variant_tests``)."""
    if not table.variant_tests:
        return []
    varying, _ = shown_keys(table, always=())
    lines = [f"one method in two settings, same samples {PAIRED_LEGEND}"]
    for found in table.variant_tests:
        where = ", ".join(f"{k}={found.key[k]}" for k in varying if k in found.key)
        first, second = differing_settings(found)
        lines.append(f"  {where + ': ' if where else ''}{method_label(found.method)} {settings_text(first)} "
                     f"vs {settings_text(second)}: {paired_text(found.test)}")
    return lines


def differing_settings(found: VariantTest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings that tell a variant test's two rows apart, on each side."""
    names = [k for k in {**found.first, **found.second} if found.first.get(k) != found.second.get(k)]
    return ({k: found.first.get(k) for k in names}, {k: found.second.get(k) for k in names})


def paired_text(test: PairedTest) -> str:
    """``+gained / -lost of samples, p = ...`` (n.s. marked) of one paired test."""
    mark = "" if test.significant else NOT_SIGNIFICANT
    return f"+{test.gained} / -{test.lost} of {test.samples}, p = {test.p:.2g}{mark}"


def shown_keys(table: Comparison, always: tuple[str, ...] = ALWAYS_SHOWN) -> tuple[list[str], dict[str, Any]]:
    """The key columns worth a column (``always`` ones and any that vary) and the settings common to all rows."""
    keys = [*ROW_KEYS, "variant"]
    values = {k: {row.key.get(k) for row in table.rows} for k in keys}
    shown = [k for k in keys if len(values[k]) > 1 or (k in always and values[k] != {None})]
    common = {k: next(iter(values[k])) for k in keys if k not in shown and values[k] != {None}}
    return shown, common


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def bound(value: float) -> str:
    """An interval's end: three significant digits (the interval says how many of the value's digits hold)."""
    return number(value) if abs(value) >= 1000 else f"{value:.3g}"


def cell_text(cell: Cell | None, then: str = " ") -> str:
    """mean ± std (n=k), or one run's value [95% interval]; ``then`` goes before the part in brackets."""
    if cell is None or (cell.mean is None and not cell.failed):
        return "–"
    text = "–" if cell.mean is None else number(cell.mean)
    if cell.count > 1 and cell.std is not None:
        text += f" ± {number(cell.std)}{then}(n={cell.count})"
    elif cell.low is not None and cell.high is not None:
        text += f"{then}[{bound(cell.low)}, {bound(cell.high)}]"
    return text + (f"{then}[{cell.failed} failed]" if cell.failed else "")


def delta_text(row: Row, pair: tuple[str, str]) -> str:
    value = row.deltas.get(pair)
    if value is None:
        return "–"
    return f"{value:+.2f}" + (NOT_SIGNIFICANT if pair in row.unclear else "")


def text_rows(table: Comparison, best: str, keys: list[str] | None = None,
              then: str = " ") -> tuple[list[str], list[list[str]], list[str]]:
    """Column names, cell strings and the variants' footnotes (the variant column holds their numbers);
    ``best`` wraps the best cell of a row (e.g. '{}*'), ``keys`` are the key columns (default: shown_keys)."""
    keys = shown_keys(table)[0] if keys is None else keys
    names = [*keys, *map(method_label, table.methods), *map(delta_label, table.pairs)]
    footnotes = list(dict.fromkeys(row.key["variant"] for row in table.rows if row.key.get("variant")))
    rows = []
    for row in table.rows:
        cells = [best.format(cell_text(row.cells.get(m), then)) if m in row.best else cell_text(row.cells.get(m), then)
                 for m in table.methods]
        variant = row.key.get("variant")
        key = {**row.key, "variant": f"[{footnotes.index(variant) + 1}]" if variant else None}
        rows.append([_key_text(key.get(k)) for k in keys] + cells + [delta_text(row, p) for p in table.pairs])
    return names, rows, footnotes


def _key_text(value: Any) -> str:
    return "–" if value is None else str(value)


def _wrapped(lines: list[str], indent: str = "") -> list[str]:
    return [part for line in lines for part in textwrap.wrap(line, WIDTH, subsequent_indent=indent) or [""]]


def _boxed(tables: list[Comparison]) -> str:
    """Terminal tables at most WIDTH characters wide, in the first layout that fits; header and footnotes wrapped."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=WIDTH, color_system=None)
    for table in tables:
        layouts = list(_layouts(table, console))
        box_, below, _ = next((layout for layout in layouts if layout[2]), layouts[-1])
        console.print("\n".join(_wrapped([header(table)])))
        console.print(box_)
        console.print("\n".join(_wrapped(below, indent="    ")) + "\n")
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).rstrip()


def _layouts(table: Comparison, console) -> Iterator[tuple[Any, list[str], bool]]:
    """Ever more compact layouts: one line per row; then keys that never vary below the table, not as columns; then
    each cell's bracketed part ((n=k), [interval]) on a second line. Yields (table, lines below, fits WIDTH)."""
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    for always, then in ((ALWAYS_SHOWN, " "), ((), " "), ((), "\n")):
        keys, common = shown_keys(table, always)
        names, rows, footnotes = text_rows(table, "{}*", keys, then)
        grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for name in names:
            key = name in keys
            grid.add_column(name.replace("_", "\n") if key else name.replace(" vs ", " vs\n"),
                            justify="left" if key else "right", overflow="fold")
        for row in rows:
            grid.add_row(*row)
        below = [f"settings: {describe(common)}"] if common else []
        wide = console.options.update_width(10 * WIDTH)  # measured unbounded: the console clamps to WIDTH
        yield grid, below + notes(table, footnotes), Measurement.get(console, wide, grid).maximum <= WIDTH


def _markdown(tables: list[Comparison]) -> str:
    parts = []
    for table in tables:
        names, rows, footnotes = text_rows(table, "**{}**")
        _, common = shown_keys(table)
        align = ["---" if n in ROW_KEYS or n == "variant" else "--:" for n in names]
        lines = [header(table).replace(table.metric, f"**{table.metric}**", 1).replace("* = best", "bold = best"), ""]
        if common:
            lines += [f"settings: {describe(common)}", ""]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in [names, align, *rows]]
        below = notes(table, footnotes)
        lines += ["", *(f"- {line}" for line in below)] if below else []
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def records(table: Comparison) -> list[dict[str, Any]]:
    """One flat dict per row: keys, per method mean / std / n / 95% interval, the deltas (and whether each is
    significant) and the best methods."""
    out = []
    for row in table.rows:
        record: dict[str, Any] = {"metric": table.metric, "direction": table.direction, **row.key}
        for method in table.methods:
            cell = row.cells.get(method)
            record[method] = cell.mean if cell else None
            record[f"{method}_std"] = cell.std if cell else None
            record[f"{method}_n"] = cell.count if cell else 0
            record[f"{method}_ci_low"], record[f"{method}_ci_high"] = (cell.low, cell.high) if cell else (None, None)
        for pair in table.pairs:
            record[delta_label(pair)] = row.deltas.get(pair)
            record[f"{delta_label(pair)}{NOT_SIGNIFICANT}"] = pair in row.unclear
            test = row.paired.get(pair)
            record[f"{delta_label(pair)} paired p"] = test.p if test else None
        record["best"] = ";".join(row.best)
        out.append(record)
    return out


def variant_records(table: Comparison) -> list[dict[str, Any]]:
    """One flat dict per variant test (``Comparison.variant_tests``): its key, the method, the settings that differ
    on each side and the paired test (gained, lost, samples, p, significant)."""
    out = []
    for found in table.variant_tests:
        first, second = differing_settings(found)
        out.append({"metric": table.metric, "direction": table.direction, **found.key, "variant_test": found.method,
                    "variant_first": settings_text(first), "variant_second": settings_text(second),
                    **vars(found.test), "significant": found.test.significant})
    return out


def _csv(tables: list[Comparison]) -> str:
    """The rows of every table, then its variant tests (rows with ``variant_test`` set)."""
    import pandas as pd

    frame = pd.DataFrame([r for table in tables for r in (*records(table), *variant_records(table))])
    return frame.to_csv(index=False).rstrip("\n")


def _json(tables: list[Comparison]) -> str:
    payload = []
    for table in tables:
        rows = [{"key": row.key, "best": row.best,
                 "cells": {m: vars(c) for m, c in row.cells.items()},
                 "deltas": {delta_label(p): v for p, v in row.deltas.items()},
                 "not_significant": [delta_label(p) for p in row.unclear],
                 "paired_tests": {delta_label(p): vars(t) for p, t in row.paired.items()}} for row in table.rows]
        variants = [{"key": found.key, "method": found.method, "first": found.first, "second": found.second,
                     **vars(found.test)} for found in table.variant_tests]
        payload.append({"metric": table.metric, "direction": table.direction, "sign": sign_rule(table.direction),
                        "methods": table.methods, "rows": rows, "notes": table.notes, "variant_tests": variants})
    return json.dumps(payload, indent=2, ensure_ascii=False)
