"""Record columns computed from what a run measured: intervals, per-depth scores, the data's hash.

Each is computed here once, so every command that fills a column fills it the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hmtbench.results.provenance import tokens_sha256
from hmtbench.stats import proportion_interval

BINARY_METRICS = ("accuracy", "exact_match")  # 0/1 per sample: Wilson intervals apply


def ppl_columns(result: Any, documents: Sequence[Sequence[int]]) -> dict[str, Any]:
    """eval-ppl: 95% bootstrap interval of ppl (``PerplexityResult.ppl_interval``) and the token ids' sha256."""
    low, high = result.ppl_interval()
    return {"ppl_ci_low": low, "ppl_ci_high": high, "data_sha256": tokens_sha256(documents)}


def qa_columns(records: Sequence[dict[str, Any]], documents: Sequence[Sequence[int]]) -> dict[str, Any]:
    """eval-qa: 95% Wilson intervals of accuracy and exact match, scores by needle depth, the token ids' sha256."""
    columns: dict[str, Any] = {"by_depth": depth_breakdown(records), "data_sha256": tokens_sha256(documents)}
    for metric in BINARY_METRICS:
        columns[f"{metric}_ci_low"], columns[f"{metric}_ci_high"] = proportion_interval([r[metric] for r in records])
    return columns


def depth_breakdown(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """[{"depth", "n", "accuracy", "exact_match"}] by needle depth (``meta.depth``), shallowest first.

    None when no sample has a depth (tasks without needles), so the column stays null there.
    """
    groups: dict[float, list[dict[str, Any]]] = {}
    for record in records:
        depth = (record.get("meta") or {}).get("depth")
        if depth is not None:
            groups.setdefault(float(depth), []).append(record)
    if not groups:
        return None
    return [
        {"depth": depth, "n": len(group), **{m: sum(r[m] for r in group) / len(group) for m in BINARY_METRICS}}
        for depth, group in sorted(groups.items())
    ]
