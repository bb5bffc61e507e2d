"""Where a table's numbers come from: one line under each table of a results document.

It names the records (linked), the settings every row shares, the split, the seeds, n (documents and tokens,
samples), how the intervals were made, which tests mark a difference not significant, the device, the dtype and the
commit of the code that ran (with the state of its tree).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hmtbench.analysis.columns import BY_DEPTH, DEEP_SCORES, deep_counts, plain
from hmtbench.analysis.compare import Comparison
from hmtbench.analysis.draw import length_label
from hmtbench.analysis.paired import PAIRED_METRICS
from hmtbench.analysis.qa import LENGTHS
from hmtbench.analysis.row_text import describe
from hmtbench.analysis.table_text import shown_keys
from hmtbench.results.schema import METRIC_DIRECTION

if TYPE_CHECKING:
    from hmtbench.analysis.report_tables import TableContext

TEST_NAMES = {"PairedTest": "exact McNemar test on the samples one gets right and the other wrong",
              "SeedTests": ("exact McNemar test per training seed, against the other row's one run or its run at the "
                            "same seed, significant only where every seed's test is, in one direction"),
              "BootstrapTest": "paired bootstrap over the documents both scored"}


def samples(run: pd.Series, metric: str) -> int | None:
    """The samples behind a 0/1 score of one record: those at depth < 1 for the *_deep scores, else all it scored."""
    if metric in DEEP_SCORES:
        counts = deep_counts(run[BY_DEPTH], DEEP_SCORES[metric])
        return counts[1] if counts else None
    return plain(run["docs"])


def length_text(tokens: float) -> str:
    """1k, 4k, 1M where the length is a round number of them, else the tokens (1,536)."""
    return length_label(tokens) if tokens % 1024 == 0 or tokens % 1000 == 0 else f"{int(tokens):,}"


def provenance(metric: str, runs: pd.DataFrame, table: Comparison | None, hidden: int, context: TableContext,
               layout: str = "methods") -> str:
    """Where a table's numbers come from, as one line: records, split, seeds, n, intervals, tests, device, code."""
    folders = ", ".join(f"[`{_shown_path(f)}`]({context.links.path(f)})" for f in context.folders)
    parts = [f"Records: {folders} ({len(runs)} runs{f'; {hidden} unsuccessful not shown' if hidden else ''})"]
    common = shown_keys(table)[1] if table is not None else {}
    common = {k: v for k, v in common.items() if k not in ("split", "variant")}
    if common:
        parts.append("alike in every row: " + describe({k: length_text(v) if k in LENGTHS else v
                                                         for k, v in common.items()}))
    deltas = table is not None and any(row.deltas for row in table.rows) and layout == "methods"
    parts += [_values("split", runs["split"], "split"), _seeds(runs), _sizes(metric, runs), _sample_sets(runs, table),
              _interval(metric, table), _tests(table, deltas),
              " · ".join(filter(None, [_values("", runs["device_name"], ""), _values("", runs["dtype"], "")])),
              _code(runs)]
    return "*" + " · ".join(p for p in parts if p) + ".*"


def _shown_path(folder: Path) -> str:
    parts = folder.resolve().parts
    return "/".join(parts[parts.index("results"):]) + "/" if "results" in parts else folder.name + "/"


def _values(name: str, values: pd.Series, after: str) -> str:
    found = sorted({str(v) for v in values.dropna()})
    if not found:
        return ""
    return " ".join(filter(None, [name if not after else "", ", ".join(found), after]))


def _seeds(runs: pd.DataFrame) -> str:
    parts = []
    for column, name in (("train_seed", "training seed"), ("seed", "seed")):
        if column in runs:
            found = sorted({int(v) for v in runs[column].dropna()})
            if found:
                parts.append(f"{name}{'s' if len(found) > 1 else ''} {', '.join(map(str, found))}"
                             + (" (one seed)" if len(found) == 1 else ""))
    return ", ".join(parts)


def _sizes(metric: str, runs: pd.DataFrame) -> str:
    """n: documents and tokens scored (perplexity), samples (QA), steps (training)."""
    commands = set(runs["command"].dropna())
    if commands == {"eval-ppl"}:
        docs, tokens = _span(runs["docs"]), _span(runs["tokens_scored"])
        return f"{docs} documents, {tokens} tokens scored per run"
    if commands == {"eval-qa"}:
        counts = [samples(run, metric) for _, run in runs.iterrows()] if metric in PAIRED_METRICS else runs["docs"]
        where = " at depth < 1" if metric in DEEP_SCORES else ""
        return f"{_span(pd.Series(counts, dtype='Int64'))} samples{where} per cell"
    if commands == {"bench"}:
        return "one timed run per cell"
    return ""


