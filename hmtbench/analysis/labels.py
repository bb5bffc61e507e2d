"""How figures name a series and a panel: the runs' --name, else the method and the settings that tell it apart,
in words (hard recall, stage 2, LoRA): never a hash or a list of key=value pairs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from hmtbench.analysis.columns import CONFIG_PREFIX, RECIPE_LABEL, is_recipe_checkpoint
from hmtbench.methods import method_label

LONG_VALUE = 8  # a setting's value longer than this (a checkpoint path) is left out of a label the rest tells apart
NAMES_A_CHECKPOINT = ("hmt_stage", "steps")  # ... but a checkpoint beside another checkpoint only where one of these
# tells them apart: two trained models must not read as one model under two settings
WORDS: dict[str, dict[Any, str]] = {  # settings whose values read as words of their own
    "memory_write": {"state": "state write", "span": "span write", "span-hard": "hard span write",
                     "span-hard-st": "hard span write (ST)"},
    "recall_choice": {"soft": "soft recall", "hard": "hard recall", "hard-st": "hard recall (ST)"},
    "span_choice": {"soft": "soft span", "hard": "hard span"},
    # what of the backbone trained (--train memory | lora | full; these are no method names)
    "train_mode": {**dict(zip("memory lora full".split(), ("memory trained", "LoRA", "fully fine-tuned"),
                              strict=True)), None: "untrained"},
    "train_tokens": {None: "untrained"},  # a trained row names its budget; an untrained one, that it has none
    "compile": {True: "compiled", False: "not compiled"},
    "cuda_graphs": {True: "CUDA graphs", False: "no CUDA graphs"},
}
FORMATS = {  # settings read as a number with a word ({s}: the plural's s)
    "hmt_stage": "stage {}", "sensory_tokens": "{} sensory", "memory_tokens": "{} memory token{s}",
    "recall_context": "recall of {}", "recall_hidden_dim": "recall width {}", "sum_fraction": "summary {}",
    "text_tokens": "{} text tokens", "steps": "{} steps", "segment_length": "segments of {}",
    "test_length": "{} tokens", "context_length": "{} tokens", "max_docs": "{} samples", "batch_size": "batch {}",
    "summary_pass": "summaries {}", "train_data_seed": "data of seed {}",
    "train_lora_seed": "LoRA of seed {}",
}

Series = tuple[str, tuple[tuple[str, Any], ...]]  # (method, its own settings)


def setting_name(name: str) -> str:
    """A setting as a reader knows it: config.engine.compile -> compile, config.method.summary_pass -> summary_pass."""
    return name.removeprefix(CONFIG_PREFIX).split(".")[-1]


def phrase(name: str, value: Any) -> str:
    """One setting in words: ('recall_choice', 'hard') -> 'hard recall', ('hmt_stage', 2) -> 'stage 2'; others as
    'name value' with spaces for underscores."""
    short = setting_name(name)
    if short in WORDS and value in WORDS[short]:
        return WORDS[short][value]
    if short == "checkpoint":
        return checkpoint_words(value)
    if short in FORMATS and value is not None:
        return FORMATS[short].format(value, s="" if value == 1 else "s")
    return f"{short.replace('_', ' ')} {'none' if value is None else value}"


def checkpoint_words(value: Any) -> str:
    """A checkpoint's portable name without its content hash ('stage2/final [2b6b7ba8]' -> 'stage2/final'); a
    recipe's seeds as 'train seeds 1, 2, 3'."""
    text = "none" if value is None else str(value)
    if text.startswith("recipe ") and "(" in text:
        return text[text.index("(") + 1:].rstrip(")")
    return text.split(" [")[0]


def series_labels(series: Sequence[Series], names: dict[Series, str | None] | None = None,
                  paths: dict[Series, str | None] | None = None,
                  checkpoint_names: dict[str, str] | None = None) -> dict[Series, str]:
    """A legend label per series: its runs' --name (``names``), else the method's label and, in words, the settings
    that tell its series apart. A long value (a checkpoint) or a missing one is left out where the other settings
    tell them apart; a checkpoint that stays is named by ``checkpoint_names`` (sha256 prefix -> name, a report's
    names for its checkpoints), else by the part of its folder (``paths``: the runs' checkpoint folder) that differs
    from the other series' checkpoints. Series one label would still name twice are numbered."""
    names, paths = names or {}, paths or {}
    folders = _distinct_folders({key: paths.get(key) for key in series})
    for key in series:
        checkpoint = dict(key[1]).get("checkpoint")
        found = _checkpoint_name(checkpoint, checkpoint_names or {})
        if found:
            folders[key] = found
        elif is_recipe_checkpoint(checkpoint):  # several checkpoints: named by their seeds, not one's folder
            folders.pop(key, None)
    shared = shared_settings(series)
    words: dict[Series, list[str]] = {}
    for key in series:
        method, settings = key
        own = tuple((n, v) for n, v in settings if n not in shared.get(method, {}))
        kept = _kept(own, [dict(s) for m, s in series if m == method and s != settings])
        if is_recipe_checkpoint(kept.get("checkpoint")) and "train_seed" in kept and kept["train_seed"] is None:
            del kept["train_seed"]  # several seeds, which the recipe's checkpoint label names
        words[key] = [folders[key] if n == "checkpoint" and folders.get(key) else phrase(n, v)
                      for n, v in kept.items()]
    labels = {key: names.get(key) or _with(method_label(key[0]), words[key]) for key in series}
    for keys in _shared(labels):  # one name for series of other settings: the settings say which
        for key in keys:
            if names.get(key):
                labels[key] = _with(labels[key], words[key])
    for keys in _shared(labels):
        for i, key in enumerate(keys, 1):
            labels[key] = f"{labels[key]} #{i}"
    return labels


