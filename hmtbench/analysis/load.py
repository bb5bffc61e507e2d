"""Reading result records back for compare and plot: every file under the paths, bad ones reported, filters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hmtbench.analysis.cells import SEED_COLUMNS
from hmtbench.analysis.columns import (
    BY_DEPTH,
    CONFIG_PREFIX,
    DEEP_SCORES,
    INTERVAL_METRICS,
    READ_COLUMNS,
    RECIPE_LABEL,
    deep_counts,
    interval_columns,
    plain,
)
from hmtbench.benchmark.config import BenchConfig
from hmtbench.config import EngineOptions
from hmtbench.errors import HmtbenchError, did_you_mean
from hmtbench.evaluation.config import EvalConfig
from hmtbench.methods import config_class, method_names
from hmtbench.qa.config import QAConfig
from hmtbench.results.schema import COLUMN_NAMES, METRIC_DIRECTION, read_results
from hmtbench.stats import wilson_interval
from hmtbench.training.config import TrainConfig

COMMAND_CONFIGS = {"eval-qa": QAConfig, "eval-ppl": EvalConfig, "train": TrainConfig, "bench": BenchConfig}

NUMERIC = (*METRIC_DIRECTION, "backbone_params", *(c for m in INTERVAL_METRICS for c in interval_columns(m)))
# Config keys that are not settings of the experiment, or that a column already carries as the run used it
# (the config holds every method's memory fields; the columns hold only those the method has).
NOT_SETTINGS = {*COLUMN_NAMES, "stage", "out", "output_dir", "device", "resume", "log_every", "checkpoint_every"}
# Columns added after some runs were recorded, and the method setting each reports: a run recorded before the column
# existed had that setting's default (the only behaviour there was then), so an old run and a new one of the same
# setting are one setting, not null beside its value.
IMPLIED = {"memory_write": "write", "recall_choice": "recall_choice"}


def load_results(paths: Sequence[str | Path], warn: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Every record under ``paths``; unreadable or foreign files are skipped with a warning naming them."""
    warn = warn or print
    if not paths:
        raise HmtbenchError("name a results folder or file, e.g. `hmtbench compare results/`")
    for path in paths:
        if not Path(path).exists():
            raise HmtbenchError(f"no results folder or file '{path}'; runs such as `hmtbench eval-ppl` write into "
                                "results/ (or their --out)")
    skipped: list[str] = []
    frame = read_results(list(paths), on_skip=lambda file, why: skipped.append(f"skipped {file}: {why}"))
    for message in skipped:
        warn(f"warning: {message}")
    if frame.empty:
        raise HmtbenchError(f"no hmtbench results in {', '.join(map(str, paths))} ({len(skipped)} files skipped); "
                            "make some with `hmtbench eval-ppl --method plain,rmt,hmt`")
    declared = [c for c in frame.columns if c not in READ_COLUMNS and c != "source_file"]  # a method's own columns
    frame = frame.reindex(columns=[*READ_COLUMNS, *declared, "source_file"])  # records of a smaller schema lack some
    copies = frame["run_id"].duplicated()
    for run_id in dict.fromkeys(frame.loc[copies, "run_id"]):
        files = ", ".join(frame.loc[frame["run_id"] == run_id, "source_file"])
        warn(f"warning: run {run_id} appears in several files ({files}); counted once")
    frame = frame[~copies].reset_index(drop=True)
    for column, setting in IMPLIED.items():
        implied = frame["method"].map(lambda method, setting=setting: default_setting(plain(method), setting))
        frame[column] = frame[column].where(frame[column].notna(), implied)
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")  # a foreign type becomes missing
    for column in SEED_COLUMNS:  # whole numbers, whatever the files' types (a column some files lack reads float)
        frame[column] = pd.to_numeric(frame[column], errors="coerce").round().astype("Int64")
    _add_deep_scores(frame)
    configs = [normalise_config(_parse(text), plain(method)) for text, method in zip(frame["config"], frame["method"],
                                                                                       strict=True)]
    # --segment-length and --batch-size as given (compare.ROW_KEYS); as run: a full-context run's segment is the
    # document, and a batch halved after running out of device memory reads the same samples, the same experiment
    for setting in ("segment_length", "batch_size"):
        _as_asked(frame, configs, setting)
    frame["backbone_resolved"] = frame["backbone_resolved"].map(portable_source, na_action="ignore")
    frame["checkpoint_path"] = frame["checkpoint"]  # as recorded: figure labels name a checkpoint by its folder
    frame["checkpoint"] = portable_checkpoints([plain(path) for path in frame["checkpoint"]],
                                               [plain(sha) for sha in frame["checkpoint_sha256"]])
    frame["train_recipe"] = one_recipe_per_checkpoint(frame)
    frame["checkpoint"] = recipe_checkpoints(frame)
    # object columns: a setting some records lack stays 8, not 8.0 beside their missing values
    settings = pd.DataFrame([config_settings(c) for c in configs], index=frame.index, dtype=object)
    _fill_later_settings(settings, [plain(command) for command in frame["command"]])
    return pd.concat([frame, settings.add_prefix(CONFIG_PREFIX)], axis=1)


