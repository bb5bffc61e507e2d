"""The text of a comparison's parts, which every format writes: cells, deltas, row keys, the header and the notes
under a table (paired tests, seeds, variants, provenance)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hmtbench.analysis.cells import Cell, lone_seed_text, seeds_text
from hmtbench.analysis.compare import ROW_KEYS, Comparison, Row, VariantTest, delta_label, sign_rule
from hmtbench.analysis.documents import DOCUMENT_METRICS, BootstrapTest
from hmtbench.analysis.paired import PairedTest, SeedTests
from hmtbench.analysis.row_text import order_methods, settings_text
from hmtbench.methods import method_label

ALWAYS_SHOWN = ("backbone", "dataset", "task")  # shown even when every row has the same value
NOT_SIGNIFICANT = " n.s."


def header(table: Comparison) -> str:
    cells = [c for r in table.rows for c in r.cells.values()]
    parts = ["value [95% interval]" if any(c.low is not None for c in cells) else "value"]
    if any(c.count > 1 for c in cells):
        parts.append("several seeds: mean ± std over seeds [95% interval, seeds included] (n seeds)")
    return (f"{table.metric} ({table.direction} is better); cells: {'; '.join(parts)}; * = best in row; "
            f"{sign_rule(table.direction)}")


def notes(table: Comparison, footnotes: list[str], per_seed: bool = False) -> list[str]:
    """Lines under a table: the variants' footnotes, where the numbers come from (split, seeds, what chose the
    configuration), what n.s. means, and the paired tests."""
    lines = [f"[{i}] {text}" for i, text in enumerate(footnotes, 1)]
    lines += provenance_lines(table)
    if any(row.unclear for row in table.rows):
        how = "p >= 0.05 in its paired test (listed below), else " if any(row.paired for row in table.rows) else ""
        lines.append(f"{NOT_SIGNIFICANT.strip()} = not significant: {how}the two methods' 95% intervals overlap")
    untested = sum(row.deltas.get(pair) is not None and pair not in row.paired
                   for row in table.rows for pair in table.pairs) if table.metric in DOCUMENT_METRICS else 0
    if untested:
        lines.append(f"no paired test for {untested} deltas: their records hold no per-document NLL (doc_nll; "
                     "eval-ppl records before it) or scored other documents; their intervals are compared instead")
    repeated = len({tuple(c.runs) for row in table.rows for c in row.cells.values() if c.repeats})
    if repeated:
        lines.append(f"identical repeats (same settings, seeds and data; only the run id and time differ) count as "
                     f"one measurement: {repeated} cells hold them")
    if any(c.interval == "combined" for row in table.rows for c in row.cells.values()):
        lines.append("intervals over seeds without per-sample data: each run's interval and the seeds' spread "
                     "(1.96 std / sqrt(n)) added in quadrature")
    if any(_of_zero(row, pair) for row in table.rows for pair in table.pairs):
        lines.append("– where B's mean is 0: a change in % of 0 is undefined (the cells and paired tests stand)")
    lines += paired_lines(table, footnotes) + variant_lines(table)
    return lines + (seed_lines(table, footnotes) if per_seed else [])


def provenance_lines(table: Comparison) -> list[str]:
    """Which split the numbers are from, at which seeds, and on which split each configuration was chosen."""
    splits = sorted({str(row.key.get("split")) for row in table.rows if row.key.get("split") is not None})
    lines = [f"split: {splits[0]}" if len(splits) == 1 else f"splits: {', '.join(splits)} (a column; rows of "
             "different splits are never pooled)" if splits else "split: not recorded"]
    by_method = {m: [row.cells[m] for row in table.rows if m in row.cells] for m in table.methods}
    seeds = _grouped({m: _seed_values(cells) for m, cells in by_method.items()})
    lines.append("seeds: " + "; ".join(f"{who}: {what}" for what, who in seeds.items()))
    chosen = _grouped({m: ", ".join(sorted({s or "not stated" for c in cells for s in c.selected_on}))
                       for m, cells in by_method.items()})
    if set(chosen) != {"not stated"}:
        lines.append("configuration chosen on: " + "; ".join(f"{who}: {what}" for what, who in chosen.items()))
    return lines


def _seed_values(cells: list[Cell]) -> str:
    """'train seeds 1, 2, 3 · seed 3407' over a method's cells."""
    values: dict[str, set] = {}
    for cell in cells:
        for measurement in cell.measurements:
            for name, value in measurement.seeds:
                values.setdefault(name, set()).add(value)
    parts = []
    for name, found in values.items():
        known = sorted(v for v in found if v is not None)
        if known:
            parts.append(f"{name.replace('_', ' ')}{'s' if len(known) > 1 else ''} {', '.join(map(str, known))}")
    return " · ".join(parts) or "seed ?"


