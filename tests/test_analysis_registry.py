"""compare takes methods from the registry: a method registered later is a column with its label and deltas."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from hmtbench import methods
from hmtbench.analysis.compare import build
from hmtbench.analysis.formats import render
from hmtbench.analysis.load import load_results
from hmtbench.methods.rmt import RMT, RMTConfig
from tests.test_compare import write_run

ANALYSIS = Path(__file__).resolve().parents[1] / "hmtbench" / "analysis"


@dataclasses.dataclass
class NovelConfig(RMTConfig):
    pass


class Novel(RMT):
    """A stand-in for a method registered after the analysis code was written."""

    name = "novel"
    label = "NOV"
    compared_with = ("hmt",)
    config_class = NovelConfig


def test_a_newly_registered_method_is_a_column_with_its_label_and_deltas(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(methods.METHODS, "novel", f"{__name__}:Novel")
    for method, ppl in [("zeta", 30.0), ("novel", 12.0), ("hmt", 15.0), ("rmt", 18.0), ("plain", 20.0)]:
        write_run(tmp_path, method, ppl=ppl)
    table = build(load_results([tmp_path], warn=lambda m: None), "ppl")
    assert table.methods == ["plain", "rmt", "hmt", "novel", "zeta"]  # registry order, then the unregistered
    assert table.pairs == [("hmt", "rmt"), ("novel", "hmt"), ("rmt", "plain"), ("hmt", "plain"),
                           ("novel", "plain"), ("zeta", "plain")]
    (row,) = table.rows
    assert row.deltas[("novel", "hmt")] == pytest.approx(20.0, abs=1e-9)
    header = render([table], "markdown").splitlines()[4]
    assert "| plain | RMT | HMT | NOV | zeta | HMT vs RMT, % | NOV vs HMT, % |" in header


def test_analysis_code_names_no_method_and_compare_imports_neither_load_nor_formats() -> None:
    quoted = re.compile(r'"(plain|full|rmt|hmt|overlap)"')
    hits = [f"{p.name}:{n}" for p in ANALYSIS.glob("*.py") for n, line in enumerate(p.read_text().splitlines(), 1)
            if quoted.search(line)]
    assert hits == []
    tree = ast.parse((ANALYSIS / "compare.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"hmtbench.analysis.load", "hmtbench.analysis.formats"}
    assert {"hmtbench.analysis.columns", "hmtbench.methods"} <= imported


def test_hmt_is_compared_with_the_paper_s_rmt_and_with_armt(tmp_path: Path) -> None:
    """HMT's deltas: the paper's 'HMT vs RMT, %' and against ARMT, the RMT family's strongest; ARMT against RMT."""
    for method, ppl in [("rmt", 18.0), ("hmt", 15.0), ("armt", 16.0)]:
        write_run(tmp_path, method, ppl=ppl)
    table = build(load_results([tmp_path], warn=lambda m: None), "ppl")
    assert table.pairs == [("hmt", "rmt"), ("hmt", "armt"), ("armt", "rmt")]
    (row,) = table.rows
    assert row.deltas[("hmt", "armt")] == pytest.approx(100 * (16 - 15) / 16, abs=1e-9)
