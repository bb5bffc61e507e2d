"""Comparison tables as text: a boxed terminal table, markdown, CSV or JSON."""

from __future__ import annotations

import io
import json
from typing import Any

from hmtbench.analysis.compare import ROW_KEYS, Cell, Comparison, delta_label, describe, sign_rule
from hmtbench.errors import unknown_choice
from hmtbench.methods import method_label

FORMATS = ("table", "markdown", "csv", "json")
ALWAYS_SHOWN = ("backbone", "dataset", "task")  # shown even when every row has the same value


def render(tables: list[Comparison], fmt: str) -> str:
    """All tables in ``fmt``; the header of each states the direction, the cell format and the delta sign."""
    writers = {"table": _boxed, "markdown": _markdown, "csv": _csv, "json": _json}
    if fmt not in writers:
        raise unknown_choice("--format", fmt, FORMATS)
    return writers[fmt](tables)


def header(table: Comparison) -> str:
    return (f"{table.metric} ({table.direction} is better); cells: mean ± std (n runs); * = best in row; "
            f"{sign_rule(table.direction)}")


def shown_keys(table: Comparison) -> tuple[list[str], dict[str, Any]]:
    """The key columns worth a column (always-shown ones and any that vary) and the settings common to all rows."""
    keys = [*ROW_KEYS, "variant"]
    values = {k: {row.key.get(k) for row in table.rows} for k in keys}
    shown = [k for k in keys if len(values[k]) > 1 or (k in ALWAYS_SHOWN and values[k] != {None})]
    common = {k: next(iter(values[k])) for k in keys if k not in shown and values[k] != {None}}
    return shown, common


def number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"


def cell_text(cell: Cell | None) -> str:
    if cell is None or (cell.mean is None and not cell.failed):
        return "–"
    text = "–" if cell.mean is None else number(cell.mean)
    if cell.count > 1 and cell.std is not None:
        text += f" ± {number(cell.std)} (n={cell.count})"
    return text + (f" [{cell.failed} failed]" if cell.failed else "")


def text_rows(table: Comparison, best: str) -> tuple[list[str], list[list[str]]]:
    """Column names and cell strings; ``best`` wraps the best cell of a row (e.g. '{}*')."""
    keys, _ = shown_keys(table)
    names = [*keys, *map(method_label, table.methods), *map(delta_label, table.pairs)]
    rows = []
    for row in table.rows:
        cells = [best.format(cell_text(row.cells.get(m))) if m in row.best else cell_text(row.cells.get(m))
                 for m in table.methods]
        deltas = ["–" if row.deltas.get(p) is None else f"{row.deltas[p]:+.2f}" for p in table.pairs]
        rows.append([_key_text(row.key.get(k)) for k in keys] + cells + deltas)
    return names, rows


def _key_text(value: Any) -> str:
    return "–" if value is None else str(value)


def _boxed(tables: list[Comparison]) -> str:
    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, width=250, color_system=None)
    for table in tables:
        names, rows = text_rows(table, "{}*")
        _, common = shown_keys(table)
        box = Table(title=header(table), caption=describe(common) or None, title_justify="left",
                    caption_justify="left")
        for name in names:
            box.add_column(name, justify="right" if name not in ROW_KEYS and name != "variant" else "left")
        for row in rows:
            box.add_row(*row)
        console.print(box)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def _markdown(tables: list[Comparison]) -> str:
    parts = []
    for table in tables:
        names, rows = text_rows(table, "**{}**")
        _, common = shown_keys(table)
        align = ["---" if n in ROW_KEYS or n == "variant" else "--:" for n in names]
        lines = [header(table).replace(table.metric, f"**{table.metric}**", 1).replace("* = best", "bold = best"), ""]
        if common:
            lines += [f"settings: {describe(common)}", ""]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in [names, align, *rows]]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def records(table: Comparison) -> list[dict[str, Any]]:
    """One flat dict per row: keys, then per method mean / std / n, then the deltas and the best methods."""
    out = []
    for row in table.rows:
        record: dict[str, Any] = {"metric": table.metric, "direction": table.direction, **row.key}
        for method in table.methods:
            cell = row.cells.get(method)
            record[method] = cell.mean if cell else None
            record[f"{method}_std"] = cell.std if cell else None
            record[f"{method}_n"] = cell.count if cell else 0
        record.update({delta_label(p): row.deltas.get(p) for p in table.pairs})
        record["best"] = ";".join(row.best)
        out.append(record)
    return out


def _csv(tables: list[Comparison]) -> str:
    import pandas as pd

    frame = pd.DataFrame([r for table in tables for r in records(table)])
    return frame.to_csv(index=False).rstrip("\n")


def _json(tables: list[Comparison]) -> str:
    payload = []
    for table in tables:
        rows = [{"key": row.key, "best": row.best,
                 "cells": {m: vars(c) for m, c in row.cells.items()},
                 "deltas": {delta_label(p): v for p, v in row.deltas.items()}} for row in table.rows]
        payload.append({"metric": table.metric, "direction": table.direction, "sign": sign_rule(table.direction),
                        "methods": table.methods, "rows": rows, "notes": table.notes})
    return json.dumps(payload, indent=2, ensure_ascii=False)
