"""Side-by-side comparison of result records: methods as columns, settings as rows, the paper's deltas."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from hmtbench.analysis.budgets import budget_note, seed_tokens
from hmtbench.analysis.cells import Cell, make_cell
from hmtbench.analysis.columns import CONFIG_PREFIX, Positions, RunValues
from hmtbench.analysis.documents import BootstrapTest
from hmtbench.analysis.paired import PairedTest, PairedTests, SeedTests
from hmtbench.analysis.row_text import describe, order_methods, variant_text
from hmtbench.errors import HmtbenchError, unknown_choice
from hmtbench.methods import BASELINE, baseline_pairs, compared_pairs, method_label
from hmtbench.results.schema import METRIC_DIRECTION
from hmtbench.stats import intervals_overlap

# Settings all methods of one row share: runs that differ here are another experiment, so another row.
# train_mode (how the evaluated tensors were trained: null = untrained, memory, lora, full) keeps experiments apart.
# segment_length is the one asked for (--segment-length): full-context runs read the whole document in one segment,
# and that as-run length (segment_length_run) is a setting of the method, like S = text_tokens.
ROW_KEYS = ("command", "backbone", "dataset", "split", "protocol", "task", "context_length", "segment_length",
            "test_length", "max_docs", "dtype", "batch_size", "train_mode")
# Settings that differ between methods by design (m, k, N, ...); one method's runs must agree on all of them to be
# averaged into one cell. tokens_scored is an outcome, but a different count means different data.
RUN_SETTINGS = ("backbone_resolved", "checkpoint", "segment_length_run", "text_tokens", "memory_tokens",
                "sensory_tokens", "recall_context", "recall_hidden_dim", "sum_fraction", "hmt_stage", "memory_write",
                "recall_choice", "steps", "tokens_scored", "train_tokens", "train_budget", "train_data_seed",
                "train_lora_seed")
# Named in a method's row (and so in figure legends) whenever its runs depart from the paper's value, even when they
# all agree: a reader of a table of HMT alone must still see that it wrote spans, not the paper's states. And the
# tokens a trained method's tensors read, in every row that has them: the budget behind the number (and the token
# budget its training was held to, where one was), and the seed of its data or LoRA where that was not its own seed.
NAMED_DEPARTURES = {"memory_write": ("state", None), "recall_choice": ("soft", None),
                    f"{CONFIG_PREFIX}method.recall_query": ("paper", None),
                    f"{CONFIG_PREFIX}method.cache_policy": ("fifo", None), "train_tokens": (None,),
                    "train_budget": (None,), "train_data_seed": (None,), "train_lora_seed": (None,)}
# The row keys that change along one experiment's series (the lengths it was evaluated at, and with how many samples).
SERIES_KEYS = ("context_length", "test_length", "max_docs", "batch_size", "variant")
OUTCOMES = ("tokens_scored", "steps")  # differ in a run that failed part-way; not a reason to keep it apart
# Tabled when --metric is not given (those that have values); any METRIC_DIRECTION key can be asked for.
DEFAULT_METRICS = ("ppl", "paper_ppl", "answer_ppl", "rouge_l", "f1", "exact_match", "accuracy", "final_loss")


@dataclass
class Row:
    key: dict[str, Any]  # ROW_KEYS values, plus "variant" (the text of ``settings``) when runs had to be split
    cells: dict[str, Cell]
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> the settings its runs differ in
    full: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> every run setting of its runs here
    deltas: dict[tuple[str, str], float | None] = field(default_factory=dict)  # (method, reference) -> %
    best: list[str] = field(default_factory=list)
    unclear: list[tuple[str, str]] = field(default_factory=list)  # deltas not significant (paired test, else overlap)
    # deltas tested paired
    paired: dict[tuple[str, str], PairedTest | SeedTests | BootstrapTest] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantTest:
    """One method in two settings (two variant rows of one row key), tested on the samples both runs scored."""

    key: dict[str, Any]  # the rows' key without the variant
    method: str
    first: dict[str, Any]  # the method's settings in each row
    second: dict[str, Any]
    test: PairedTest | SeedTests | BootstrapTest
    runs: tuple[tuple[str, ...], tuple[str, ...]]  # each cell's run ids (a report names its table rows by them)


@dataclass
class Comparison:
    """The table of one metric."""

    metric: str
    direction: str  # lower | higher
    methods: list[str]
    pairs: list[tuple[str, str]]  # (method, reference) of each delta column
    rows: list[Row]
    notes: list[str]
    variant_tests: list[VariantTest] = field(default_factory=list)  # hard vs soft recall, trained vs not, ...


def delta_label(pair: tuple[str, str]) -> str:
    return f"{method_label(pair[0])} vs {method_label(pair[1])}, %"


def sign_rule(direction: str) -> str:
    """How 'A vs B, %' is computed; positive always means A is better."""
    rule = "(B - A) / B" if direction == "lower" else "(A - B) / B"
    return f"'A vs B, %' = {rule} x 100, positive = A better"


def gain(reference: float, value: float, direction: str) -> float | None:
    """Improvement of ``value`` over ``reference`` in % of the reference; positive = better in either direction."""
    if reference == 0 or math.isnan(reference) or math.isnan(value):
        return None
    better_by = reference - value if direction == "lower" else value - reference
    return 100.0 * better_by / reference


def metrics_for(frame: pd.DataFrame, wanted: str | None) -> list[str]:
    """The metrics to table: those asked for (validated), else the default ones that have values."""
    if wanted:
        names = [m.strip() for m in wanted.split(",") if m.strip()]
        for name in names:
            if name not in METRIC_DIRECTION:
                raise unknown_choice("--metric", name, METRIC_DIRECTION)
        return names
    present = [m for m in DEFAULT_METRICS if frame[m].notna().any()]
    if not present:
        raise HmtbenchError("these runs hold none of " + ", ".join(DEFAULT_METRICS) +
                            "; name one with --metric (e.g. --metric peak_gpu_mem_mb)")
    return present


def compare(frame: pd.DataFrame, metrics: Iterable[str]) -> list[Comparison]:
    tables = [build(frame, metric, join_baselines=True) for metric in metrics]
    empty = [t.metric for t in tables if not t.rows]
    if empty and len(empty) == len(tables):
        raise HmtbenchError(f"no runs have {', '.join(empty)}; {inventory(frame)}")
    return [t for t in tables if t.rows]


def build(frame: pd.DataFrame, metric: str, join_baselines: bool = False) -> Comparison:
    """Group runs into rows (ROW_KEYS), methods into cells, and add the deltas and best marks.

    ``join_baselines``: untrained baselines also sit in the rows of trained methods (``_share_parameterless``; the
    tables do, the figures keep them apart, where a legend names each line's training).
    """
    direction = METRIC_DIRECTION[metric]
    rows: list[Row] = []
    notes: list[str] = []
    tests = PairedTests(frame, metric)
    runs = RunValues(seed_tokens(_runs_with(frame, metric)))
    grouped = runs.split(range(len(runs)), ROW_KEYS)
    made = _CellMaker(runs, metric, tests)
    for key, group in _share_parameterless(runs, grouped, notes) if join_baselines else grouped:
        for settings, full, per_method in _variants(runs, group, key, notes):
            cells = {method: made.cell(positions) for method, positions in per_method.items()}
            rows.append(Row({**key, "variant": variant_text(settings)}, cells, settings, full))
    _name_checkpoints_across_rows(rows)
    notes += [note for row in rows if (note := budget_note(row.key, row.full))]
    methods = order_methods({m for row in rows for m in row.cells})
    pairs = [p for p in compared_pairs() if set(p) <= set(methods)]
    pairs += [(m, BASELINE) for m in methods if BASELINE in methods and m != BASELINE]
    pairs += [p for p in baseline_pairs() if set(p) <= set(methods)]
    for row in rows:
        _score(row, pairs, direction, tests)
    return Comparison(metric, direction, methods, pairs, rows, notes, _variant_tests(rows, tests))


def _variant_tests(rows: list[Row], tests: PairedTests) -> list[VariantTest]:
    """Each pair of a method's cells in two variant rows of one key, where a paired test is possible (the same
    evaluated documents or samples, their scores recorded), once per pair of cells."""
    by_key: dict[tuple, list[Row]] = {}
    for row in rows:
        by_key.setdefault(tuple((k, v) for k, v in row.key.items() if k != "variant"), []).append(row)
    found, seen = [], set()
    for key, group in by_key.items():
        for method in order_methods({m for row in group for m in row.cells}):
            cells = [(row.settings.get(method, {}), row.cells[method]) for row in group
                     if method in row.cells and row.cells[method].mean is not None]
            for i, j in _first_pairs([tuple(cell.runs) for _, cell in cells]):
                (first, a), (second, b) = cells[i], cells[j]
                runs = (tuple(a.runs), tuple(b.runs))
                if runs in seen:
                    continue
                seen.add(runs)
                test = tests.test(a, b)
                if test is not None:
                    found.append(VariantTest(dict(key), method, first, second, test, runs))
    return found


def _first_pairs(items: list[Any]) -> list[tuple[int, int]]:
    """The pairs (i, j), i < j, of two different items where i is the first place of its item and j the first of
    its item after i: the first pair of each two items in a double loop's order, and so every pair that loop would
    not skip as one seen before (an item recurs in the rows another method splits)."""
    places: dict[Any, list[int]] = {}
    for place, item in enumerate(items):
        places.setdefault(item, []).append(place)
    pairs = []
    for item, own in places.items():
        i = own[0]
        after = (others[bisect.bisect_right(others, i)] for other, others in places.items()
                 if other != item and others[-1] > i)
        pairs += [(i, j) for j in sorted(after)]
    return pairs


def _name_checkpoints_across_rows(rows: list[Row]) -> None:
    """A method evaluated from several checkpoints in one series of rows (the same experiment at several context
    lengths, say: one checkpoint at 16k and 64k, another at 1M) names its checkpoint in each of them: a row tells
    apart only the runs it holds, and two trained models must not read as one."""
    by_series: dict[tuple, list[Row]] = {}
    for row in rows:
        by_series.setdefault(tuple((k, v) for k, v in row.key.items() if k not in SERIES_KEYS), []).append(row)
    for held in by_series.values():
        for method in {m for row in held for m in row.full}:
            named = [row for row in held if (row.full.get(method) or {}).get("checkpoint") is not None]
            if len({row.full[method]["checkpoint"] for row in named}) < 2:
                continue
            for row in named:
                own = row.settings.get(method, {})
                if "checkpoint" not in own:
                    row.settings[method] = {**own, "checkpoint": row.full[method]["checkpoint"]}
                    row.key["variant"] = variant_text(row.settings)


def groups(frame: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split ``frame`` by ``keys``, missing values included (pandas drops them by default), in sorted order."""
    return [(key, frame.iloc[positions]) for key, positions in RunValues(frame).split(range(len(frame)), keys)]


