"""Filler text from a local corpus with facts hidden at chosen depths, sized in tokens (needle tasks)."""

from __future__ import annotations

import random
from typing import Any

from hmtbench.data.builtin import BUILTIN
from hmtbench.data.corpora import load_corpus
from hmtbench.errors import HmtbenchError

SNAP_SHARE = 0.005  # a fact moves back at most this share of the context to start on a new line


class Haystack:
    """The documents of a local corpus, tokenized once each and repeated in a cycle as needed.

    ``build`` returns filler of a given token count starting at a seeded document, with needle
    texts inserted at their depths (fractions of the filler's tokens), each at a line start when
    one lies close before the exact position.
    """

    def __init__(self, corpus: str, tokenizer: Any) -> None:
        if corpus in BUILTIN:
            texts = list(BUILTIN[corpus]().values())  # every split: this is filler, not data to score
        else:
            texts = load_corpus(corpus, "test").texts
        self.texts = [t for t in texts if t.strip()]
        if not self.texts:
            raise HmtbenchError(f"filler corpus '{corpus}' holds no text")
        self.corpus = corpus
        self.tokenizer = tokenizer
        self._ids: dict[int, list[int]] = {}

    def _doc_ids(self, index: int) -> list[int]:
        if index not in self._ids:
            text = self.texts[index].strip() + "\n\n"
            self._ids[index] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._ids[index]

    def take(self, count: int, start: int) -> tuple[list[int], list[int]]:
        """``count`` filler token ids, documents in order from ``start``, cycling through the corpus; and which
        documents they came from."""
        ids: list[int] = []
        docs: list[int] = []
        index = start
        while len(ids) < count:
            docs.append(index % len(self.texts))
            ids.extend(self._doc_ids(docs[-1]))
            index += 1
        return ids[:count], docs

    def _line_start(self, ids: list[int], at: int, window: int) -> int:
        """The closest position in [at - window, at] that follows a line break, else ``at``."""
        for j in range(at, max(0, at - window) - 1, -1):
            if j == 0 or self.tokenizer.decode(ids[j - 1 : j]).endswith("\n"):
                return j
        return at

    def build(self, tokens: int, needles: list[list[int]], depths: list[float], values: list[str],
              rng: random.Random) -> tuple[list[int], list[int]] | None:
        """(ids, needle starts): ``tokens`` filler ids with each needle's ids inserted at its depth (a share of
        the filler, moved back to a line start when one lies close before), depth order. None when a value
        also occurs in the filler documents drawn (it must be in the context exactly once)."""
        filler, docs = self.take(tokens, rng.randrange(len(self.texts)))
        if any(value in self.texts[d] for d in set(docs) for value in values):
            return None
        window = int(SNAP_SHARE * tokens)
        cuts: list[int] = []
        for depth in depths:
            cuts.append(max(self._line_start(filler, round(depth * tokens), window), cuts[-1] if cuts else 0))
        ids, starts, previous = [], [], 0
        for cut, needle in zip(cuts, needles, strict=True):
            ids += filler[previous:cut]
            starts.append(len(ids))
            ids += needle
            previous = cut
        return ids + filler[previous:], starts