def _sample_sets(runs: pd.DataFrame, table: Comparison | None) -> str:
    """Where the cells shown side by side (one row key, every variant) read different samples or documents
    (``data_sha256``: another filler text, say, from another Python): named, since no paired test can join two cells
    of other samples (those that share theirs are still tested)."""
    if table is None or "data_sha256" not in runs:
        return ""
    data = {str(run): plain(sha) for run, sha in zip(runs["run_id"], runs["data_sha256"], strict=True)}
    found: dict[tuple, set[str]] = {}
    for row in table.rows:
        key = tuple((k, v) for k, v in row.key.items() if k != "variant")
        found.setdefault(key, set()).update(data[run] for cell in row.cells.values() for run in cell.runs
                                            if data.get(run) is not None)
    split = [dict(key) for key, hashes in found.items() if len(hashes) > 1]
    if not split:
        return ""
    where = ", ".join(length_text(key["context_length"]) if key.get("context_length") is not None
                      else describe(key) for key in split)
    return f"cells side by side on different samples at {where} (other data_sha256): a pair of those is compared " \
           "by its intervals, never paired"


def _span(values: pd.Series) -> str:
    found = sorted({int(v) for v in values.dropna()})
    if not found:
        return "?"
    return f"{found[0]:,}" if len(found) == 1 else f"{found[0]:,}–{found[-1]:,}"


def _interval(metric: str, table: Comparison | None) -> str:
    if table is None:
        return ""
    cells = [c for row in table.rows for c in row.cells.values() if c.mean is not None]
    parts = []
    if any(c.low is not None for c in cells):
        how = "bootstrap over documents" if metric == "ppl" else "Wilson, over samples"
        parts.append(f"[brackets]: 95% interval ({how})")
    if any(c.count > 1 for c in cells):
        parts.append("± std over the runs of a cell (n)")
    return ", ".join(parts) or "no interval recorded"


def _tests(table: Comparison | None, deltas: bool) -> str:
    """The tests behind the table's n.s. marks and listed tests; with ``deltas``, how a delta is signed."""
    if table is None or not (table.pairs or table.variant_tests):
        return ""
    kinds = sorted({type(t).__name__ for row in table.rows for t in row.paired.values()}
                   | {type(v.test).__name__ for v in table.variant_tests})
    tested = [TEST_NAMES.get(kind, kind) for kind in kinds]
    overlap = any(pair not in row.paired for row in table.rows for pair in row.unclear)
    untested = any(row.deltas.get(pair) is not None and pair not in row.paired
                   and any(row.cells[m].low is None for m in pair) for row in table.rows for pair in table.pairs)
    parts = [f"paired tests: {', '.join(tested)}"] if tested else []
    if overlap:
        parts.append("n.s. without a paired test: the two 95% intervals overlap")
    if untested and deltas:
        parts.append("a delta between cells without an interval is untested")
    sign = "(B − A) / B" if METRIC_DIRECTION[table.metric] == "lower" else "(A − B) / B"
    return "; ".join([f"'A vs B, %' = {sign} × 100, positive = A better"] * deltas + parts)


def _runs(count: int, state: str) -> str:
    return f"{count} run{'s' if count > 1 else ''} {state}"


def _code(runs: pd.DataFrame) -> str:
    """'code abc1234 (clean)', or with the runs counted where one commit ran in several tree states."""
    states: dict[str, Counter] = {}
    for commit, dirty in zip(runs["git_commit"], runs["git_dirty"], strict=True):
        commit, dirty = plain(commit), plain(dirty)
        if commit is not None:
            state = "clean" if dirty is False else "with uncommitted changes" if dirty else "tree state not recorded"
            states.setdefault(str(commit)[:7], Counter())[state] += 1
    described = [f"{c} ({next(iter(s))})" if len(s) == 1 else
                 f"{c} ({', '.join(_runs(n, state) for state, n in sorted(s.items()))})"
                 for c, s in sorted(states.items())]
    return "code " + ", ".join(described) if described else ""
