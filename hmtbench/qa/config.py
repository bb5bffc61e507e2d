"""`hmtbench eval-qa`'s settings: the task, its samples and how answers are read and generated."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import EngineOptions, RunSettings, parse_counts, selected_on_field
from hmtbench.methods.config import setting
from hmtbench.resolve import gridded, resolve

EVAL_SPLITS = ("validation", "test")  # choices are made on validation, the table is run once on test


@dataclass
class QAConfig(RunSettings):
    task: str = setting("passkey", "passkey | multi-fact | passkey-unseen-a | passkey-unseen-b | babilong-qa1..qa5 | "
                                   "pubmedqa | narrativeqa | qasper | musique | qmsum, or a local .jsonl (context, "
                                   "question, answer). passkey-unseen-a/-b: passkeys in wordings no training task uses "
                                   "(b: answers such as ember-4821).")
    split: str = setting("test", "validation | test: make choices on validation, run the table once on test. "
                                 "Generated tasks draw each split from seeds of its own; a .jsonl needs rows marked "
                                 "\"split\"; hub tasks have test only.")
    context_length: int | None = setting(None, "Prompt tokens, or several: 1k,4k,1m (one record per length). "
                                               "passkey/multi-fact: built at this length (1k-1M); babilong: this bin; "
                                               "others: samples cut in the middle to it.")
    limit: int | None = setting(None, "At most this many samples (passkey/multi-fact: how many to make).")
    max_new_tokens: int | None = setting(None, "Longest generated answer [default: the task's own].")
    depths: list[float] | None = setting(None, "Needle depths in [0, 1]: passkey cycles through them, multi-fact "
                                               "hides one fact at each.")
    filler: str = setting("pydoc-topics", "passkey/multi-fact: the local corpus the facts hide in.")
    data: str | None = setting(None, "Local copy of a hub task's data (LongBench data.zip, BABILong .json).")
    batch_size: int = setting(16, "Samples read, scored and decoded together.")
    decode: bool = setting(True, "Greedy answers by free decoding (stopped by the end id, a line break for one-line "
                                 "tasks, or --max-new-tokens); --no-decode: the teacher-forced argmax alone.")
    memory_attention: int = setting(0, "Samples of each cell whose attention on the memory read slot is measured, per "
                                       "layer, in an eager pass after the evaluation (record columns read_attention*); "
                                       "0: off. Raw shares mostly measure the attention sink: read them beside "
                                       "memory_swap.")
    memory_swap: int = setting(0, "Samples of each cell read again with another sample's state where the answer's "
                                  "segment opens: does the answer follow the memory (record columns swap_*)? 0: off.")
    engine: EngineOptions = field(default_factory=EngineOptions)
    checkpoint: str | None = setting(None, "Folder written by `hmtbench train`: its tensors, and the settings you "
                                           "do not give (backbone too).")
    selected_on: str | None = selected_on_field()


def qa_configs(given: dict[str, Any], grid: Sequence[str] | None = None) -> list[QAConfig]:
    """One typed config per method and context length asked for (``context_length`` may be a list such as
    "1k,4k,1m"), the checkpoint's settings filling what was not given; with ``grid`` (``--grid KEY=V1,V2``), one per
    combination of its values too, each named by them (``resolve.gridded``)."""
    return gridded(given, grid, _per_length)


def _per_length(given: dict[str, Any]) -> list[QAConfig]:
    checkpoint = given.get("checkpoint")
    lengths = given.get("context_length")
    if not isinstance(lengths, str):
        return resolve(QAConfig, given, checkpoint)
    return [config for length in parse_counts(lengths, "--context-length")
            for config in resolve(QAConfig, {**given, "context_length": length}, checkpoint)]
