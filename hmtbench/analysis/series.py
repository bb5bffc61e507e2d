"""A comparison table as figures need it: each method's cell per row, with the settings that set it apart."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hmtbench.analysis.columns import CONFIG_PREFIX
from hmtbench.analysis.compare import Cell, Comparison, Row
from hmtbench.analysis.labels import series_labels, shared_text
from hmtbench.analysis.labels import setting_name as setting_name  # where report_tables reads it
from hmtbench.analysis.row_text import order_methods, split_settings

ENGINE_PREFIX = f"{CONFIG_PREFIX}engine."  # engine switches: settings of a whole row (compile, CUDA graphs)



@dataclass(frozen=True)
class Entry:
    """One method's cell in one row. ``alike``: the engine switches every method of the row shares, which figures
    treat like the row's key; ``own``: the method's settings that keep its runs apart, with any its row-mates happen
    to share (memory_write=span beside a span-write HMT here, beside an older HMT there must not move a series to
    another panel)."""

    row: Row
    method: str
    cell: Cell
    alike: tuple[tuple[str, Any], ...]
    own: tuple[tuple[str, Any], ...]
    full: tuple[tuple[str, Any], ...] = ()  # every run setting of the method's runs in the row

    def place(self, drop: Sequence[str] = ()) -> tuple[tuple[str, Any], ...]:
        """The row's key without ``drop`` and the variant text, with the alike settings: where the cell belongs."""
        key = tuple((k, v) for k, v in self.row.key.items() if k not in (*drop, "variant"))
        return key + self.alike


def entries(table: Comparison) -> list[Entry]:
    """Every (row, method) cell with a value, once: variant rows repeat the other methods' cells."""
    found: dict[Hashable, Entry] = {}
    for row in table.rows:
        alike, own = split_settings(row.settings)
        for method in order_methods(row.cells):
            cell = row.cells[method]
            switches = {k: v for k, v in alike.items() if k.startswith(ENGINE_PREFIX)}
            mine = {**{k: v for k, v in alike.items() if k not in switches}, **own.get(method, {})}
            entry = Entry(row, method, cell, tuple(switches.items()), tuple(mine.items()),
                          tuple(row.full.get(method, {}).items()))
            if cell.mean is not None:
                found.setdefault((entry.place(), method, entry.own), entry)
    return list(found.values())


def grouped(items: Iterable[Entry], key) -> dict[Hashable, list[Entry]]:
    out: dict[Hashable, list[Entry]] = {}
    for item in items:
        out.setdefault(key(item), []).append(item)
    return out


def variant_index(series: Sequence[tuple[str, tuple]]) -> dict[tuple, int]:
    """Which of its method's series each one is (0, 1, ...): its line style or hatch."""
    return {s: [t for t in series if t[0] == s[0]].index(s) for s in series}


@dataclass
class Legend:
    """Label and variant number of each (method, settings) series of a figure: one look in every panel; ``shared``:
    the settings every series of a method has, said once under the figure instead of in each label."""

    labels: dict[tuple, str]
    index: dict[tuple, int]
    shared: str = ""


def legend(items: Iterable[Entry], checkpoint_names: dict[str, str] | None = None) -> Legend:
    """Labels from the runs' names where every cell of a series has the same one, else from its settings
    (``checkpoint_names``: sha256 prefix -> the name a checkpoint goes by, as a report names them)."""
    items = list(items)
    series = ordered_series(items)
    names, paths = {}, {}
    for key in series:
        cells = [e.cell for e in items if (e.method, e.own) == key]
        found = {name for cell in cells for name in cell.names}
        names[key] = found.pop() if len(found) == 1 and all(cell.names for cell in cells) else None
        paths[key] = min((path for cell in cells for path in cell.paths), default=None)
    return Legend(series_labels(series, names, paths, checkpoint_names), variant_index(series), shared_text(series))


def by_panel(items: list[Entry], drop: Sequence[str], into_lines: str = "train_mode",
             join: Sequence[str] = ()) -> dict[tuple, list[Entry]]:
    """Panels by the row key without ``drop``; where ``into_lines`` varies in a panel (untrained plain and full next
    to LoRA-trained RMT and HMT), it becomes a setting of the lines instead of splitting the panel. Own settings are
    aligned over every panel: the legend is one for the figure, so a run alone in its panel keeps what names it.
    ``join``: keys left out of the panels too (the sample count of an experiment's series) unless a line would then
    hold two points at one place of ``drop`` (one series evaluated twice at one length with other sample counts)."""
    if join:
        joined = by_panel(items, (*drop, *join), into_lines)
        places = [(e.method, e.own, key, tuple(e.row.key.get(k) for k in drop))
                  for key, panel in joined.items() for e in panel]
        if len(places) == len(set(places)):
            return joined
    grouped_items = grouped(aligned(items), lambda e: e.place(drop=(*drop, into_lines)))
    if all(len({e.row.key.get(into_lines) for e in panel}) == 1 for panel in grouped_items.values()):
        return {key + ((into_lines, panel[0].row.key.get(into_lines)),): panel for key, panel in grouped_items.items()}
    # it varies in some panel: a setting of the lines in every panel, so that no panel's title claims one value
    return {key: [replace(e, own=e.own + (((into_lines, e.row.key[into_lines]),) if e.row.key.get(into_lines) else ()))
                  for e in panel] for key, panel in grouped_items.items()}


def aligned(items: list[Entry]) -> list[Entry]:
    """The entries with one set of own settings per method across ``items`` (a panel's rows): every setting that
    keeps the method's runs apart in any row, valued from each entry's full settings. A row tells apart only the
    runs it holds, so without this one run's series would break where another run joins it at some lengths."""
    names: dict[str, list[str]] = {}
    for entry in items:
        names.setdefault(entry.method, [])
        names[entry.method] += [n for n, _ in entry.own if n not in names[entry.method]]
    out = []
    for entry in items:
        full = dict(entry.full)
        own = dict(entry.own)
        out.append(replace(entry, own=tuple((n, full.get(n, own.get(n))) for n in names[entry.method])))
    return out


def ordered_series(items: Iterable[Entry]) -> list[tuple[str, tuple[tuple[str, Any], ...]]]:
    """The distinct (method, own settings) of ``items``: methods in the registry's order, each's series as found."""
    found = list(dict.fromkeys((e.method, e.own) for e in items))
    order = order_methods({m for m, _ in found})
    return sorted(found, key=lambda s: (order.index(s[0]), bool(s[1]), found.index(s)))


def spread(cell: Cell) -> tuple[float, float] | None:
    """The (low, high) a figure draws around the mean: the cell's 95% interval (one measurement's, however often
    repeated; over seeds, widened by their spread), else ± std over seeds."""
    if cell.low is not None and cell.high is not None:
        return cell.low, cell.high
    if cell.std is not None and cell.mean is not None:
        return cell.mean - cell.std, cell.mean + cell.std
    return None
