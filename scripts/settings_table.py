"""Regenerate docs/cli.md's table of settings keys from the settings' fields (``hmtbench.commands.flags``), in place
between its ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` markers. Run after adding or changing a setting
(``make docs``); ``tests/test_readme.py`` fails while the table is stale.

    python scripts/settings_table.py [docs/cli.md]
"""

from __future__ import annotations

import sys
from pathlib import Path

from hmtbench.commands.flags import settings_markdown
from hmtbench.commands.recipe import CONFIGS

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def regenerate(text: str) -> str:
    """``text`` with the block between the markers replaced by the generated table."""
    if BEGIN not in text or END not in text:
        raise SystemExit(f"no {BEGIN} ... {END} block to fill")
    head, rest = text.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{settings_markdown(CONFIGS)}\n{END}{rest.split(END, 1)[1]}"


def main(path: Path) -> None:
    text = path.read_text()
    updated = regenerate(text)
    path.write_text(updated)
    print(f"{path}: {'regenerated' if updated != text else 'already current'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md"))
