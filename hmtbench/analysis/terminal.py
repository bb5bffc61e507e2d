"""The comparison as a terminal table at most WIDTH columns wide, whose numbers never break across lines.

Numbers sit in columns that never wrap; a table too wide for one line per cell first moves the keys that never vary
below it, then puts each cell's parts (value, interval, seeds) on lines of their own, then splits into tables of
fewer columns (the methods, then the deltas) under one another. Only names (keys, footnotes, notes) wrap, at spaces.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator

from hmtbench.analysis.compare import Comparison, describe
from hmtbench.analysis.formats import ALWAYS_SHOWN, header, notes, shown_keys, text_rows

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
    console = Console(file=out, width=WIDTH, color_system=None)
    for table in tables:
        grids, below = _layout(table, console, per_seed)
        console.print("\n".join(wrapped([header(table)])))
        for grid in grids:
            console.print(grid)
        console.print("\n".join(wrapped(below, indent="    ")) + "\n")
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()).rstrip()


def _layout(table: Comparison, console, per_seed: bool) -> tuple[list, list[str]]:
    """(tables to print, lines below them) of the first layout that fits."""
    last = None
    for grids, below in _layouts(table, per_seed):
        last = grids, below
        if all(_width(console, grid, "maximum") <= WIDTH for grid in grids):
            return last
    return last


def _layouts(table: Comparison, per_seed: bool) -> Iterator[tuple[list, list[str]]]:
    for always, then in ((ALWAYS_SHOWN, " "), ((), " "), ((), "\n")):
        keys, common = shown_keys(table, always)
        names, rows, footnotes = text_rows(table, "{}*", keys, then)
        below = ([f"settings: {describe(common)}"] if common else []) + notes(table, footnotes, per_seed)
        if then == "\n":
            yield _split(names, rows, len(keys)), below
        else:
            yield [_grid(names, rows, len(keys))], below


def _split(names: list[str], rows: list[list[str]], keys: int) -> list:
    """Tables of the key columns and as many value columns as fit WIDTH each, in order (one, if all fit)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=WIDTH, color_system=None)
    grids, columns = [], []
    for column in range(keys, len(names)):
        trial = _grid(_take(names, [*range(keys), *columns, column]), [_take(r, [*range(keys), *columns, column])
                                                                       for r in rows], keys)
        if columns and _width(console, trial, "maximum") > WIDTH:
            grids.append(_grid(_take(names, [*range(keys), *columns]),
                               [_take(r, [*range(keys), *columns]) for r in rows], keys))
            columns = []
        columns.append(column)
    grids.append(_grid(_take(names, [*range(keys), *columns]), [_take(r, [*range(keys), *columns]) for r in rows],
                       keys))
    return grids


def _take(values: list[str], positions: list[int]) -> list[str]:
    return [values[i] for i in positions]


def _grid(names: list[str], rows: list[list[str]], keys: int):
    """A rich table: key columns may wrap (names), value columns never do (numbers)."""
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for i, name in enumerate(names):
        if i < keys:
            grid.add_column(name.replace("_", "\n"), justify="left", overflow="fold")
        else:
            grid.add_column(name.replace(" vs ", " vs\n"), justify="right", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    return grid


def _width(console, grid, which: str) -> int:
    from rich.measure import Measurement

    wide = console.options.update_width(10 * WIDTH)  # measured unbounded: the console clamps to WIDTH
    return getattr(Measurement.get(console, wide, grid), which)