def _share_parameterless(runs: RunValues, grouped: list[tuple[dict[str, Any], Positions]], notes: list[str]
                         ) -> list[tuple[dict[str, Any], Positions]]:
    """Untrained runs of a method with nothing to train (plain, overlap, full, BM25: no added parameters, no
    checkpoint) also join the rows of each train_mode that did not train plain (a LoRA-trained plain makes its row
    an experiment that trains the baselines too), each method where that row has none of its own (a LoRA-trained
    full keeps its row's full), so trained memory methods meet the baselines they are measured against and are
    tested against them on the same samples; a row made of joined runs alone is then dropped."""
    frame, method = runs.frame, runs.column("method")
    added = pd.to_numeric(frame["added_params"], errors="coerce").fillna(0)
    untrained = (frame["train_mode"].isna() & frame["checkpoint"].isna() & added.eq(0)).tolist()

    def others(key: dict[str, Any]) -> tuple:
        return tuple(v for k, v in key.items() if k != "train_mode")

    def methods(group: Positions) -> set[str]:
        return {method[p] for p in group}

    baselines = {others(key): group for key, group in grouped if key["train_mode"] is None}
    shared = {key: [p for p in group if untrained[p]] for key, group in baselines.items()}
    result, joined = [], {}  # joined: the methods of each untrained row that sit in a trained row of the same key
    for key, group in grouped:
        extra, own = shared.get(others(key)), methods(group)
        if key["train_mode"] is not None and extra is not None and BASELINE not in own:
            extra = [p for p in extra if method[p] not in own]
            if extra:
                joined.setdefault(others(key), set()).update(methods(extra))
                group = group + extra
        result.append((key, group))
    if joined:
        result = [(key, group) for key, group in result
                  if not (key["train_mode"] is None and all(untrained[p] for p in baselines[others(key)])
                          and methods(group) <= joined.get(others(key), set()))]
        notes.append(f"{', '.join(order_methods(set().union(*joined.values())))}: untrained, nothing to train; "
                     "shown in the rows of the trained methods they are compared with")
    return result


