"""Paired tests: two cells measured on the same samples (QA: McNemar) or documents (perplexity: a bootstrap).

Two overlapping 95% intervals do not show that two methods are alike, and on the same samples a difference is
better seen where it happens: which samples one method gets right and the other wrong (exact McNemar test,
``hmtbench.stats.mcnemar_exact``). eval-qa writes each sample's scores beside its record
(``<run_id>.predictions.jsonl``); a cell of a single run whose file is there, on the same evaluated documents
(``data_sha256``) as the other cell's, is tested this way. Anything else falls back to the intervals. The file is
looked for beside the record, not at the record's ``predictions_file``: that is where it was written, often on
another machine, and the two travel together. Perplexity pairs by document (``analysis.documents``).

A cell of several training seeds against a cell of one run (a trained method against an untrained baseline) is
tested seed by seed (``SeedTests``): each seed's run against the baseline's on the same samples. Pooling the seeds
into one McNemar test would count each sample several times as if independent; averaging them hides that seeds of
one recipe can disagree entirely. Two cells trained at the same seeds (HMT and RMT at training seeds 1, 2, 3) are
tested seed against seed: the seed fixes what the two trainings share (the order of the samples, the LoRA
initialisation), so seed s of one is the other's nearest counterpart, and a cell read at one seed of its recipe's
three meets only that seed of the other. Cells at partly different seeds (a seed owed on one side) are tested on the
seeds they share, each test named by its seed; cells that share no seed are not paired.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hmtbench.analysis.cells import Cell, Measurement, seed_labels
from hmtbench.analysis.columns import DEEP_BELOW, DEEP_SCORES, plain
from hmtbench.analysis.documents import SIGNIFICANCE, BootstrapTest, DocumentScores
from hmtbench.stats import mcnemar_exact

# metric -> the 0/1 score each sample holds (a graded score, F1 or ROUGE, has no McNemar test)
PAIRED_METRICS = {"exact_match": "exact_match", "accuracy": "accuracy", **DEEP_SCORES}


@dataclass(frozen=True)
class PairedTest:
    """A against B over the same samples: A right and B wrong (gained), the reverse (lost), and the exact p."""

    gained: int
    lost: int
    samples: int
    p: float

    @property
    def significant(self) -> bool:
        return self.p < SIGNIFICANCE


@dataclass(frozen=True)
class SeedTests:
    """A cell of several seeds against a cell of one run, or against a cell of the same seeds, on the same samples:
    one McNemar test per seed.

    Significant only where every seed's test is, in one direction: seeds that disagree do not show the method
    better, whatever one of them does (an intersection-union test, whose p is the largest of the seeds').
    """

    tests: tuple[tuple[str, PairedTest], ...]  # (the seed, as 'train seed 2'; its test), in seed order

    @property
    def gained(self) -> int:
        return sum(test.gained for _, test in self.tests)

    @property
    def lost(self) -> int:
        return sum(test.lost for _, test in self.tests)

    @property
    def samples(self) -> int:
        return max(test.samples for _, test in self.tests)

    @property
    def p(self) -> float:
        return max(test.p for _, test in self.tests)

    @property
    def significant(self) -> bool:
        signs = {test.gained > test.lost for _, test in self.tests}
        return len(signs) == 1 and all(test.significant for _, test in self.tests)


class PairedTests:
    """Every paired test a table of ``metric`` can make: on documents (ppl), else on samples (QA scores)."""

    def __init__(self, frame: pd.DataFrame, metric: str) -> None:
        self.documents = DocumentScores(frame, metric)
        self.samples = SampleOutcomes(frame, metric)
        self._tested: dict[tuple[tuple[str, ...], ...], PairedTest | SeedTests | BootstrapTest | None] = {}

    def test(self, first: Cell, second: Cell) -> PairedTest | SeedTests | BootstrapTest | None:
        """``first`` against ``second``; McNemar needs one measurement a side (identical repeats count once), or
        several on one side tested seed by seed (``SeedTests``): against one on the other side, or against the other
        side's measurement at each seed both sides hold. Each pair of cells (their runs) is tested once: a cell
        recurs in every row that another method splits."""
        pair = (tuple(first.runs), tuple(second.runs))
        if pair not in self._tested:
            self._tested[pair] = self._test(first, second)
        return self._tested[pair]

    def _test(self, first: Cell, second: Cell) -> PairedTest | SeedTests | BootstrapTest | None:
        found = self.documents.test(first, second)
        if found is not None:
            return found
        if first.count == second.count == 1:
            return self.samples.test(first.first_runs(), second.first_runs())
        if min(first.count, second.count) > 1:
            ours, theirs = {m.seeds for m in first.measurements}, {m.seeds: m for m in second.measurements}
            shared = ours & theirs.keys()
            if not shared or (first.count, second.count) != (len(ours), len(theirs)):
                return None  # no seed in common, or one seed twice (on other data): no seed has one counterpart
            return self._seed_by_seed(first, lambda m: [theirs[m.seeds].runs[0]], seeded_first=True, among=shared)
        seeded, single = (first, second) if first.count > 1 else (second, first)
        # a cell read at one training seed of its recipe's several meets that seed alone: the others trained
        # other models, not repeats
        return self._seed_by_seed(seeded, lambda m: single.first_runs(), seeded_first=seeded is first,
                                  only_seed=single.lone_seed)

    def _seed_by_seed(self, seeded: Cell, counterpart: Callable[[Measurement], list[str]],
                      seeded_first: bool, only_seed: Any = None, among: set | None = None) -> SeedTests | None:
        """Each seed's run of ``seeded`` against its ``counterpart`` runs, in the order the caller asked; with
        ``among``, only the measurements at those seeds; with ``only_seed``, the one measurement at that training
        seed (none where there is not exactly one)."""
        labelled = list(zip(seed_labels(seeded.measurements), seeded.measurements, strict=True))
        if among is not None:
            labelled = [(label, m) for label, m in labelled if m.seeds in among]
        if only_seed is not None:
            labelled = [(label, m) for label, m in labelled if dict(m.seeds).get("train_seed") == only_seed]
            if len(labelled) != 1:
                return None
        tests = []
        for label, measurement in labelled:
            runs = ([measurement.runs[0]], counterpart(measurement))
            tests.append((label, self.samples.test(*(runs if seeded_first else runs[::-1]))))
        return None if any(test is None for _, test in tests) else SeedTests(tuple(tests))


class SampleOutcomes:
    """Each single-run cell's per-sample outcomes of one metric, read once per run from its predictions file."""

    def __init__(self, frame: pd.DataFrame, metric: str) -> None:
        self.metric = metric
        self._runs = frame.drop_duplicates("run_id").set_index("run_id") if metric in PAIRED_METRICS else None
        self._read: dict[str, dict[str, float] | None] = {}

    def test(self, a: list[str], b: list[str]) -> PairedTest | None:
        """The paired test of the cell with runs ``a`` against the cell with runs ``b``; None where not possible
        (not one run each, another metric, other documents, a predictions file missing or scoring other samples)."""
        if self._runs is None or len(a) != 1 or len(b) != 1:
            return None
        data = [plain(self._runs.at[run, "data_sha256"]) for run in (a[0], b[0])]
        if data[0] is None or data[0] != data[1]:
            return None
        first, second = self._outcomes(a[0]), self._outcomes(b[0])
        if not first or second is None or first.keys() != second.keys():
            return None
        gained = sum(first[i] > second[i] for i in first)
        lost = sum(first[i] < second[i] for i in first)
        return PairedTest(gained, lost, len(first), mcnemar_exact(gained, lost))

    def _outcomes(self, run: str) -> dict[str, float] | None:
        if run not in self._read:
            self._read[run] = self._load(run)
        return self._read[run]

    def _load(self, run: str) -> dict[str, float] | None:
        source = plain(self._runs.at[run, "source_file"]) if "source_file" in self._runs else None
        if source is None:
            return None
        path = Path(source).with_name(f"{run}.predictions.jsonl")
        if not path.is_file():
            return None
        score, deep = PAIRED_METRICS[self.metric], self.metric in DEEP_SCORES
        outcomes = {}
        with path.open() as lines:
            for line in filter(str.strip, lines):
                sample = json.loads(line)
                if deep and not (sample.get("meta") or {}).get("depth", DEEP_BELOW) < DEEP_BELOW:
                    continue  # the *_deep scores count the samples whose needle lies before the question only
                value = sample.get(score)
                if value not in (0, 1):
                    return None
                outcomes[str(sample["id"])] = float(value)
        return outcomes
