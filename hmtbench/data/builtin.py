"""Offline corpora that every Python installation carries: no download, no extra package.

* ``pydoc-topics``: the ~80 prose topics of the Python language reference (``pydoc_data.topics``);
* ``python-stdlib``: the standard library's own ``.py`` sources, one file per document.

Both come from the running interpreter, so their text depends on its Python version (recorded).
Splits are fixed by a hash of each document's name: 10% test, 10% validation, 80% train.
"""

from __future__ import annotations

import sysconfig
import zlib
from pathlib import Path

SPLITS = ("train", "validation", "test")


def split_of(name: str) -> str:
    bucket = zlib.crc32(name.encode()) % 10
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def pydoc_topics() -> dict[str, str]:
    from pydoc_data.topics import topics

    return dict(sorted(topics.items()))


def python_stdlib() -> dict[str, str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = {}
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in path.parts[-2:][0] or path.name.startswith("test"):
            continue
        docs[str(path.relative_to(root))] = path.read_text(encoding="utf-8", errors="replace")
    return docs


BUILTIN = {"pydoc-topics": pydoc_topics, "python-stdlib": python_stdlib}


def builtin_documents(name: str, split: str) -> list[tuple[str, str]]:
    """(document name, text) pairs of one split of a built-in corpus."""
    return [(doc, text) for doc, text in BUILTIN[name]().items() if split_of(doc) == split]
