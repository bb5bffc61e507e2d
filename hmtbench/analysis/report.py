"""`hmtbench compare` and `hmtbench report`: tables of the records, printed, or as the results document.

compare loads and filters the records, tables every metric, renders them and says what was left out. report writes
the results document (docs/results.md) from each results folder's report.yaml: prose with no measured number in it,
tables whose every number links to its record, and the figures `hmtbench plot` drew.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from hmtbench.analysis.columns import plain
from hmtbench.analysis.compare import compare, inventory, metrics_for
from hmtbench.analysis.formats import FORMATS, render
from hmtbench.analysis.load import load_results, select
from hmtbench.analysis.report_spec import SPEC_NAME, FigureSpec, Section, TableSpec, default_spec, load_spec
from hmtbench.analysis.terminal import wrapped
from hmtbench.errors import HmtbenchError, did_you_mean, unknown_choice

if TYPE_CHECKING:  # report_tables draws on the figures' labels (matplotlib): imported where a document is made
    from hmtbench.analysis.report_tables import Links, TableContext


def run_compare(paths: Sequence[str | Path], filters: dict[str, str | None], metric: str | None = None,
                fmt: str = "table", include_failed: bool = False, output: str | Path | None = None,
                warn: Callable[[str], None] | None = None, per_seed: bool = False) -> str:
    """Load, filter, table every metric, render (and write ``output``); notes go to ``warn``, wrapped to the
    table's width. ``per_seed``: list each seed's value under the table."""
    if fmt not in FORMATS:
        raise unknown_choice("--format", fmt, FORMATS)
    warn = warn or print
    frame = select(load_results(paths, warn), filters, include_failed, warn)
    if frame.empty:
        raise HmtbenchError("no runs are left after the filters")
    metrics = metrics_for(frame, metric)
    tables = compare(frame, metrics)
    text = render(tables, fmt, per_seed)
    for note in dict.fromkeys(n for t in tables for n in t.notes):
        warn("\n".join(wrapped([f"note: {note}"], indent="    ")))
    untabled = frame[frame[metrics].isna().all(axis=1) & frame["status"].eq("success").fillna(False).astype(bool)]
    if len(untabled) and not metric:
        what = inventory(untabled).removeprefix("the results hold ")
        warn("\n".join(wrapped([f"note: not tabled, no {' / '.join(metrics)}: {what}; name their metric, e.g. "
                                "--metric peak_gpu_mem_mb"], indent="    ")))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
    return text


README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


def run_report(paths: Sequence[str | Path], out: str | Path, readme: str | Path | None = None,
               warn: Callable[[str], None] | None = None) -> list[Path]:
    """`hmtbench report`: write the results document (and the README's results block); the files written."""
    document, block = build_report(paths, out, readme, warn)
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document)
    if readme is None:
        return [target]
    Path(readme).write_text(with_block(Path(readme).read_text(), block, readme))
    return [target, Path(readme)]


def build_report(paths: Sequence[str | Path], out: str | Path, readme: str | Path | None = None,
                 warn: Callable[[str], None] | None = None) -> tuple[str, str]:
    """The results document for ``out`` and, for ``readme``, its results block (else ""), from each folder's
    report.yaml (a folder without one: a table of each quality metric its records hold)."""
    from hmtbench.analysis.report_tables import Links, TableContext  # matplotlib (see above)

    warn = warn or print
    if not paths:
        raise HmtbenchError("name a results folder, e.g. `hmtbench report results --out docs/results.md`")
    links = Links(Path(out).parent, {})
    command = " ".join(["hmtbench report", *(Path(p).as_posix() for p in paths), "--out", Path(out).as_posix()]
                       + (["--readme", Path(readme).as_posix()] if readme else []))
    lines = [f"<!-- Written by `{command}` (make report) from the records and each folder's {SPEC_NAME}: edit "
             "those, not this file. -->", ""]
    headline = None
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            raise HmtbenchError(f"no results folder '{path}'; name the folder that holds the records (and its "
                                f"{SPEC_NAME})")
        frame = load_results([folder], warn)
        spec = load_spec(folder) or default_spec(folder, metrics_for(frame, None))
        lines += [f"# {spec.title}", "", *_paragraph(spec.text)]
        for section in spec.sections:
            lines += render_section(section, folder, frame, TableContext(links, spec.names, []))
        if spec.headline and headline is None:
            headline = (next(s for s in spec.sections if s.title == spec.headline), folder, frame, spec.names)
    lines += links.definitions()
    if readme is None:
        return "\n".join(lines).rstrip() + "\n", ""
    if headline is None:
        raise HmtbenchError(f"--readme needs a headline section: set `headline:` in a {SPEC_NAME}")
    return "\n".join(lines).rstrip() + "\n", headline_block(*headline, Path(readme), Path(out))


