"""Corpora: local .txt/.jsonl/.parquet files, wikitext article grouping, built-in splits, short-document skipping."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.data import Corpus, load_corpus, tokenize_corpus
from hmtbench.data.builtin import BUILTIN, SPLITS, builtin_documents, split_of
from hmtbench.data.corpora import wikitext_articles
from hmtbench.errors import HmtbenchError


# ----- local files --------------------------------------------------------------------------------
def test_a_txt_file_is_one_document(tmp_path: Path) -> None:
    path = tmp_path / "book.txt"
    path.write_text("Once upon a time.\nThe end.\n", encoding="utf-8")
    corpus = load_corpus(str(path))
    assert corpus.texts == ["Once upon a time.\nThe end.\n"] and corpus.names == ["book.txt"]
    assert (corpus.name, corpus.split) == (str(path), "test")


def test_a_folder_holds_one_document_per_txt_file_recursively(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third")
    (tmp_path / "blank.txt").write_text("  \n\n")  # whitespace only: not a document
    (tmp_path / "notes.md").write_text("not a .txt file")
    corpus = load_corpus(str(tmp_path))
    assert corpus.names == ["a.txt", "b.txt", "sub/c.txt"]
    assert corpus.texts == ["first", "second", "third"]
    assert load_corpus(str(tmp_path), max_docs=2).names == ["a.txt", "b.txt"]


def test_a_folder_without_txt_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(HmtbenchError, match="no .txt file"):
        load_corpus(str(tmp_path))


def test_jsonl_rows_are_documents(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    rows = [{"text": "alpha", "id": 1}, {"text": "beta"}, {"text": ""}, {"text": 42}]
    path.write_text(json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n")
    corpus = load_corpus(str(path))
    assert corpus.texts == ["alpha", "beta", "42"]  # the empty row is dropped, blank lines skipped
    assert corpus.names == ["docs.jsonl:1", "docs.jsonl:3", "docs.jsonl:5"]  # names carry the line number


@pytest.mark.parametrize(
    ("content", "message"),
    [('{"text": "ok"}\n{"body": "x"}\n', r"docs.jsonl:2 has no 'text' field"),
     ('{"text": "ok"}\n{not json\n', r"docs.jsonl:2 is not valid JSON"),
     ('["text"]\n', r"docs.jsonl:1 is not a JSON object")],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(content)
    with pytest.raises(HmtbenchError, match=message):
        load_corpus(str(path))


def test_parquet_text_column(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    pd.DataFrame({"id": [1, 2, 3], "text": ["one", "two", "three"]}).to_parquet(path)
    corpus = load_corpus(str(path), max_docs=2)
    assert corpus.texts == ["one", "two"] and corpus.names == ["docs.parquet:0", "docs.parquet:1"]
    pd.DataFrame({"body": ["one"], "id": [1]}).to_parquet(path)
    with pytest.raises(HmtbenchError, match=r"no 'text' column \(columns: body, id\)"):
        load_corpus(str(path))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("nowhere.txt", "unknown dataset 'nowhere.txt'"), ("pg91", "did you mean 'pg19'"),
     ("python-stdlb", "did you mean 'python-stdlib'")],
)
def test_unknown_datasets_are_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(HmtbenchError, match=message):
        load_corpus(spec)


def test_unreadable_suffix_empty_file_and_bad_split(tmp_path: Path) -> None:
    csv = tmp_path / "docs.csv"
    csv.write_text("text\nhello\n")
    with pytest.raises(HmtbenchError, match="cannot read"):
        load_corpus(str(csv))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(HmtbenchError, match="holds no non-empty document"):
        load_corpus(str(empty))
    with pytest.raises(HmtbenchError, match="did you mean 'test'"):
        load_corpus("pydoc-topics", split="tests")


# ----- hub corpora (datasets.load_dataset replaced: no network) -----------------------------------
WIKITEXT_LINES = [
    "",
    " = Valkyria Chronicles III = \n",
    " \n",
    " Senjō no Valkyria 3 is a tactical role @-@ playing video game . \n",
    " = = Gameplay = = \n",
    " The game 's battle system = the BliTZ system = is carried over . \n",
    " = = = Plot = = = \n",
    " = Tower Building of the Little Rock Arsenal = \n",
    " The Tower Building is a building in Little Rock . \n",
    " = Cicely Mary Barker = \n",
    " Barker was born in Croydon . \n",
]


def test_wikitext_lines_group_into_articles_at_level_1_headings() -> None:
    articles = wikitext_articles(WIKITEXT_LINES)
    assert [title for title, _ in articles] == [
        "Valkyria Chronicles III", "Tower Building of the Little Rock Arsenal", "Cicely Mary Barker",
    ]
    first = articles[0][1]
    assert first == "".join(WIKITEXT_LINES[1:7])  # sections (= = ... = =) stay inside their article
    assert first.startswith(" = Valkyria Chronicles III = \n") and " = = = Plot = = = \n" in first
    assert articles[2][1] == " = Cicely Mary Barker = \n Barker was born in Croydon . \n"
    assert "".join(text for _, text in articles) == "".join(WIKITEXT_LINES[1:])  # nothing lost but the preamble
    assert wikitext_articles([" no heading yet \n"]) == []


def test_wikitext_103_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return {"text": WIKITEXT_LINES}

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus("wikitext-103", "validation", max_docs=2)
    assert calls == [("Salesforce/wikitext", "wikitext-103-raw-v1", "validation")]
    assert corpus.names == ["Valkyria Chronicles III", "Tower Building of the Little Rock Arsenal"]


def test_pg19_streams_only_the_books_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    pulled = []

    def books():
        for i in range(100):
            pulled.append(i)
            yield {"short_book_title": f"Book {i}", "text": f"text of book {i}"}

    monkeypatch.setattr(datasets, "load_dataset", lambda path, split=None, streaming=False: books())
    corpus = load_corpus("pg19", "test", max_docs=3)
    assert corpus.names == ["Book 0", "Book 1", "Book 2"] and len(pulled) == 3


def test_hub_unreachable_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HmtbenchError, match="could not load dataset 'wikitext-103'.*offline\\?"):
        load_corpus("wikitext-103")


# ----- built-in corpora ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_splits_are_disjoint_complete_and_deterministic(name: str) -> None:
    everything = BUILTIN[name]()
    splits = {split: builtin_documents(name, split) for split in SPLITS}
    names = {split: {doc for doc, _ in pairs} for split, pairs in splits.items()}
    assert not names["train"] & names["validation"]
    assert not names["train"] & names["test"]
    assert not names["validation"] & names["test"]
    assert names["train"] | names["validation"] | names["test"] == set(everything)
    assert all(names.values())  # every split holds documents
    assert len(names["train"]) > len(names["test"])  # ~80 / 10 / 10
    assert {split: builtin_documents(name, split) for split in SPLITS} == splits  # same again
    assert all(split_of(doc) == split for split in SPLITS for doc in names[split])
    assert split_of("some/file.py") == split_of("some/file.py")  # crc32, not Python's salted hash


def test_builtin_corpus_through_load_corpus() -> None:
    corpus = load_corpus("pydoc-topics", "test", max_docs=3)
    assert len(corpus.texts) == 3 and all(text.strip() for text in corpus.texts)
    assert all(split_of(name) == "test" for name in corpus.names)


# ----- tokenization: truncation, short documents, scored bytes ------------------------------------
def test_short_documents_are_skipped_and_counted() -> None:
    tokenizer = byte_tokenizer()  # <s> + one token per UTF-8 byte
    texts = ["a" * 9, "b" * 10, "c" * 50, "d" * 3]
    tokenized = tokenize_corpus(Corpus("x", "test", texts), tokenizer, max_tokens=20, min_tokens=11)
    assert tokenized.skipped == 2  # 10 and 4 tokens are fewer than 11
    assert [len(d) for d in tokenized.documents] == [11, 20]  # the 51-token document cut to max_tokens
    assert tokenized.documents[0][0] == tokenizer.bos_token_id
    assert tokenized.scored_bytes == [10, 19]  # every token but the first
    whole = tokenize_corpus(Corpus("x", "test", texts), tokenizer, max_tokens=None, min_tokens=1)
    assert [len(d) for d in whole.documents] == [10, 11, 51, 4] and whole.skipped == 0


def test_the_suite_cannot_reach_the_network() -> None:
    """conftest refuses every outbound connection, so no test can load anything from a hub."""
    import socket

    with pytest.raises(OSError, match="tests run offline"):
        socket.create_connection(("8.8.8.8", 443), timeout=1)  # an address: no DNS needed
