"""`hmtbench compare`: load and filter the records, table every metric, render them and say what was left out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from hmtbench.analysis.compare import compare, inventory, metrics_for
from hmtbench.analysis.formats import FORMATS, render
from hmtbench.analysis.load import load_results, select
from hmtbench.errors import HmtbenchError, unknown_choice


def run_compare(paths: Sequence[str | Path], filters: dict[str, str | None], metric: str | None = None,
                fmt: str = "table", include_failed: bool = False, output: str | Path | None = None,
                warn: Callable[[str], None] | None = None) -> str:
    """Load, filter, table every metric, render (and write ``output``); notes go to ``warn``."""
    if fmt not in FORMATS:
        raise unknown_choice("--format", fmt, FORMATS)
    warn = warn or print
    frame = select(load_results(paths, warn), filters, include_failed, warn)
    if frame.empty:
        raise HmtbenchError("no runs are left after the filters")
    metrics = metrics_for(frame, metric)
    tables = compare(frame, metrics)
    text = render(tables, fmt)
    for note in dict.fromkeys(n for t in tables for n in t.notes):
        warn(f"note: {note}")
    untabled = frame[frame[metrics].isna().all(axis=1) & frame["status"].eq("success").fillna(False).astype(bool)]
    if len(untabled) and not metric:
        what = inventory(untabled).removeprefix("the results hold ")
        warn(f"note: not tabled, no {' / '.join(metrics)}: {what}; name their metric, e.g. --metric peak_gpu_mem_mb")
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
    return text
