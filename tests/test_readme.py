"""The README documents the schema exactly as schema.py defines it, and its test command is what CI runs."""

from __future__ import annotations

from pathlib import Path

from hmtbench.results.schema import schema_markdown

ROOT = Path(__file__).parent.parent


def test_readme_schema_table_is_generated_from_the_schema() -> None:
    text = (ROOT / "README.md").read_text()
    begin, end = text.index("<!-- schema:begin -->"), text.index("<!-- schema:end -->")
    assert text[begin:end].split("\n", 1)[1].strip() == schema_markdown()


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text().split("\n\n", 2)[1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