def inventory(frame: pd.DataFrame) -> str:
    """What the results hold, per command: methods, backbones and run count (for 'missing runs' messages)."""
    if frame.empty:
        return "no runs are left after the filters"
    parts = []
    for key, runs in groups(frame, ("command",)):
        methods = ", ".join(order_methods(set(runs["method"].dropna())))
        backbones = ", ".join(sorted(set(runs["backbone"].dropna().astype(str))))
        parts.append(f"{key['command']}: {methods} on {backbones or '?'} ({len(runs)} runs)")
    return "the results hold " + "; ".join(parts)


def _runs_with(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Runs that have ``metric``, plus (when shown) unsuccessful runs of the commands that produce it."""
    has = frame[metric].notna()
    unsuccessful = ~frame["status"].eq("success").fillna(False).astype(bool)
    return frame[has | (unsuccessful & frame["command"].isin(set(frame.loc[has, "command"])))]


class _CellMaker:
    """The cell of each set of runs, made once: a method's runs recur in every row that another method splits."""

    def __init__(self, runs: RunValues, metric: str, tests: PairedTests) -> None:
        self.runs, self.metric, self.documents = runs, metric, tests.documents
        self._made: dict[tuple[int, ...], Cell] = {}

    def cell(self, positions: Positions) -> Cell:
        key = tuple(positions)
        if key not in self._made:
            self._made[key] = make_cell(self.runs, positions, self.metric, self.documents)
        return self._made[key]


class _Variant(NamedTuple):
    """One method's runs that agree on every run setting."""

    differs: dict[str, Any]  # the settings it differs in from the method's other variants (and named departures)
    runs: Positions
    full: dict[str, Any]  # every run setting


def _variants(runs: RunValues, group: Positions, key: dict[str, Any], notes: list[str]
              ) -> list[tuple[dict, dict, dict]]:
    """Rows for one key: each method's runs split by every setting they differ in, never averaged across it;
    per row (method -> differing settings, method -> every run setting, method -> the runs' positions)."""
    options: dict[str, list[_Variant]] = {}
    keys = [*RUN_SETTINGS, *(c for c in runs.frame.columns if c.startswith(CONFIG_PREFIX))]
    for method_key, mine in runs.split(group, ("method",)):
        method = str(method_key["method"])
        clusters = _clusters(runs, mine, keys)
        differ = [s for s in keys if len({settings[s] for settings, _ in clusters}) > 1]
        departs = [s for s in NAMED_DEPARTURES if s not in differ and s in keys
                   and any(settings[s] not in NAMED_DEPARTURES[s] for settings, _ in clusters)]
        options[method] = [_Variant({s: settings[s] for s in differ + departs}, cluster, settings)
                           for settings, cluster in clusters]
        if "checkpoint" in differ:
            _name_training_seeds(runs, options[method])
        if differ:
            notes.append(f"{method} runs of {describe(key)} differ in {', '.join(differ)}: shown as separate rows, "
                         "not averaged")
    names = order_methods(options)
    rows = []
    for choice in _pairings([[variant.differs for variant in options[n]] for n in names], notes):
        picked = {n: options[n][i] for n, i in zip(names, choice, strict=True)}
        rows.append(({n: v.differs for n, v in picked.items()}, {n: v.full for n, v in picked.items()},
                     {n: v.runs for n, v in picked.items()}))
    return rows


def _name_training_seeds(runs: RunValues, variants: list[_Variant]) -> None:
    """Checkpoints kept apart (their recipes differ: another step count, say) that were trained at different seeds
    name their seed beside what else keeps them apart, so a reader can tell which training run each row is; a
    recipe's several seeds in one variant are named by its checkpoint label instead."""
    seed = runs.column("train_seed") if "train_seed" in runs else None
    seeds = [{seed[p] for p in variant.runs} - {None} if seed is not None else set() for variant in variants]
    if len(set().union(*seeds)) > 1:
        for variant, found in zip(variants, seeds, strict=True):
            if len(found) == 1:  # several seeds: the checkpoint's recipe label names them
                variant.differs["train_seed"] = next(iter(found))


def _pairings(variants: list[list[dict[str, Any]]], notes: list[str]) -> list[tuple[int, ...]]:
    """Which variants of the methods share a row: all combinations, except that a setting varying in several
    methods pairs only runs that agree on it: on its value where the methods share values (engine switches), else
    on whether it is set (checkpoints: each method has its own, trained or not); no variant is left out."""
    every = list(itertools.product(*(range(len(v)) for v in variants)))
    shared = [s for s in dict.fromkeys(s for v in variants for s in v[0]) if sum(s in v[0] for v in variants) > 1]
    by_value = [s for s in shared if _values_shared(variants, s)]

    def agrees(choice: tuple[int, ...]) -> bool:
        picked = [v[i] for v, i in zip(variants, choice, strict=True)]
        return all(len({p[s] if s in by_value else p[s] is None for p in picked if s in p}) <= 1 for s in shared)

    kept = [c for c in every if agrees(c)]
    for m, options in enumerate(variants):
        for i in range(len(options)):
            if not any(c[m] == i for c in kept):
                held = set(kept)
                kept += [c for c in every if c[m] == i and c not in held]
    if len(kept) < len(every):
        by_set = [s for s in shared if s not in by_value]
        notes += [f"rows pair runs that agree on {', '.join(by_value)}"] if by_value else []
        notes += [f"rows pair runs that agree on whether {', '.join(by_set)} is set"] if by_set else []
    return sorted(kept)


def _values_shared(variants: list[list[dict[str, Any]]], setting: str) -> bool:
    """Whether the methods varying in ``setting`` have a set value of it in common (then it pairs by value)."""
    values = [{v[setting] for v in options if setting in v} for options in variants if setting in options[0]]
    return any(value is not None for value in set.intersection(*values))


def _clusters(runs: RunValues, mine: Positions, keys: list[str]) -> list[tuple[dict[str, Any], Positions]]:
    """Successful runs grouped by ``keys``; an unsuccessful run joins the group it matches apart from outcomes."""
    status = runs.column("status")
    clusters = runs.split([p for p in mine if status[p] == "success"], keys)
    settings = [k for k in keys if k not in OUTCOMES]
    for found, extra in runs.split([p for p in mine if status[p] != "success"], settings):
        match = next((i for i, (s, _) in enumerate(clusters) if all(s[k] == found[k] for k in settings)), None)
        if match is None:
            clusters.append(({**found, **dict.fromkeys(OUTCOMES)}, extra))
        else:
            clusters[match] = (clusters[match][0], clusters[match][1] + extra)
    return clusters


def _score(row: Row, pairs: list[tuple[str, str]], direction: str, tests: PairedTests) -> None:
    means = {m: c.mean for m, c in row.cells.items() if c.mean is not None}
    scored = [(a, b) for a, b in pairs if a in means and b in means]
    row.deltas = {(a, b): gain(means[b], means[a], direction) if (a, b) in scored else None for a, b in pairs}
    found = {pair: tests.test(row.cells[pair[0]], row.cells[pair[1]]) for pair in scored}
    row.paired = {pair: test for pair, test in found.items() if test is not None}
    intervals = {m: (c.low, c.high) for m, c in row.cells.items()}  # overlapping 95% intervals: not significant
    row.unclear = [pair for pair in scored if (not row.paired[pair].significant if pair in row.paired
                                               else intervals_overlap(intervals[pair[0]], intervals[pair[1]]))]
    if len(means) > 1:
        best = (min if direction == "lower" else max)(means.values())
        row.best = [m for m in order_methods(means) if math.isclose(means[m], best, rel_tol=1e-12)]
