"""Per-document NLL of eval-ppl records (``doc_nll``, ``doc_tokens``): paired tests and intervals over seeds.

Two runs pair where they scored the same documents the same way: the same data (``data_sha256``) and the same
scored tokens in each document (``doc_tokens``, in the order the hash reads the documents). Every method of a
stream row scores every token of a document but its first, so plain, RMT and HMT pair however their segments cut
the text. Records older than the columns carry none; their cells fall back to comparing intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hmtbench.analysis.cells import Cell, Measurement
from hmtbench.analysis.columns import plain
from hmtbench.stats import PairedBootstrap, paired_ppl_bootstrap, seeds_ppl_interval

# metric -> what the bootstrap estimates from the documents (ppl = exp(sum NLL / tokens), nll_mean = the ratio)
DOCUMENT_METRICS = {"ppl": "ppl", "nll_mean": "nll"}
RESAMPLES = 4000  # p resolves to ~1/2000; the same seed gives the same table
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class BootstrapTest(PairedBootstrap):
    """A paired bootstrap of two cells on the same documents (``stats.paired_ppl_bootstrap``)."""

    @property
    def significant(self) -> bool:
        return self.p < SIGNIFICANCE


@dataclass(frozen=True)
class _Scores:
    nll: np.ndarray  # (measurements, documents)
    tokens: np.ndarray  # (documents,)
    data: str


class DocumentScores:
    """The per-document NLL of a table's runs, read once per run; None wherever a paired reading is not possible."""

    def __init__(self, frame: pd.DataFrame, metric: str) -> None:
        self.statistic = DOCUMENT_METRICS.get(metric)
        usable = self.statistic is not None and "doc_nll" in frame
        self._runs = frame.drop_duplicates("run_id").set_index("run_id") if usable else None
        self._read: dict[str, tuple[np.ndarray, np.ndarray, str] | None] = {}

    def interval(self, measurements: list[Measurement]) -> tuple[float, float] | None:
        """95% interval of the mean over these measurements (seeds), documents and seeds resampled."""
        scores = self._scores(measurements)
        if scores is None:
            return None
        return seeds_ppl_interval(scores.nll, scores.tokens, resamples=RESAMPLES, statistic=self.statistic)

    def test(self, first: Cell, second: Cell) -> BootstrapTest | None:
        """The paired bootstrap of ``first`` against ``second`` (gain in %, positive = first better); None unless
        both cells' measurements hold per-document NLL on the same documents."""
        a, b = self._scores(first.measurements), self._scores(second.measurements)
        if a is None or b is None or a.data != b.data or not np.array_equal(a.tokens, b.tokens):
            return None
        result = paired_ppl_bootstrap(a.nll, b.nll, a.tokens, resamples=RESAMPLES, statistic=self.statistic)
        return BootstrapTest(**vars(result))

    def _scores(self, measurements: list[Measurement]) -> _Scores | None:
        """Each measurement's per-document NLL (the mean of its repeats' that recorded it: a repeat made before the
        columns existed has none), on documents all of them share."""
        if self._runs is None or not measurements:
            return None
        rows, tokens, data = [], None, None
        for measurement in measurements:
            read = [found for found in map(self._document, measurement.runs) if found is not None]
            if not read:
                return None
            for _, counts, sha in read:
                if (data is not None and sha != data) or (tokens is not None and not np.array_equal(counts, tokens)):
                    return None
                tokens, data = counts, sha
            rows.append(np.mean([nll for nll, _, _ in read], axis=0))
        return _Scores(np.vstack(rows), tokens, data)

    def _document(self, run: str) -> tuple[np.ndarray, np.ndarray, str] | None:
        if run not in self._read:
            self._read[run] = self._load(run)
        return self._read[run]

    def _load(self, run: str) -> tuple[np.ndarray, np.ndarray, str] | None:
        nll, tokens, data = (self._runs.at[run, column] for column in ("doc_nll", "doc_tokens", "data_sha256"))
        if not (_is_list(nll) and _is_list(tokens)) or plain(data) is None or len(nll) != len(tokens) or not len(nll):
            return None
        return np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.int64), str(data)


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))
