"""What a record says about itself for comparisons: per-document NLL, its name, its seeds and the split it was chosen
on (eval-ppl end to end on a tiny random model; checkpoint columns from a checkpoint's meta)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from hmtbench.evaluation.perplexity import stream_order
from hmtbench.resolve import names_per_method
from hmtbench.results.record_columns import training_columns
from tests.test_cli_eval_ppl import text

L, TEST_LENGTH = 32, 400


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """A short document first and a long one second: stream scoring reads them the other way round."""
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, words, seed in [("a.txt", 20, 0), ("b.txt", 60, 1)]:
        (folder / name).write_text(text(words, seed))
    return folder


def eval_ppl(dataset: Path, out: Path, *extra: str):
    result = CliRunner().invoke(app, ["eval-ppl", "--backbone", "random:llama", "--dataset", str(dataset), "--out",
                                      str(out), "--segment-length", str(L), "--test-length", str(TEST_LENGTH),
                                      "--batch-size", "2", *extra])
    assert result.exit_code == 0, result.output
    return pd.concat([pd.read_parquet(f) for f in sorted(out.glob("*.parquet"))], ignore_index=True)


def test_eval_ppl_records_each_documents_nll_in_corpus_order(corpus_dir: Path, tmp_path: Path) -> None:
    """The two-document record's per-document NLL equals each document evaluated alone, in the corpus's order
    (a, b), although b was scored first; its sums are the record's totals."""
    (both,) = eval_ppl(corpus_dir, tmp_path / "both", "--method", "rmt").to_dict("records")
    alone = [eval_ppl(corpus_dir / name, tmp_path / name, "--method", "rmt").iloc[0] for name in ("a.txt", "b.txt")]
    assert stream_order([[0] * 3, [0] * 9]) == [1, 0]  # longest first: the long document b is scored first
    assert list(both["doc_tokens"]) == [int(r["tokens_scored"]) for r in alone] == [len(text(20, 0)), TEST_LENGTH - 1]
    assert list(both["doc_nll"]) == pytest.approx([r["nll_mean"] * r["tokens_scored"] for r in alone], rel=1e-5)
    assert sum(both["doc_nll"]) == pytest.approx(both["nll_mean"] * both["tokens_scored"], rel=1e-12)
    assert sum(both["doc_tokens"]) == both["tokens_scored"]


def test_eval_ppl_records_names_per_method_and_the_split_chosen_on(corpus_dir: Path, tmp_path: Path) -> None:
    rows = eval_ppl(corpus_dir, tmp_path / "out", "--method", "plain,rmt", "--name", "baseline,memory",
                    "--selected-on", "validation").set_index("method")
    assert rows["name"].to_dict() == {"plain": "baseline", "rmt": "memory"}
    assert set(rows["selected_on"]) == {"validation"} and set(rows["split"]) == {"test"}
    assert rows["train_seed"].isna().all() and rows["train_recipe"].isna().all()  # untrained
    unnamed = eval_ppl(corpus_dir, tmp_path / "unnamed", "--method", "plain")
    assert unnamed["name"].isna().all() and unnamed["selected_on"].isna().all()


@pytest.mark.parametrize(("flags", "message"), [
    (["--method", "plain,rmt", "--name", "only-one"], "--name takes one name per --method"),
    (["--method", "plain", "--selected-on", "tset"], "unknown --selected-on 'tset'"),
])
def test_a_name_or_split_that_does_not_fit_is_one_line(corpus_dir: Path, tmp_path: Path, flags: list[str],
                                                        message: str) -> None:
    result = CliRunner().invoke(app, ["eval-ppl", "--backbone", "random:llama", "--dataset", str(corpus_dir),
                                      "--out", str(tmp_path / "out"), "--segment-length", str(L), *flags])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_names_per_method() -> None:
    assert names_per_method("a, b", ["plain", "rmt", "plain"]) == {"plain": "a", "rmt": "b"}
    assert names_per_method(None, ["hmt"]) == {"hmt": None}
    with pytest.raises(HmtbenchError, match=r"one name per --method, .*\(1: hmt\); got .a,."):
        names_per_method("a,", ["hmt"])


