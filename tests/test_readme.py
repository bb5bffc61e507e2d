"""The README is a short front door whose links hold; docs/schema.md documents the schema exactly as schema.py
defines it; the README's test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hmtbench.results.schema import schema_markdown

ROOT = Path(__file__).parent.parent
DOCS = ["README.md", *(p.relative_to(ROOT).as_posix() for p in sorted((ROOT / "docs").glob("*.md")))]


def test_schema_table_is_generated_from_the_schema() -> None:
    text = (ROOT / "docs" / "schema.md").read_text()
    begin, end = text.index("<!-- schema:begin -->"), text.index("<!-- schema:end -->")
    assert text[begin:end].split("\n", 1)[1].strip() == schema_markdown()


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / "README.md").read_text().split("\n\n", 2)[1]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_a_front_door() -> None:
    """Under 300 lines: what it is, the two commands, the headline result, install, links to docs/."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 300
    for link in ["docs/results.md", "docs/cli.md", "docs/methods.md", "docs/performance.md", "docs/schema.md"]:
        assert f"]({link})" in text


@pytest.mark.parametrize("name", DOCS)
def test_relative_links_point_at_files_that_exist(name: str) -> None:
    """Every relative link and image of the README and docs/ resolves (anchors aside); docs/results.md's links to
    records included."""
    file = ROOT / name
    text = file.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"^\[[^\]]+\]: (\S+)$", text, flags=re.M)
    missing = [t for t in targets if not re.match(r"https?:|#|mailto:", t)
               and not (file.parent / t.split("#")[0]).exists()]
    assert not missing, f"{name} links to missing files: {missing[:5]}"
