"""The comparison as a terminal table at most WIDTH columns wide, whose numbers never break across lines.

No column wraps; a table too wide for one line per cell first moves the keys that never vary below it, then puts
each cell's parts (value, interval, seeds) on lines of their own, then splits into tables of fewer columns (the
methods, then the deltas) under one another, and last numbers its rows and names each row's keys below the tables.
Only the text under the tables (footnotes, notes) wraps, at spaces.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator

from hmtbench.analysis.compare import Comparison
from hmtbench.analysis.row_text import describe
from hmtbench.analysis.table_text import ALWAYS_SHOWN, header, notes, shown_keys, text_rows

WIDTH = 120  # the terminal table's width: long variant texts become numbered footnotes under it


def wrapped(lines: list[str], indent: str = "") -> list[str]:
    """Lines wrapped at WIDTH, at spaces only: a number, a path or a hash is never cut (a word longer than WIDTH
    keeps a line of its own)."""
    return [part for line in lines for part in textwrap.wrap(line, WIDTH, subsequent_indent=indent,
                                                               break_long_words=False, break_on_hyphens=False) or [""]]


def boxed(tables: list[Comparison], per_seed: bool = False) -> str:
    """Every table in the first layout that fits WIDTH; header, footnotes and notes wrapped."""
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=WIDTH, color_system=None, markup=False)  # "[ab12cd34]" is a hash, not a style
    for table in tables:
        grids, below = _layout(table, per_seed)
        console.print("\n".join(wrapped([header(table)])), soft_wrap=True)  # wrapped here, at spaces only
        for grid in grids:
            console.print(grid)
        console.print("\n".join(wrapped(below, indent="    ")) + "\n", soft_wrap=True)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).rstrip()


def _layout(table: Comparison, per_seed: bool) -> tuple[list, list[str]]:
    """(tables to print, lines below them) of the first layout that fits."""
    last = None
    for grids, below in _layouts(table, per_seed):
        last = grids, below
        if all(_table_width(grid) <= WIDTH for grid in grids):
            break
    return [_grid(*grid) for grid in last[0]], last[1]


Grid = tuple[list[str], list[list[str]], int]  # column names, rows of cell texts, how many key columns lead


def _layouts(table: Comparison, per_seed: bool) -> Iterator[tuple[list[Grid], list[str]]]:
    for always, then in ((ALWAYS_SHOWN, " "), ((), " "), ((), "\n")):
        keys, common = shown_keys(table, always)
        names, rows, footnotes = text_rows(table, "{}*", keys, then)
        below = ([f"settings: {describe(common)}"] if common else []) + notes(table, footnotes, per_seed)
        yield (_split((names, rows, len(keys))) if then == "\n" else [(names, rows, len(keys))]), below
    # keys too wide to repeat beside the numbers: a row number, and each row's keys in a line below
    keys, common = shown_keys(table, ())
    names, rows, footnotes = text_rows(table, "{}*", keys, "\n")
    labels = [f"({i})" for i in range(1, len(rows) + 1)]
    described = [f"{label} " + " · ".join(f"{k}={v}" for k, v in zip(keys, row[:len(keys)], strict=True) if v != "–")
                 for label, row in zip(labels, rows, strict=True)]
    below = ([f"settings: {describe(common)}"] if common else []) + described + notes(table, footnotes, per_seed)
    numbered = (["row", *names[len(keys):]], [[label, *row[len(keys):]] for label, row in zip(labels, rows,
                                                                                               strict=True)], 1)
    yield _split(numbered), below


def _split(grid: Grid) -> list[Grid]:
    """Tables of the key columns and as many value columns as fit WIDTH each, in order (one, if all fit)."""
    names, rows, keys = grid
    widths = _column_widths(grid)
    tables, columns = [], []
    for column in range(keys, len(names)):
        if columns and _width_of([*widths[:keys], *(widths[c] for c in columns), widths[column]]) > WIDTH:
            tables.append(columns)
            columns = []
        columns.append(column)
    tables.append(columns)
    picks = [[*range(keys), *columns] for columns in tables]
    return [([names[i] for i in pick], [[row[i] for i in pick] for row in rows], keys) for pick in picks]


def _headers(grid: Grid) -> list[str]:
    names, _, keys = grid
    return [name.replace("_", "\n") if i < keys else name.replace(" vs ", " vs\n") for i, name in enumerate(names)]


def _column_widths(grid: Grid) -> list[int]:
    """Each column's width on one line per cell line (no wrapping): its longest line, header included."""
    from rich.cells import cell_len

    _, rows, _ = grid
    return [max(cell_len(line) for text in (title, *(row[i] for row in rows)) for line in text.split("\n"))
            for i, title in enumerate(_headers(grid))]


def _width_of(widths: list[int]) -> int:
    return sum(widths) + 2 * len(widths)  # rich's SIMPLE_HEAD box: a leading space and two between columns


def _table_width(grid: Grid) -> int:
    return _width_of(_column_widths(grid))


def _grid(names: list[str], rows: list[list[str]], keys: int):
    """A rich table whose columns never wrap: keys left, numbers right."""
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, title in enumerate(_headers((names, rows, keys))):
        grid.add_column(title, justify="left" if i < keys else "right", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    return grid