def test_training_columns_leave_seeds_and_folders_out_of_the_recipe() -> None:
    def config(seed: int, folder: str, lr: float = 1e-4) -> dict:
        return {"method": {"name": "hmt", "sensory_tokens": 32}, "output_dir": folder, "out": "results",
                "name": "span", "train": {"seed": seed, "lr": lr, "log_every": 10, "init_from": None}}

    one, two = training_columns(config(1, "runs/a")), training_columns(config(2, "runs/b"))
    assert (one["train_seed"], two["train_seed"]) == (1, 2)
    assert one["train_recipe"] == two["train_recipe"] and len(one["train_recipe"]) == 16
    assert training_columns(config(1, "runs/a", lr=2e-4))["train_recipe"] != one["train_recipe"]
    # two checkpoints of one run (stage 1 and stage 2 finals) are two recipes
    stage1 = training_columns(config(1, "runs/a"), {"step": 200, "method": {"name": "hmt", "stage": 1}})
    stage2 = training_columns(config(1, "runs/a"), {"step": 500, "method": {"name": "hmt", "stage": 2}})
    assert stage1["train_recipe"] != stage2["train_recipe"] != one["train_recipe"]
    assert training_columns(None) == {"train_seed": None, "train_data_seed": None, "train_lora_seed": None,
                                      "train_recipe": None, "train_budget": None}
    # a setting added later (train.lora_seed) at the value that trains as before leaves the recipe's hash alone
    later = config(1, "runs/a")
    later["train"]["lora_seed"] = None
    assert training_columns(later)["train_recipe"] == one["train_recipe"]
    later["train"]["lora_seed"] = 7  # seed 1's memory with LoRA drawn from seed 7: another recipe, named
    assert (training_columns(later)["train_lora_seed"], one["train_lora_seed"]) == (7, None)
    assert training_columns(later)["train_recipe"] != one["train_recipe"]
    crossed = config(1, "runs/a")
    crossed["train"]["data_seed"] = 2  # seed 1's initialisation on seed 2's data: another recipe, named
    assert (training_columns(crossed)["train_data_seed"], one["train_data_seed"]) == (2, None)
    assert training_columns(crossed)["train_recipe"] != one["train_recipe"]
    budgeted = config(1, "runs/a")
    budgeted["train"]["max_tokens"] = 5_000
    assert training_columns(budgeted)["train_budget"] == 5_000 and one["train_budget"] is None
    assert training_columns(budgeted)["train_recipe"] != one["train_recipe"]  # a budget changes what trains
    assert math.isfinite(one["train_seed"])


def test_checkpoints_of_one_recipe_at_two_training_seeds_compare_as_one_cell(tmp_path: Path) -> None:
    """train at seeds 0 and 1 (one recipe, named), eval-ppl each checkpoint: the records carry the training's seed
    and one recipe, and compare shows one RMT cell of two training seeds."""
    import dataclasses

    from hmtbench.analysis.compare import build
    from hmtbench.analysis.load import load_results
    from hmtbench.commands.train import run_train
    from tests.test_train import config_for

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text(400, 3))
    for seed in (0, 1):
        config = config_for(str(corpus), tmp_path / f"seed{seed}", seed=seed)
        config = dataclasses.replace(config, name="rmt-short")
        (trained,) = run_train(config)
        assert (trained["name"], trained["train_seed"]) == ("rmt-short", seed)
        eval_ppl(corpus, tmp_path / "evals", "--method", "rmt", "--checkpoint",
                 str(tmp_path / f"seed{seed}" / "run" / "train" / "final"), "--test-length", "200")
    frame = load_results([tmp_path / "evals"], warn=lambda m: None)
    assert sorted(frame["train_seed"]) == [0, 1] and frame["train_recipe"].nunique() == 1
    (row,) = build(frame, "ppl").rows
    cell = row.cells["rmt"]
    assert cell.count == 2 and cell.mean == pytest.approx(frame["ppl"].mean()) and cell.std > 0
    assert row.full["rmt"]["checkpoint"].endswith("(train seeds 0, 1)")


def test_bench_names_each_method(tmp_path: Path) -> None:
    from tests.test_bench import bench

    _, _, rows = bench(tmp_path / "bench", "--method", "plain,rmt", "--name", "base,memory", "--lengths", "64",
                       "--mode", "eval")
    assert rows.set_index("method")["name"].to_dict() == {"plain": "base", "rmt": "memory"}


def test_eval_qa_records_names_per_method_at_every_length_and_the_split_chosen_on(tmp_path: Path) -> None:
    out = tmp_path / "qa"
    result = CliRunner().invoke(app, ["eval-qa", "--backbone", "random:llama", "--segment-length", "64", "--task",
                                      "passkey", "--context-length", "300,600", "--limit", "2", "--method",
                                      "plain,rmt", "--name", "base,memory", "--selected-on", "validation", "--out",
                                      str(out), "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    rows = pd.concat([pd.read_parquet(f) for f in sorted(out.glob("*.parquet"))], ignore_index=True)
    assert sorted(zip(rows["method"], rows["context_length"], rows["name"], strict=True)) == [
        ("plain", 300, "base"), ("plain", 600, "base"), ("rmt", 300, "memory"), ("rmt", 600, "memory")]
    assert set(rows["selected_on"]) == {"validation"}
