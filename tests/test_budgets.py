"""Training tokens in a comparison: a recipe's seeds as one range, and the equal-budget rule on ranges."""

from __future__ import annotations

import pandas as pd

from hmtbench.analysis.budgets import SeedTokens, budget_note, seed_tokens

KEY = {"task": "passkey", "context_length": 4096, "variant": "hmt: train_tokens=…"}


def test_a_recipes_seeds_read_as_one_range_and_other_runs_keep_their_count() -> None:
    recipe = "recipe 4be5bc58 (train seeds 1, 2, 3)"
    runs = pd.DataFrame({"checkpoint": [recipe, recipe, recipe, "/runs/one/final"],
                         "train_tokens": [9_853_364, 5_233_844, 7_000_000, 1_000]})
    tokens = list(seed_tokens(runs)["train_tokens"])
    assert tokens == [SeedTokens(5_233_844, 9_853_364)] * 3 + [1_000]
    assert str(tokens[0]) == "5233844-9853364 over seeds"


def test_a_range_keeps_the_rule_only_where_its_least_seed_reached_the_budget() -> None:
    full = {"hmt": {"train_tokens": SeedTokens(5_200_100, 5_260_000), "train_budget": 5_200_000},
            "rmt": {"train_tokens": 5_203_000, "train_budget": 5_200_000},
            "plain": {}}
    assert budget_note(KEY, full) is None
    full["hmt"]["train_tokens"] = SeedTokens(5_100_000, 5_260_000)  # one seed's steps ended it short
    assert budget_note(KEY, full) == ("unequal training budgets in task=passkey · context_length=4096: rmt 5,203,000, "
                                      "hmt 5100000-5260000 over seeds tokens trained (docs/methods.md, "
                                      "'Equal budgets')")
    del full["hmt"]["train_budget"]  # no budget in common: unequal counts are unequal budgets
    full["hmt"]["train_tokens"] = SeedTokens(5_200_100, 5_260_000)
    assert budget_note(KEY, full) is not None
    assert budget_note(KEY, {"hmt": {"train_tokens": 4_000}, "rmt": {"train_tokens": 4_000}}) is None


def test_a_documents_table_gets_one_line_of_each_methods_tokens_and_whether_the_rule_holds() -> None:
    from hmtbench.analysis.budgets import budget_summary
    from hmtbench.analysis.compare import Row

    short = Row({**KEY, "context_length": 1024}, {}, full={"hmt": {"train_tokens": SeedTokens(5_233_844, 9_853_364)},
                                                           "full": {"train_tokens": 4_259_343}, "plain": {}})
    long = Row(KEY, {}, full={"hmt": {"train_tokens": SeedTokens(5_100_000, 9_853_364)},
                              "retrieval": {"train_tokens": 4_344_770}})
    kept = Row(KEY, {}, full={"hmt": {"train_tokens": 1_000}, "rmt": {"train_tokens": 1_000}})  # equal counts
    assert budget_summary([short, long]) == (
        "training tokens: full 4.26M, HMT 5.10–9.85M, BM25 4.34M (unequal budgets: docs/methods.md, 'Equal budgets')")
    assert budget_summary([kept]) == ("training tokens: RMT 1,000, HMT 1,000 (one budget in every row: "
                                      "docs/methods.md, 'Equal budgets')")
    assert budget_summary([Row(KEY, {}, full={"plain": {}})]) is None
    assert budget_summary([long]) == "training tokens: HMT 5.10–9.85M, BM25 4.34M (unequal budgets: docs/methods.md, " \
                                     "'Equal budgets')"
    assert budget_summary([Row(KEY, {}, full={"hmt": {"train_tokens": 2_360_000}})]) == "training tokens: HMT 2.36M"
    older = Row(KEY, {}, full={"hmt": {"train_tokens": 2_360_000}, "rmt": {"checkpoint": "runs/rmt/final"}})
    assert budget_summary([older]) == "training tokens: HMT 2.36M; RMT: not recorded"