def _as_asked(frame: pd.DataFrame, configs: list[dict[str, Any]], setting: str) -> None:
    """``setting`` as the command was asked for it (its configuration), the value it ran at kept in ``setting_run``;
    records whose configuration lacks it keep the value they ran at."""
    asked = pd.to_numeric(pd.Series([c.get(setting) for c in configs], index=frame.index), errors="coerce")
    frame[f"{setting}_run"] = frame[setting]
    frame[setting] = asked.round().astype("Int64").fillna(frame[setting])


def _add_deep_scores(frame: pd.DataFrame) -> None:
    """accuracy_deep / exact_match_deep and their Wilson intervals from each eval-qa record's by_depth."""
    for deep, score in DEEP_SCORES.items():
        counts = [deep_counts(depths, score) for depths in frame[BY_DEPTH]]
        intervals = [wilson_interval(*c) if c else (None, None) for c in counts]
        frame[deep] = pd.array([c[0] / c[1] if c else None for c in counts], dtype="Float64")
        for column, values in zip(interval_columns(deep), zip(*intervals, strict=True), strict=True):
            frame[column] = pd.array(values, dtype="Float64")


def default_setting(method: str | None, name: str) -> Any:
    """The default of a registered method's own setting ``name``; None where it has no such setting."""
    if method not in method_names():
        return None
    field = next((f for f in dataclasses.fields(config_class(method)) if f.name == name), None)
    return None if field is None else _default(field)


def portable_source(source: str) -> str:
    """Where weights came from, without this machine's folders: a local file or folder by its name, a hub id as is."""
    return Path(source).name if Path(source).is_absolute() else source


def portable_checkpoint(path: str | None, sha256: str | None) -> str | None:
    """A checkpoint as the same on every machine: its folder's last two parts, and its content hash where recorded.

    Runs of one checkpoint from two clones (or machines) are then one setting, averaged; two checkpoints that share
    a folder name but not their tensors stay apart.
    """
    if path is None:
        return None
    tail = "/".join(Path(path).parts[-2:])
    return f"{tail} [{sha256[:8]}]" if sha256 else tail


def portable_checkpoints(paths: list[str | None], sha256s: list[str | None]) -> list[str | None]:
    """``portable_checkpoint`` of each run, one name per content hash: a checkpoint evaluated from two folders (a
    copy carried to another machine, say) is one setting, named by the first of its folders in sorted order."""
    names = [portable_checkpoint(path, sha) for path, sha in zip(paths, sha256s, strict=True)]
    first: dict[str, str] = {}
    for name, sha in sorted(zip(names, sha256s, strict=True), key=lambda pair: str(pair[0])):
        if sha and name is not None:
            first.setdefault(sha, name)
    return [first.get(sha, name) if sha else name for name, sha in zip(names, sha256s, strict=True)]


def one_recipe_per_checkpoint(frame: pd.DataFrame) -> list[str | None]:
    """Each run's ``train_recipe``, a recipe whose checkpoints (``checkpoint_sha256``) an earlier recipe (first
    recorded before it) already holds read as that recipe: checkpoints trained again bit for bit under a later
    version of the code (whose configuration gained fields, so its recipe hash differs) are the same trainings, and
    their runs join the first trainings' seeds. An earlier recipe is never renamed after a later one, and recipes
    that share only some checkpoints stay apart."""
    recipes = [plain(recipe) for recipe in frame["train_recipe"]]
    shas = [plain(sha) for sha in frame["checkpoint_sha256"]]
    held: dict[str, set[str]] = {}
    for position in frame["created_at"].astype(str).argsort(kind="stable"):  # dict order: first seen first
        if shas[position] is not None and recipes[position] is not None:
            held.setdefault(recipes[position], set()).add(shas[position])
    order = list(held)
    alias = {}
    for later, recipe in enumerate(order):
        earlier = [other for other in order[:later] if held[recipe] <= held[other]]
        if earlier:
            alias[recipe] = max(earlier, key=lambda other: len(held[other]))  # the first of the widest (stable max)
    return [alias.get(recipe, recipe) for recipe in recipes]


def recipe_checkpoints(frame: pd.DataFrame) -> list[str | None]:
    """Each run's checkpoint setting, one for all checkpoints of a training recipe run at several seeds
    (``train_recipe``): 'recipe 1a2b3c4d (train seeds 1, 2, 3)'. Such runs then share a cell, where their seeds are
    measurements of one configuration; the per-seed checkpoints stay in ``checkpoint_sha256``."""
    names = [plain(name) for name in frame["checkpoint"]]
    recipes = [plain(recipe) for recipe in frame["train_recipe"]]
    seeds: dict[str, set[int]] = {}
    for name, recipe, seed in zip(names, recipes, frame["train_seed"], strict=True):
        if name is not None and recipe is not None:
            seeds.setdefault(recipe, set()).add(plain(seed))
    label = {recipe: f"{RECIPE_LABEL}{recipe[:8]} (train seeds {', '.join(str(s) for s in sorted(found, key=str))})"
             for recipe, found in seeds.items() if len(found) > 1}
    return [label.get(recipe, name) if name is not None else None for name, recipe in zip(names, recipes,
                                                                                           strict=True)]