def _grouped(texts: dict[str, str]) -> dict[str, str]:
    """{text: 'plain, RMT'}: methods that share a text named together."""
    out: dict[str, list[str]] = {}
    for method, text in texts.items():
        out.setdefault(text, []).append(method_label(method))
    return {text: ", ".join(who) for text, who in out.items()}


def seed_lines(table: Comparison, footnotes: list[str]) -> list[str]:
    """--per-seed: each cell of several seeds, its value at each seed (with that run's interval)."""
    lines = []
    seen = set()
    where = _places(table, footnotes)
    for row in table.rows:
        for method in order_methods(row.cells):
            cell = row.cells[method]
            if cell.count < 2 or tuple(cell.runs) in seen:
                continue
            seen.add(tuple(cell.runs))
            values = "; ".join(f"{seeds_text(m)}: {number(m.value)}" + (f" [{bound(m.low)}, {bound(m.high)}]"
                                                                         if m.low is not None else "")
                               for m in cell.measurements)
            lines.append(f"  {where(row)}{method_label(method)}: {values}")
    return ["per seed:", *lines] if lines else []


def _of_zero(row: Row, pair: tuple[str, str]) -> bool:
    """Whether the delta 'A vs B' of ``row`` is missing because B's mean is 0 (A's is known)."""
    first, second = (row.cells.get(method) for method in pair)
    return row.deltas.get(pair) is None and None not in (first, second) and first.mean is not None \
        and second.mean == 0


MCNEMAR_LEGEND = "exact McNemar; +a / -b: samples only the first / only the second gets right"
SEED_LEGEND = ("exact McNemar per seed, against the other cell's one run or its run at the same seed; significant only "
               "where every seed's test is, in one direction")
BOOTSTRAP_LEGEND = ("paired bootstrap: the documents resampled alike for both, each side's seeds within it; the "
                    "gain in % with its 95% interval, p two-sided and at least 2/2^n for n documents")


def paired_lines(table: Comparison, footnotes: list[str]) -> list[str]:
    """One line per delta tested on the same samples or documents (``Row.paired``); a variant row is named by its
    footnote's number."""
    tested = [(row, pair, test) for row in table.rows for pair, test in row.paired.items()]
    if not tested:
        return []
    lines = [f"deltas tested on the same samples or documents ({_legends(t for _, _, t in tested)}):"]
    where = _places(table, footnotes)
    for row, (first, second), test in tested:
        lines.append(f"  {where(row)}{method_label(first)} vs {method_label(second)}: "
                     f"{paired_text(test)}")
    return lines


def _legends(tests) -> str:
    kinds = {type(t) for t in tests}
    return "; ".join(legend for kind, legend in ((PairedTest, MCNEMAR_LEGEND), (SeedTests, SEED_LEGEND),
                                                 (BootstrapTest, BOOTSTRAP_LEGEND)) if kind in kinds)


def _places(table: Comparison, footnotes: list[str]) -> Callable[[Row], str]:
    """How a line under the table names a row: by the keys that vary, a variant by its footnote's number."""
    varying, _ = shown_keys(table, always=())
    numbers = footnote_numbers(footnotes)

    def where(row: Row) -> str:
        text = ", ".join(f"[{numbers[row.key[k]]}]" if k == "variant" and row.key[k] in numbers
                         else f"{k}={row.key[k]}" for k in varying if row.key.get(k) is not None)
        return f"{text}: " if text else ""
    return where


def footnote_numbers(footnotes: list[str]) -> dict[str, int]:
    """Each footnote's number, from 1 (the first place of a text that recurs)."""
    numbers: dict[str, int] = {}
    for number, text in enumerate(footnotes, 1):
        numbers.setdefault(text, number)
    return numbers