def render_section(section: Section, folder: Path, frame: pd.DataFrame, context: TableContext) -> list[str]:
    lines = [f"{'#' * section.level} {section.title}", "", *_paragraph(section.text)]
    for table in section.tables:
        lines += table_lines(table, folder, frame, context)
    for figure in section.figures:
        lines += figure_lines(figure, folder, context.links)
    return lines


def table_lines(table: TableSpec, folder: Path, frame: pd.DataFrame, context: TableContext) -> list[str]:
    """One table of the section, from the records under its folders that pass its ``where``."""
    from hmtbench.analysis.report_tables import render_table

    folders = [folder / record for record in table.records]
    for path in folders:
        if not path.exists():
            raise HmtbenchError(f"table of {table.metric}: no records folder or file '{path}'")
    roots = [path.resolve() for path in folders]
    files = {file: Path(file).resolve() for file in frame["source_file"].unique()}  # each once, not per folder
    under = frame["source_file"].map(lambda file: any(_within(files[file], root) for root in roots))
    runs = _where(frame[under], table.where)
    context = dataclasses.replace(context, folders=folders, variants=table.variants)
    context.links.files.update(zip(runs["run_id"], runs["source_file"], strict=True))
    return render_table(table, runs, context)


def figure_lines(figure: FigureSpec, folder: Path, links: Links) -> list[str]:
    path = folder / figure.path
    if not path.is_file():
        raise HmtbenchError(f"no figure '{path}'; draw it with `make figures` (hmtbench plot)")
    alt = figure.caption.strip() or path.stem
    return [f"![{alt}]({links.path(path)})", "", *_paragraph(f"*{figure.caption.strip()}*" if figure.caption else "")]


def headline_block(section: Section, folder: Path, frame: pd.DataFrame, names: dict[str, str], readme: Path,
                   document: Path) -> str:
    """The README's results block: the headline section's first table and figure, links relative to the README."""
    from hmtbench.analysis.report_tables import Links, TableContext

    links = Links(readme.parent, {})
    context = TableContext(links, names, [], tests_in=links.path(document))  # the front door stays short
    lines = [f"**{section.title}**", ""]
    lines += table_lines(section.tables[0], folder, frame, context) if section.tables else []
    lines += figure_lines(section.figures[0], folder, links) if section.figures else []
    where = links.path(document)
    lines += [f"Every result, with its records, tests and figures: [{where}]({where}).", "", *links.definitions()]
    return "\n".join(lines).rstrip()


def with_block(text: str, block: str, readme: str | Path) -> str:
    """``text`` with the part between the results markers replaced by ``block``."""
    if README_BEGIN not in text or README_END not in text:
        raise HmtbenchError(f"{readme} has no results block: add the lines {README_BEGIN} and {README_END} where "
                            "the headline table goes")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{block}\n{README_END}{tail}"


def _within(file: Path, path: Path) -> bool:
    """Whether ``file`` is ``path`` or lies under it (both resolved)."""
    return file == path or path in file.parents


def _where(runs: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    """The runs whose column values are among the comma-separated values of each ``where`` entry."""
    for column, wanted in where.items():
        if column not in runs:
            raise HmtbenchError(f"where: no column '{column}'{did_you_mean(column, runs.columns)}")
        values = [v.strip() for v in wanted.split(",") if v.strip()]
        shown = runs[column].map(lambda v: str(plain(v)))
        present = sorted(set(shown))
        for value in values:
            if value not in present:
                raise HmtbenchError(f"where: no runs with {column}={value}{did_you_mean(value, present)}; the "
                                    f"records have: {', '.join(present)}")
        runs = runs[shown.isin(values)]
    return runs


def _paragraph(text: str) -> list[str]:
    return [text.strip(), ""] if text and text.strip() else []
