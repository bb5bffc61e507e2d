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

    def take(self, count: int, start: int) -> list[int]:
        """``count`` filler token ids, documents in order from ``start``, cycling through the corpus."""
        ids: list[int] = []
        index = start
        while len(ids) < count:
            ids.extend(self._doc_ids(index % len(self.texts)))
            index += 1
        return ids[:count]

    def _line_start(self, ids: list[int], at: int, window: int) -> int:
        """The closest position in [at - window, at] that follows a line break, else ``at``."""
        for j in range(at, max(0, at - window) - 1, -1):
            if j == 0 or self.tokenizer.decode(ids[j - 1 : j]).endswith("\n"):
                return j
        return at

    def build(self, tokens: int, needles: list[tuple[float, str]], rng: random.Random) -> tuple[str, list[str]]:
        """(context, filler pieces): ``tokens`` of filler with each (depth, text) needle inserted, depth order."""
        needles = sorted(needles, key=lambda needle: needle[0])
        ids = self.take(tokens, rng.randrange(len(self.texts)))
        window = int(SNAP_SHARE * tokens)
        cuts: list[int] = []
        for depth, _ in needles:
            cuts.append(max(self._line_start(ids, round(depth * tokens), window), cuts[-1] if cuts else 0))
        bounds = [0, *cuts, tokens]
        pieces = [self.tokenizer.decode(ids[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        parts = [pieces[0]]
        for (_, text), piece in zip(needles, pieces[1:], strict=True):
            parts += [text, piece]
        return "".join(parts), pieces