def shared_settings(series: Sequence[Series]) -> dict[str, dict[str, Any]]:
    """Per method drawn as several series, the settings all of them share: said once (``shared_text``), not in
    every label. A method drawn once keeps them in its label (span write, LoRA)."""
    out = {}
    for method in dict.fromkeys(m for m, _ in series):
        mine = [dict(s) for m, s in series if m == method]
        if len(mine) > 1:
            out[method] = {n: v for n, v in mine[0].items() if v is not None and all(s.get(n, v) == v and n in s
                                                                                      for s in mine)}
    return {method: found for method, found in out.items() if found}


def shared_text(series: Sequence[Series]) -> str:
    """'every HMT line: LoRA, span write' for the settings ``shared_settings`` takes out of the labels."""
    return "; ".join(f"every {method_label(method)} series: {', '.join(phrase(n, v) for n, v in found.items())}"
                     for method, found in shared_settings(series).items())


def _checkpoint_name(value: Any, names: dict[str, str]) -> str | None:
    """The name ``names`` gives the checkpoint whose portable name ends in '[sha8]', or one recipe's checkpoints at
    several seeds ('recipe sha8 (train seeds ...)'); None if none."""
    text = str(value or "")
    found = re.search(r"\[([0-9a-f]{8})\]$", text) or re.match(rf"{RECIPE_LABEL}([0-9a-f]{{8}}) \(", text)
    return next((n for key, n in names.items() if found and found.group(1).startswith(key[:8])), None)


def _with(label: str, words: list[str]) -> str:
    return label + (f" ({', '.join(words)})" if words else "")


def _shared(labels: dict[Series, str]) -> list[list[Series]]:
    by_label: dict[str, list[Series]] = {}
    for key, label in labels.items():
        by_label.setdefault(label, []).append(key)
    return [keys for keys in by_label.values() if len(keys) > 1]


def _kept(settings: tuple[tuple[str, Any], ...], others: list[dict[str, Any]]) -> dict[str, Any]:
    """The settings a label keeps: all, less the minor ones (missing or long values) the rest tells apart."""
    kept = dict(settings)
    for name in sorted(kept, key=lambda n: (kept[n] is not None, -len(str(kept[n])))):  # missing ones first
        rest = {n: v for n, v in kept.items() if n != name}
        if _minor(name, kept, others) and not any(all(o.get(n) == v for n, v in rest.items()) for o in others):
            kept = rest
    return kept


def _minor(name: str, kept: dict[str, Any], others: list[dict[str, Any]]) -> bool:
    """Whether a label may leave the setting out where the rest tells the series apart: a missing or long value,
    except a checkpoint beside another trained one that no NAMES_A_CHECKPOINT setting tells apart."""
    value = kept[name]
    if value is None:
        return True
    if len(str(value)) <= LONG_VALUE:
        return False
    beside_another = name == "checkpoint" and any(o.get(name) not in (None, value) for o in others)
    return not beside_another or any(n in kept for n in NAMES_A_CHECKPOINT)


def _distinct_folders(paths: dict[Series, str | None]) -> dict[Series, str]:
    """The shortest end of each series' checkpoint folder that no other folder ends in, past the stage and step
    folders a run writes ('/w/runs/passkey-long/stage2/final' beside '/root/runs/passkey-span/stage2/final' ->
    'passkey-long'); {} where there are not two folders to tell apart."""
    parts = {key: PurePosixPath(path).parts for key, path in paths.items() if path}
    distinct = set(parts.values())
    if len(distinct) < 2:
        return {}
    stems = {p: _run_folder(p) for p in distinct}
    names = {}
    for found, stem in stems.items():
        others = [s for p, s in stems.items() if p != found]
        size = next((k for k in range(1, len(stem) + 1) if all(o[-k:] != stem[-k:] for o in others)), len(stem))
        names[found] = "/".join(stem[-size:])
    return {key: names[found] for key, found in parts.items()}


def _run_folder(parts: tuple[str, ...]) -> tuple[str, ...]:
    """A checkpoint's folders up to its run's: the stage and checkpoint folders train writes (stage2/final, last,
    train/final) left out."""
    end = len(parts)
    while end > 1 and (parts[end - 1] in ("final", "last", "train")
                       or re.fullmatch(r"stage\d+|step-?\d+", parts[end - 1])):
        end -= 1
    return parts[:end]
