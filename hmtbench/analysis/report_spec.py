"""What a results document holds: sections of prose, tables built from records and figures, read from report.yaml.

A results folder may carry a ``report.yaml`` (``hmtbench report`` reads it; record and figure paths in it are
relative to its folder). Prose never carries a measured number: every number of the document comes from a record,
through a table. A digit in prose is allowed only inside `code` (a setting, a flag, a commit, a path) or a link's
target, so that a number typed by hand cannot pass for a measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hmtbench.analysis.paired import PAIRED_METRICS
from hmtbench.config import from_dict
from hmtbench.errors import HmtbenchError, unknown_choice
from hmtbench.results.schema import METRIC_DIRECTION

SPEC_NAME = "report.yaml"
LAYOUTS = {
    "methods": "compare's table: a row per setting, a column per method, the paper's deltas",
    "lengths": "a row per method and setting, a column per context length (the lines of accuracy-vs-length)",
    "runs": "a row per record with the columns named in `columns` (training and bench runs)",
}
VARIANTS = {
    "checkpoint": "one trained model (or none) under two evaluation settings, e.g. hard against soft recall",
    "all": "any two settings of one method, e.g. a checkpoint against the one it was trained from",
}
_CODE = re.compile(r"`[^`]*`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_NAME = re.compile(r"[\W_]*[^\W\d_]")  # after any opening punctuation, a letter


@dataclass
class TableSpec:
    """One table: the records it reads, the metric, how it is laid out, which runs it keeps."""

    records: list[str]  # folders or .parquet files, relative to the report.yaml's folder
    metric: str
    layout: str = "methods"
    where: dict[str, str] = field(default_factory=dict)  # column -> comma-separated values to keep
    columns: list[str] = field(default_factory=list)  # layout runs: the record columns shown after the method
    caption: str = ""  # prose under the table's heading
    variants: str = "checkpoint"  # which tests of one method in two settings on the same samples are listed

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise unknown_choice("table layout", self.layout, LAYOUTS)
        if self.metric not in METRIC_DIRECTION:
            raise unknown_choice("table metric", self.metric, METRIC_DIRECTION)
        if self.layout == "lengths" and self.metric not in PAIRED_METRICS:
            raise HmtbenchError(f"a lengths table shows a 0/1 score per sample ({', '.join(PAIRED_METRICS)}), "
                                f"not {self.metric}; use layout methods")
        if self.variants not in VARIANTS:
            raise unknown_choice("table variants", self.variants, VARIANTS)
        if not self.records:
            raise HmtbenchError("a table names its records: records: [folder, ...]")
        self.where = {str(k): str(v) for k, v in (self.where or {}).items()}


@dataclass
class FigureSpec:
    path: str  # a PNG made by `hmtbench plot` (make figures), relative to the report.yaml's folder
    caption: str = ""


@dataclass
class Section:
    title: str
    text: str = ""
    level: int = 2  # markdown heading level: 2 a section, 3 a part of the one before
    tables: list[Any] = field(default_factory=list)
    figures: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.level not in (2, 3, 4):
            raise HmtbenchError(f"section '{self.title}': level must be 2, 3 or 4, got {self.level}")
        where = f"sections['{self.title}']"
        self.tables = [t if isinstance(t, TableSpec) else from_dict(TableSpec, t, f"{where}.tables.")
                       for t in self.tables]
        self.figures = [f if isinstance(f, FigureSpec) else from_dict(FigureSpec, f, f"{where}.figures.")
                        for f in self.figures]


@dataclass
class ReportSpec:
    """A results document: a title, an introduction, sections; ``headline`` names the section whose first table
    and figure the README shows; ``names`` gives trained checkpoints (by the first characters of their
    checkpoint_sha256) the names tables label them with."""

    title: str = "Results"
    text: str = ""
    headline: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    sections: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sections = [s if isinstance(s, Section) else from_dict(Section, s, "sections.") for s in self.sections]
        titles = [s.title for s in self.sections]
        if self.headline is not None and self.headline not in titles:
            raise unknown_choice("headline section", self.headline, titles)
        self.names = {str(k): str(v) for k, v in (self.names or {}).items()}
        check_prose(self.title, "the title")
        check_prose(self.text, "the introduction")
        for section in self.sections:
            check_prose(section.title, f"section title '{section.title}'")
            check_prose(section.text, f"section '{section.title}'")
            for table in section.tables:
                check_prose(table.caption, f"a table caption of section '{section.title}'")
            for figure in section.figures:
                check_prose(figure.caption, f"a figure caption of section '{section.title}'")


def check_prose(text: str, where: str) -> None:
    """Refuse a number outside `code` and link targets: prose must not carry a number typed by hand. A word that
    starts with a letter is a name (SmolLM2-135M, H200), not a number."""
    bare = _LINK_TARGET.sub("]", _CODE.sub("", text or ""))
    found = next((word for word in bare.split() if re.search(r"\d", word) and not _NAME.match(word)), None)
    if found:
        raise HmtbenchError(f"{where} has a number outside `code`: '{found}'; measured numbers come from "
                            "the records' tables, settings and names go in `code`")


def default_spec(folder: Path, metrics: list[str]) -> ReportSpec:
    """A folder without report.yaml: one section that tables each of ``metrics`` over all its records."""
    name = folder.resolve().name
    tables = [TableSpec(records=["."], metric=metric) for metric in metrics]
    return ReportSpec(title=f"Results: `{name}`", sections=[Section(title=f"`{name}`", tables=tables)])


def load_spec(folder: Path) -> ReportSpec | None:
    """The folder's report.yaml; None where it has none."""
    file = folder / SPEC_NAME
    if not file.is_file():
        return None
    import yaml

    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise HmtbenchError(f"{file} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise HmtbenchError(f"{file} must be a mapping (title, text, sections, ...)")
    try:
        return from_dict(ReportSpec, values)
    except HmtbenchError as err:
        raise HmtbenchError(f"{file}: {err}") from None
