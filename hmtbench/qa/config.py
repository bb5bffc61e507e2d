"""`hmtbench eval-qa`'s settings: the task, its samples and how answers are read and generated."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hmtbench.config import EngineOptions, RunSettings, parse_counts
from hmtbench.resolve import named_runs, resolve

EVAL_SPLITS = ("validation", "test")  # choices are made on validation, the table is run once on test


@dataclass
class QAConfig(RunSettings):
    task: str = "passkey"  # a registered task or a local .jsonl file
    split: str = "test"  # validation | test: generated tasks draw each from seeds of its own
    context_length: int | None = None  # prompt tokens: built (needle, BABILong bin) or fitted by truncation
    limit: int | None = None
    max_new_tokens: int | None = None  # None: the task's own default
    depths: list[float] | None = None  # needle tasks
    filler: str = "pydoc-topics"  # needle tasks
    data: str | None = None  # a local copy of a hub task's data
    batch_size: int = 16  # samples read, scored and decoded together
    decode: bool = True  # greedy answers by free decoding (else the teacher-forced argmax alone)
    engine: EngineOptions = field(default_factory=EngineOptions)
    checkpoint: str | None = None
    selected_on: str | None = None  # the split this configuration was chosen on (validation | test)


def qa_configs(given: dict[str, Any]) -> list[QAConfig]:
    """One typed config per method and context length asked for (``context_length`` may be a list such as
    "1k,4k,1m"), the checkpoint's settings filling what was not given."""
    checkpoint = given.get("checkpoint")
    lengths = given.get("context_length")
    if not isinstance(lengths, str):
        return named_runs(resolve(QAConfig, given, checkpoint))
    return named_runs([config for length in parse_counts(lengths, "--context-length")
                       for config in resolve(QAConfig, {**given, "context_length": length}, checkpoint)])
