"""The comparison as a terminal table at most WIDTH columns wide, whose numbers never break across lines.

No column wraps; a table too wide for one line per cell first moves the keys that never vary below it, then puts
each cell's parts (value, interval, seeds) on lines of their own, then splits into tables of fewer columns (the
methods, then the deltas) under one another, and last numbers its rows and names each row's keys below the tables.
Only the text under the tables (footnotes, notes) wraps, at spaces.
"""

from __future__ import annotations

import io
import re
import textwrap
from collections.abc import Iterator
from typing import Any

from hmtbench.analysis.compare import Comparison
from hmtbench.analysis.row_text import describe
from hmtbench.analysis.table_text import ALWAYS_SHOWN, header, notes, shown_keys, text_rows, variant_footnotes

WIDTH = 120  # the terminal table's width: long variant texts become numbered footnotes under it
_EMOJI_LIKE = re.compile(r":\S*?:")  # what rich may read as an emoji code (":warning:") and replace


def wrapped(lines: list[str], indent: str = "") -> list[str]:
    """Lines wrapped at WIDTH, at spaces only: a number, a path or a hash is never cut (a word longer than WIDTH
    keeps a line of its own)."""
    return [part for line in lines for part in textwrap.wrap(line, WIDTH, subsequent_indent=indent,
                                                               break_long_words=False, break_on_hyphens=False) or [""]]


def boxed(tables: list[Comparison], per_seed: bool = False) -> str:
    """Every table in the first layout that fits WIDTH; header, footnotes and notes wrapped."""
    parts = []
    for table in tables:
        grids, below = _layout(table, per_seed)
        parts.append(_printed("\n".join(wrapped([header(table)]))))  # wrapped here, at spaces only
        parts += [_printed_grid(grid) for grid in grids]
        parts.append(_printed("\n".join(wrapped(below, indent="    ")) + "\n"))
    return "\n".join(line.rstrip() for line in "".join(parts).splitlines()).rstrip()


def _layout(table: Comparison, per_seed: bool) -> tuple[list[Grid], list[str]]:
    """(tables to print, lines below them) of the first layout that fits."""
    last = None
    for grids, below in _layouts(table, per_seed):
        last = grids, below
        if all(_table_width(grid) <= WIDTH for grid in grids):
            break
    return last


Grid = tuple[list[str], list[list[str]], int]  # column names, rows of cell texts, how many key columns lead


def _layouts(table: Comparison, per_seed: bool) -> Iterator[tuple[list[Grid], list[str]]]:
    under = notes(table, variant_footnotes(table), per_seed)  # alike under every layout
    for always, then in ((ALWAYS_SHOWN, " "), ((), " "), ((), "\n")):
        keys, common = shown_keys(table, always)
        names, rows, _ = text_rows(table, "{}*", keys, then)
        below = ([f"settings: {describe(common)}"] if common else []) + under
        yield (_split((names, rows, len(keys))) if then == "\n" else [(names, rows, len(keys))]), below
    # keys too wide to repeat beside the numbers: a row number, and each row's keys in a line below
    keys, common = shown_keys(table, ())
    names, rows, _ = text_rows(table, "{}*", keys, "\n")
    labels = [f"({i})" for i in range(1, len(rows) + 1)]
    described = [f"{label} " + " · ".join(f"{k}={v}" for k, v in zip(keys, row[:len(keys)], strict=True) if v != "–")
                 for label, row in zip(labels, rows, strict=True)]
    below = ([f"settings: {describe(common)}"] if common else []) + described + under
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
    return [max(cell_len(line) for text in {title, *(row[i] for row in rows)} for line in text.split("\n"))
            for i, title in enumerate(_headers(grid))]


def _width_of(widths: list[int]) -> int:
    return sum(widths) + 2 * len(widths)  # rich's SIMPLE_HEAD box: a leading space and two between columns


def _table_width(grid: Grid) -> int:
    return _width_of(_column_widths(grid))


def _printed(text: str) -> str:
    """``text`` as rich prints it, unwrapped: as it is, where rich has nothing to change in it."""
    return text + "\n" if _as_is(text) else _rich(text, soft_wrap=True)


def _printed_grid(grid: Grid) -> str:
    """A table as rich prints it (``_grid``); one that fits WIDTH, whose columns are a cell wide or wider and hold
    plain text alone, is laid out here, the same way, faster: a table of thousands of rows takes rich minutes."""
    names, rows, keys = grid
    widths = _column_widths(grid)
    if _width_of(widths) > WIDTH or 0 in widths or not all(map(_as_is, {*names, *(t for row in rows for t in row)})):
        return _rich(_grid(*grid))
    edge = " " * _width_of(widths)  # rich's SIMPLE_HEAD box: blank edges, a rule under the header
    lines = [edge, *_row_lines(_headers(grid), widths, keys, bottom=True), f" {'─' * (_width_of(widths) - 2)} "]
    for row in rows:
        lines += _row_lines(row, widths, keys)
    return "\n".join([*lines, edge, ""])


def _row_lines(texts: list[str], widths: list[int], keys: int, bottom: bool = False) -> list[str]:
    """One row of a table as lines: the key columns left-aligned, the others right-aligned (trailing spaces
    dropped, as rich does), each cell's lines at the top of the row (a header's at the bottom); two spaces between
    columns."""
    cells = [text.split("\n") for text in texts]
    height = max(map(len, cells))
    cells = [[""] * (height - len(c)) + c if bottom else c + [""] * (height - len(c)) for c in cells]
    return [" " + "  ".join(cell[line].ljust(width) if i < keys else cell[line].rstrip().rjust(width)
                            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))) + " "
            for line in range(height)]


def _as_is(text: str) -> bool:
    """Whether rich prints ``text`` unchanged: printable, a cell per character, nothing read as an emoji code."""
    from rich.cells import cell_len

    lines = text.split("\n")
    return all(line.isprintable() and cell_len(line) == len(line) for line in lines) and not _EMOJI_LIKE.search(text)


def _rich(renderable: Any, soft_wrap: bool = False) -> str:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=WIDTH, color_system=None, markup=False)  # "[ab12cd34]" is a hash, not a style
    console.print(renderable, soft_wrap=soft_wrap)
    return out.getvalue()


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