def variant_lines(table: Comparison) -> list[str]:
    """One line per method tested in two settings on the same samples (``Comparison.variant_tests``)."""
    if not table.variant_tests:
        return []
    varying, _ = shown_keys(table, always=())
    lines = [f"one method in two settings, same samples ({_legends(v.test for v in table.variant_tests)}):"]
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


def paired_text(test: PairedTest | SeedTests | BootstrapTest) -> str:
    """One paired test: McNemar's counts and p (each seed's), or the bootstrap's gain, interval and p (n.s.
    marked)."""
    mark = "" if test.significant else NOT_SIGNIFICANT
    if isinstance(test, SeedTests):
        each = "; ".join(f"{seed} {paired_text(one)}" for seed, one in test.tests)
        return f"{each}{' · across seeds' + mark if mark else ''}"
    if isinstance(test, BootstrapTest):
        seeds = "" if test.seeds == (1, 1) else f" ({test.seeds[0]} vs {test.seeds[1]} seeds)"
        return (f"{test.gain:+.2f}% [{test.low:+.2f}, {test.high:+.2f}] on {test.documents} documents{seeds}, "
                f"p = {test.p:.2g}{mark}")
    return f"+{test.gained} / -{test.lost} of {test.samples}, p = {test.p:.2g}{mark}"


def test_kind(test: PairedTest | SeedTests | BootstrapTest | None) -> str | None:
    if test is None:
        return None
    if isinstance(test, SeedTests):
        return "exact McNemar per seed"
    return "paired bootstrap" if isinstance(test, BootstrapTest) else "exact McNemar"


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


def cell_parts(cell: Cell | None) -> list[str]:
    """A cell's text in parts that never break: the value (± std over seeds), [95% interval], (n=seeds),
    [failed]; [] for no cell."""
    if cell is None or (cell.mean is None and not cell.failed):
        return []
    parts = ["–" if cell.mean is None else number(cell.mean)]
    if cell.count > 1 and cell.std is not None:
        parts[0] += f" ± {number(cell.std)}"
    if cell.low is not None and cell.high is not None:
        parts.append(f"[{bound(cell.low)}, {bound(cell.high)}]")
    if cell.count > 1:
        parts.append(f"(n={cell.count})")
    if cell.lone_seed is not None:
        parts.append(f"({lone_seed_text(cell.lone_seed)})")
    return parts + ([f"[{cell.failed} failed]"] if cell.failed else [])


def cell_text(cell: Cell | None, then: str = " ", best: bool = False, mark: str = "{}*") -> str:
    """The cell's parts joined by ``then``; ``best`` marks the value with ``mark``."""
    parts = cell_parts(cell)
    if not parts:
        return "–"
    if best:
        parts[0] = mark.format(parts[0])
    return then.join(parts)


def delta_text(row: Row, pair: tuple[str, str], then: str = " ") -> str:
    value = row.deltas.get(pair)
    if value is None:
        return "–"
    return f"{value:+.2f}" + (then + NOT_SIGNIFICANT.strip() if pair in row.unclear else "")


def text_rows(table: Comparison, best: str, keys: list[str] | None = None,
              then: str = " ") -> tuple[list[str], list[list[str]], list[str]]:
    """Column names, cell strings and the variants' footnotes (the variant column holds their numbers);
    ``best`` marks the best cell's value (e.g. '{}*'), ``keys`` are the key columns (default: shown_keys)."""
    keys = shown_keys(table)[0] if keys is None else keys
    names = [*keys, *map(method_label, table.methods), *map(delta_label, table.pairs)]
    footnotes = variant_footnotes(table)
    numbers = footnote_numbers(footnotes)
    rows = []
    for row in table.rows:
        cells = [cell_text(row.cells.get(m), then, m in row.best, best) for m in table.methods]
        variant = row.key.get("variant")
        key = {**row.key, "variant": f"[{numbers[variant]}]" if variant else None}
        rows.append([_key_text(key.get(k)) for k in keys] + cells + [delta_text(row, p, then) for p in table.pairs])
    return names, rows, footnotes


def variant_footnotes(table: Comparison) -> list[str]:
    """The variants' texts in the order of the rows, each once: the footnotes whose numbers the variant column
    holds."""
    return list(dict.fromkeys(row.key["variant"] for row in table.rows if row.key.get("variant")))


def _key_text(value: Any) -> str:
    return "–" if value is None else str(value)

