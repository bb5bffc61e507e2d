"""Tokenize whole documents, truncated to ``test_length`` tokens; too-short documents are skipped."""

from __future__ import annotations

from dataclasses import dataclass

from hmtbench.data.corpora import Corpus

CHARS_PER_TOKEN_BOUND = 16  # no tokenizer packs more characters per token; bounds the text we tokenize


@dataclass
class TokenizedCorpus:
    documents: list[list[int]]  # token ids, the tokenizer's special tokens included
    scored_bytes: list[int]  # UTF-8 bytes of each document's scored tokens (all but the first)
    skipped: int  # documents shorter than the minimum


def tokenize_corpus(corpus: Corpus, tokenizer, max_tokens: int | None, min_tokens: int) -> TokenizedCorpus:
    """Token ids of each document (first ``max_tokens``), skipping those with fewer than ``min_tokens``."""
    documents, scored_bytes, skipped = [], [], 0
    for text in corpus.texts:
        head = text if max_tokens is None else text[: max_tokens * CHARS_PER_TOKEN_BOUND]
        ids = tokenizer(head, add_special_tokens=True)["input_ids"]
        if max_tokens is not None:
            ids = ids[:max_tokens]
        if len(ids) < min_tokens:
            skipped += 1
            continue
        documents.append(ids)
        scored_bytes.append(len(tokenizer.decode(ids[1:], skip_special_tokens=True).encode("utf-8")))
    return TokenizedCorpus(documents, scored_bytes, skipped)
