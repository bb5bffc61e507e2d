"""Where documents come from: HF datasets (wikitext-103, pg19), local files, built-in corpora.

A document is kept whole: one Wikipedia article, one book, one file, one row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hmtbench.data.builtin import BUILTIN, SPLITS, builtin_documents
from hmtbench.data.jsonl import read_jsonl
from hmtbench.errors import HmtbenchError, did_you_mean

HUB_CORPORA = {"wikitext-103": "Salesforce/wikitext", "pg19": "emozilla/pg19"}
CORPORA = [*HUB_CORPORA, *BUILTIN]


@dataclass
class Corpus:
    name: str  # as given on the command line
    split: str
    texts: list[str]
    names: list[str] = field(default_factory=list)


def load_corpus(spec: str, split: str = "test", max_docs: int | None = None) -> Corpus:
    """Documents of ``spec``: a corpus name, a .txt file or folder, or a .jsonl/.parquet file with ``text``."""
    if split not in SPLITS:
        raise HmtbenchError(f"unknown --split '{split}'{did_you_mean(split, SPLITS)}; use train, validation or test")
    path = Path(spec).expanduser()
    if spec in BUILTIN:
        pairs = builtin_documents(spec, split)
    elif spec in HUB_CORPORA:
        pairs = _hub_documents(spec, split, max_docs)
    elif path.exists():
        pairs = _local_documents(path)
    else:
        raise HmtbenchError(
            f"unknown dataset '{spec}'{did_you_mean(spec, CORPORA)}: use one of {', '.join(CORPORA)}, "
            "a .txt file or folder, or a .jsonl/.parquet file with a 'text' column"
        )
    pairs = [(n, t) for n, t in pairs if t.strip()]
    if max_docs is not None:
        pairs = pairs[:max_docs]
    if not pairs:
        raise HmtbenchError(f"dataset '{spec}' ({split}) holds no non-empty document")
    return Corpus(spec, split, [t for _, t in pairs], [n for n, _ in pairs])


def _local_documents(path: Path) -> list[tuple[str, str]]:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise HmtbenchError(f"folder '{path}' holds no .txt file; one document per .txt file is expected")
        return [(str(f.relative_to(path)), f.read_text(encoding="utf-8", errors="replace")) for f in files]
    if path.suffix == ".txt":
        return [(path.name, path.read_text(encoding="utf-8", errors="replace"))]
    if path.suffix == ".jsonl":
        return [(f"{path.name}:{n}", str(row["text"])) for n, row in read_jsonl(path, ("text",))]
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if "text" not in frame.columns:
            raise HmtbenchError(
                f"{path} has no 'text' column (columns: {', '.join(map(str, frame.columns))}); rename the text column"
            )
        return [(f"{path.name}:{i}", str(t)) for i, t in enumerate(frame["text"].tolist())]
    raise HmtbenchError(f"cannot read '{path}': use a .txt file or folder, or a .jsonl/.parquet file with 'text'")


WIKI_TITLE = re.compile(r"^ = [^=].* = $")


def _hub_documents(spec: str, split: str, max_docs: int | None) -> list[tuple[str, str]]:
    try:
        import datasets
    except ImportError:
        raise HmtbenchError(f"dataset '{spec}' needs the datasets package: pip install datasets") from None
    try:
        if spec == "wikitext-103":
            lines = datasets.load_dataset(HUB_CORPORA[spec], "wikitext-103-raw-v1", split=split)["text"]
            return wikitext_articles(lines)[: max_docs or None]
        rows = datasets.load_dataset(HUB_CORPORA[spec], split=split, streaming=True)
        books = []
        for row in rows:
            books.append((row.get("short_book_title") or str(len(books)), row["text"]))
            if max_docs is not None and len(books) >= max_docs:
                break
        return books
    except (OSError, ConnectionError, ValueError) as err:
        raise HmtbenchError(
            f"could not load dataset '{spec}' from the Hugging Face Hub ({str(err).splitlines()[0][:120]}); "
            "offline? use --dataset pydoc-topics, python-stdlib or a local file"
        ) from None


def wikitext_articles(lines: list[str]) -> list[tuple[str, str]]:
    """Group wikitext lines into articles: each starts at a level-1 heading ' = Title = '."""
    articles: list[tuple[str, list[str]]] = []
    for line in lines:
        if WIKI_TITLE.match(line.rstrip("\n")):
            articles.append((line.strip(" =\n"), []))
        if articles:
            articles[-1][1].append(line)
    return [(title, "".join(body)) for title, body in articles]
