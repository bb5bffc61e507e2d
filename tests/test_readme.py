"""The README is a short front door whose links hold; docs/schema.md documents the schema exactly as schema.py
defines it; the README's test command is what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hmtbench.results.schema import schema_markdown
from tests.conftest import load_script

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


def readme_layout() -> tuple[set[str], list[set[str]]]:
    """(every file the README's layout names under hmtbench/, relative to it; the layers' units in their order)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("```\nhmtbench/\n") + 4:]
    block = block[: block.index("\n```")]
    named: set[str] = set()
    layers: list[set[str]] = []
    packages: list[tuple[int, str]] = []  # (indent, path) of the packages the current line sits in
    for line in block.splitlines()[1:]:
        if not line.startswith("  "):
            break  # docs/..., outside the package
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if body.startswith("# "):
            layers.append(set())
            continue
        first = body.split()[0]
        entry = indent < 20 and re.fullmatch(r"\w+(\.py|/)", first) is not None  # descriptions start further in
        if entry:
            packages = [(i, path) for i, path in packages if i < indent]
            if indent == 2:
                layers[-1].add("hmtbench" if first == "__init__.py" else first.removesuffix("/").removesuffix(".py"))
            if first.endswith("/"):  # a package: its entry names its __init__.py
                packages.append((indent, (packages[-1][1] if packages else "") + first))
                named.add(packages[-1][1] + "__init__.py")
        where = packages[-1][1] if packages else ""
        named |= {where + name for name in re.findall(r"\b\w+\.py\b", body)}
    return named, layers


def test_the_readme_layout_names_every_file_and_the_layers() -> None:
    """The layout cannot go stale: a file added, moved or removed, or a layer changed, fails here until the README
    says so."""
    from tests.test_import_graph import LAYERS

    named, layers = readme_layout()
    package = ROOT / "hmtbench"
    files = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert sorted(files - named) == [], "files the README's layout does not name"
    assert sorted(named - files) == [], "files the README's layout names that do not exist"
    assert layers == [set(units) for units in LAYERS]


def test_settings_table_is_generated_from_the_settings() -> None:
    """docs/cli.md's table of settings keys is what their fields say (help, defaults), so it cannot drift."""
    from hmtbench.commands.flags import settings_markdown
    from hmtbench.commands.recipe import CONFIGS

    text = (ROOT / "docs" / "cli.md").read_text()
    begin, end = text.index("<!-- settings:begin -->"), text.index("<!-- settings:end -->")
    assert text[begin:end].split("\n", 1)[1].strip() == settings_markdown(CONFIGS), "stale: run `make docs`"


def test_make_docs_regenerates_a_stale_settings_table() -> None:
    """``scripts/settings_table.py`` (``make docs``) turns a stale block back into the checked-in page, text around
    the block untouched."""
    regenerate = load_script("settings_table").regenerate
    text = (ROOT / "docs" / "cli.md").read_text()
    begin, end = text.index("<!-- settings:begin -->"), text.index("<!-- settings:end -->")
    stale = text[:begin] + "<!-- settings:begin -->\n| key |\n| --- |\n| `gone` |\n" + text[end:]
    assert regenerate(stale) == text