def normalise_config(config: dict[str, Any], method: str | None) -> dict[str, Any]:
    """Old and new records' configurations in one layout, so that the same evaluation is one setting in both.

    Old records hold every method's fields in ``memory`` (the name in ``method``); new ones hold ``segment_length``
    at the top and the method's own fields in ``method``. Either becomes ``segment_length`` plus ``method.<field>``
    for the fields of the method's config class only: a field it lacks is no setting of it (HMT's summary_pass
    never splits RMT runs), and one a record lacks equals its default, as do engine switches older records lack.
    """
    values = {key: value for key, value in config.items() if key not in ("memory", "method", "engine")}
    section = config["method"] if isinstance(config.get("method"), dict) else config.get("memory") or {}
    own = {key: value for key, value in section.items() if key != "name"}
    values.setdefault("segment_length", own.pop("segment_length", None))
    own.pop("segment_length", None)
    values["method"] = _own_fields(method, own)
    values["engine"] = {**dataclasses.asdict(EngineOptions()), **(config.get("engine") or {})}
    return values


def _own_fields(method: str | None, own: dict[str, Any]) -> dict[str, Any]:
    """A registered method's own config fields, defaults filled in; an unregistered method's fields as recorded."""
    if method not in method_names():
        return own
    fields = [f for f in dataclasses.fields(config_class(method)) if f.name != "segment_length"]
    return {f.name: own[f.name] if f.name in own else _default(f) for f in fields}


def _fill_later_settings(settings: pd.DataFrame, commands: list[str | None]) -> None:
    """A command's own setting that older records lack (added to its configuration later, ``COMMAND_CONFIGS``)
    reads as its default there, so it never splits their runs from newer ones; only settings some record holds."""
    defaults = {command: _command_defaults(command) for command in set(commands)}
    for column in settings.columns:
        missing = settings[column].isna()
        if missing.any():
            filled = [defaults[c].get(column) if gap else None for c, gap in zip(commands, missing, strict=True)]
            settings[column] = settings[column].where(~missing, pd.Series(filled, index=settings.index, dtype=object))


def _command_defaults(command: str | None) -> dict[str, Any]:
    """The top-level settings of ``command``'s configuration with their defaults (plain values), sections and
    settings a record column carries (segment_length, batch_size: their values as run stand there) aside."""
    cls = COMMAND_CONFIGS.get(command)
    if cls is None:
        return {}
    defaults = {f.name: _default(f) for f in dataclasses.fields(cls)
                if f.name not in ("method", "engine") and f.name not in COLUMN_NAMES}
    return {name: value for name, value in defaults.items() if not dataclasses.is_dataclass(value)}


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return None if field.default_factory is dataclasses.MISSING else field.default_factory()


def config_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration's settings that no column carries (max_windows, lr, lora.r, ...), flattened."""
    flat: dict[str, Any] = {}
    _flatten(config, "", flat)
    return {key: value for key, value in flat.items() if key.rsplit(".", 1)[-1] not in NOT_SETTINGS}


def _parse(text: Any) -> dict[str, Any]:
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return values if isinstance(values, dict) else {}


def select(frame: pd.DataFrame, filters: dict[str, str | None], include_failed: bool = False,
           note: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Keep the runs matching each comma-separated filter (column -> values); hide unsuccessful runs unless asked."""
    for column, wanted in filters.items():
        if not wanted:
            continue
        values = [v.strip() for v in wanted.split(",") if v.strip()]
        present = sorted({str(v) for v in frame[column].dropna()})
        for value in values:
            if value not in present:
                raise HmtbenchError(f"no runs with --{column.replace('_', '-')} {value}{did_you_mean(value, present)}"
                                    f"; the results have: {', '.join(present) or 'none'}")
        frame = frame[frame[column].isin(values)]
    failed = ~frame["status"].eq("success").fillna(False).astype(bool)
    if failed.any() and not include_failed:
        counts = frame.loc[failed, "status"].fillna("unknown").value_counts()
        if note:
            note(f"hid {int(failed.sum())} unsuccessful runs ({', '.join(f'{n} {s}' for s, n in counts.items())}); "
                 "show them with --include-failed")
        frame = frame[~failed]
    return frame


def _flatten(values: dict[str, Any], prefix: str, into: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, dict):
            _flatten(value, f"{prefix}{key}.", into)
        else:  # lists as JSON text, so that settings can be compared and grouped
            into[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else value
