"""Training tokens in a comparison: one run's count, or the range over a recipe's seeds, and the note a row gets
where its trained methods break the rule for equal budgets (docs/methods.md, 'Equal budgets')."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hmtbench.analysis.columns import is_recipe_checkpoint, plain
from hmtbench.analysis.row_text import describe, order_methods
from hmtbench.methods import method_label


@dataclass(frozen=True)
class SeedTokens:
    """The training tokens of one recipe's runs at several seeds, least and most."""

    least: int
    most: int

    def __str__(self) -> str:
        return f"{self.least}-{self.most} over seeds"


def seed_tokens(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of one recipe at several training seeds (one checkpoint setting, ``load.recipe_checkpoints``) with their
    training tokens as the range over those seeds (``SeedTokens``): a curriculum advances at each seed's own pace, so
    the tokens a fixed number of steps reads is an outcome of the training, not a setting that keeps the seeds apart.
    The range is taken over every run of the recipe, at every length, so a length read at fewer seeds stays in its
    row."""
    seeded = runs["checkpoint"].map(is_recipe_checkpoint).astype(bool)
    if not seeded.any() or "train_tokens" not in runs:
        return runs
    runs = runs.assign(train_tokens=runs["train_tokens"].astype(object))
    for name in runs.loc[seeded, "checkpoint"].unique():
        mine = runs["checkpoint"].eq(name)
        found = sorted({int(v) for v in runs.loc[mine, "train_tokens"] if plain(v) is not None})
        if len(found) > 1:
            runs.loc[mine, "train_tokens"] = SeedTokens(found[0], found[-1])
    return runs


def budget_note(key: dict[str, Any], full: dict[str, dict[str, Any]]) -> str | None:
    """The note for a row (its ``key``; ``full``: each method's settings) whose trained methods read different numbers
    of training tokens (``train_tokens``) with no one budget that all reached; None where the rule holds."""
    tokens = {m: settings.get("train_tokens") for m, settings in full.items()
              if settings.get("train_tokens") is not None}
    if len(set(tokens.values())) < 2 or _one_budget_met(full, tokens):
        return None
    trained = ", ".join(f"{m} {tokens[m]}" if isinstance(tokens[m], SeedTokens) else f"{m} {tokens[m]:,}"
                        for m in order_methods(tokens))
    return (f"unequal training budgets in {describe(key, skip=('variant',))}: {trained} tokens trained "
            "(docs/methods.md, 'Equal budgets')")


def _one_budget_met(full: dict[str, dict[str, Any]], tokens: dict[str, Any]) -> bool:
    """Whether every trained method trained to one token budget (``train_budget``, train.max_tokens) and reached it:
    their tokens then differ by less than a step's, which is the rule for equal budgets kept."""
    budgets = {plain(full[m].get("train_budget")) for m in tokens}
    if len(budgets) != 1 or None in budgets:
        return False
    (budget,) = budgets
    return all(_least(value) >= budget for value in tokens.values())


def _least(value: int | SeedTokens) -> int:
    """A cell's training tokens: one run's, or the least of a recipe's seeds."""
    return value.least if isinstance(value, SeedTokens) else int(value)


def budget_summary(rows: Sequence[Any]) -> str | None:
    """One line for a document's table: each trained method's training tokens over its rows, least to most (seeds
    and rows alike), and whether the rule for equal budgets holds in every row (``budget_note``); None where no row
    has a trained method."""
    spans: dict[str, tuple[int, int]] = {}
    unrecorded: set[str] = set()  # trained (a checkpoint) by records older than the train_tokens column
    unequal = any(budget_note(row.key, row.full) is not None for row in rows)
    for row in rows:
        for method, settings in row.full.items():
            value = settings.get("train_tokens")
            if plain(value) is None:
                if plain(settings.get("checkpoint")) is not None:
                    unrecorded.add(method)
                continue
            low, high = (value.least, value.most) if isinstance(value, SeedTokens) else (int(value), int(value))
            least, most = spans.get(method, (low, high))
            spans[method] = (min(least, low), max(most, high))
    if not spans:
        return None
    trained = ", ".join(f"{method_label(m)} {_tokens_text(*spans[m])}" for m in order_methods(spans))
    if unrecorded := unrecorded - set(spans):
        trained += f"; {', '.join(map(method_label, order_methods(unrecorded)))}: not recorded"
    if len(spans) == 1:
        return f"training tokens: {trained}"
    rule = "unequal budgets" if unequal else "one budget in every row"
    return f"training tokens: {trained} ({rule}: docs/methods.md, 'Equal budgets')"


def _tokens_text(least: int, most: int) -> str:
    """Tokens as millions to two places (a range where its ends differ there); below a million, as counted."""
    if most < 1e6:
        return f"{least:,}" if least == most else f"{least:,}–{most:,}"
    return f"{least / 1e6:.2f}M" if round(least, -4) == round(most, -4) else f"{least / 1e6:.2f}–{most / 1e6:.2f}M"
