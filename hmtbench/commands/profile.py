"""`hmtbench profile`: where the time of bench's cases goes. Evaluation cases: the summary pass, the segment steps
and their kernels (``benchmark.profile``); training cases: the step's kernels by kind and the device's idle share
(``benchmark.profile_train``, a CUDA device)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hmtbench.backbones import load_backbone
from hmtbench.benchmark.cases import build_case, plan_cases
from hmtbench.benchmark.config import BenchConfig
from hmtbench.benchmark.profile import Profile, describe, profile_eval
from hmtbench.benchmark.profile_train import describe as describe_train
from hmtbench.benchmark.profile_train import profile_train
from hmtbench.config import to_dict
from hmtbench.errors import HmtbenchError
from hmtbench.progress import quiet_transformers
from hmtbench.resolve import names_per_method
from hmtbench.results.provenance import device_name, provenance


def run_profile(config: BenchConfig, command_line: list[str] | None = None, top: int = 25,
                json_path: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Profile every case ``hmtbench bench`` would measure for ``config``; print each mode's tables; return (and
    with ``json_path`` write) the profiles. A case no method can be built for is named and left out."""
    quiet_transformers()
    backbone = load_backbone(config.backbone, dtype=config.dtype, device=config.device)
    labels = names_per_method(config.name, [m.name for m in config.method])
    evaluated: list[Profile] = []
    trained: list[dict[str, Any]] = []
    echo(f"{config.backbone} on {device_name(backbone.device)}, engine {dataclasses.asdict(config.engine)}")
    for case in plan_cases(config):
        label = labels.get(case.method.name) or case.method.name
        if case.mode == "train":
            trained.append(profile_train(backbone, case, config, label, top))
            echo(describe_train(trained[-1]))
            continue
        try:
            model = build_case(backbone, case, config)
        except HmtbenchError as err:  # e.g. full context beyond the backbone's positions
            echo(f"{label} at {case.length:,} tokens, batch {case.batch_size}: skipped ({err})")
            continue
        evaluated.append(profile_eval(backbone, model, case, label, config.warmup, config.repeat, config.seed,
                                      config.engine))
    if evaluated:
        echo(describe(evaluated))
    report = {**provenance(command_line), "device_name": device_name(backbone.device), "config": to_dict(config),
              "eval": [dataclasses.asdict(p) for p in evaluated], "train": trained}
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=1, default=str))
    return report
