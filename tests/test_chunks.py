"""Training in chunks: --max-minutes then --resume is bit-exact, the budget (tokens) survives every stage and chunk,
fixed-step curriculum levels as stages of their own, and the ledger of what each chunk cost."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from hmtbench.checkpoints import load_tensors
from hmtbench.commands.train import describe_stage, load_run_config, run_train
from hmtbench.config import DataSettings, method_config
from hmtbench.errors import HmtbenchError
from hmtbench.results.ledger import read_ledger
from hmtbench.training.config import CurriculumSettings, TrainConfig, TrainSettings
from hmtbench.training.plan import plan_stages
from tests.test_train import TEXT


@pytest.fixture
def corpus(tmp_path: Path) -> str:
    (tmp_path / "corpus.txt").write_text(TEXT)
    return str(tmp_path / "corpus.txt")


def config_for(corpus: str, folder: Path, **train: object) -> TrainConfig:
    settings = {"steps": 6, "bptt_depth": 3, "batch_size": 2, "lr": 1e-2, "log_every": 2, "checkpoint_every": 100,
                "seed": 0, "train": "lora", **train}
    return TrainConfig(backbone="random:llama", method=method_config("rmt", {"memory_tokens": 2}),
                       segment_length=24, data=DataSettings(dataset=corpus), train=TrainSettings(**settings),
                       output_dir=str(folder / "run"), out=str(folder / "results"))


def records(folder: Path) -> pd.DataFrame:
    frame = pd.concat(pd.read_parquet(p) for p in (folder / "results").glob("*.parquet"))
    return frame.sort_values(["created_at", "train_tokens"])  # one second apart or less: the budget orders them


def test_chunks_of_max_minutes_resume_bit_for_bit_and_keep_the_token_count(corpus: str, tmp_path: Path) -> None:
    """Three chunks of one step pair each (every --max-minutes spent at once: each chunk ends at its first logged
    step) end with the tensors, optimizer state, losses and token count of the uninterrupted run, exactly; each chunk
    leaves a ledger line, and their tokens add up to the run's."""
    run_train(config_for(corpus, tmp_path / "a"))
    chunked = config_for(corpus, tmp_path / "b", max_minutes=1e-9, max_file_mb=1.0)
    [first] = run_train(chunked)
    assert describe_stage(first).startswith("rmt stopped: final loss ")
    assert describe_stage(first).endswith(" at step 2 of 6")
    for _ in range(2):
        [last] = run_train(load_run_config(chunked.output_dir, {"train": {"max_minutes": 1e-9}}),
                           resume=chunked.output_dir)
    assert describe_stage(last).startswith("rmt complete: final loss ")
    assert describe_stage(last).endswith(" at step 6 (2 run now, resumed at step 4)")
    a, b = (tmp_path / x / "run" / "train" for x in "ab")
    straight, resumed = load_tensors(a / "final"), load_tensors(b / "final")
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert (b / "last" / "trainer_state.json").is_file()  # resumable at the end too
    logged = [[json.loads(line)["loss"] for line in (x / "log.jsonl").read_text().splitlines()] for x in (a, b)]
    assert logged[0] == logged[1]  # steps 2, 4, 6: each chunk logs the step it stops at
    tokens = 6 * 2 * 3 * 20  # steps x windows x D segments x S text tokens
    meta = [json.loads((x / "final" / "checkpoint.json").read_text()) for x in (a, b)]
    assert meta[0]["train_tokens"] == meta[1]["train_tokens"] == tokens
    ledger = read_ledger(tmp_path / "b" / "results")
    assert [(r["steps_from"], r["steps_to"], r["tokens"]) for r in ledger] == [("0", "2", "240"), ("2", "4", "240"),
                                                                              ("4", "6", "240")]
    assert [int(r["train_tokens"]) for r in ledger] == [240, 480, tokens]
    assert records(tmp_path / "b")["train_tokens"].tolist() == [240, 480, tokens]


def test_a_run_stops_at_its_deadline_instead_of_starting_the_next_stage(corpus: str, tmp_path: Path) -> None:
    """--max-minutes is the run's: a stage it ends leaves the next one to --resume (which starts from the first
    stage's complete final tensors, never from an unfinished stage)."""
    config = dataclasses.replace(
        config_for(corpus, tmp_path, max_minutes=1e-9, stages=[1, 2], stage1_steps=4),
        method=method_config("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16}))
    rows = run_train(config)
    assert [row["end_step"] for row in rows] == [2] and not (tmp_path / "run" / "stage2").exists()
    again = load_run_config(config.output_dir)
    rows = run_train(dataclasses.replace(again, train=dataclasses.replace(again.train, max_minutes=None)),
                     resume=config.output_dir)
    assert [row["end_step"] for row in rows] == [4, 6]
    config = dataclasses.replace(config, output_dir=str(tmp_path / "other"))
    rows = run_train(dataclasses.replace(config, train=dataclasses.replace(config.train, stage1_steps=2)))
    assert [row["end_step"] for row in rows] == [2] and not (tmp_path / "other" / "stage2").exists()  # no new stage
    assert (tmp_path / "other" / "stage1" / "final").is_dir()  # the first one complete
    stage1 = json.loads((tmp_path / "run" / "stage1" / "final" / "checkpoint.json").read_text())
    stage2 = json.loads((tmp_path / "run" / "stage2" / "final" / "checkpoint.json").read_text())
    assert stage2["tokens_before"] == stage1["train_tokens"] == 4 * 2 * 3 * 18
    assert stage2["train_tokens"] == stage1["train_tokens"] + 6 * 2 * 3 * 18


def test_a_token_budget_ends_the_run_complete_at_the_first_step_that_reaches_it(corpus: str, tmp_path: Path) -> None:
    """train.max_tokens (the rule for equal budgets): HMT reads 108 tokens a step, so a budget of 300 ends stage 1 at
    step 3 of 6 with the tensors of a run of 3 steps, bit for bit; stage 2 never starts, --resume finds the run
    complete, and the record names the budget. A budget of 700 ends stage 2 at its first step (648 + 108)."""
    hmt = method_config("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16})
    budgeted = dataclasses.replace(config_for(corpus, tmp_path / "a", max_tokens=300, stages=[1, 2], stage1_steps=6),
                                   method=hmt)
    rows = run_train(budgeted)
    assert [(row["end_step"], row["train_tokens"], row["train_budget"]) for row in rows] == [(3, 324, 300)]
    assert not (tmp_path / "a" / "run" / "stage2").exists()
    assert run_train(load_run_config(budgeted.output_dir), resume=budgeted.output_dir) == []  # nothing left
    short = dataclasses.replace(config_for(corpus, tmp_path / "b", stages=[1], steps=3), method=hmt)
    run_train(short)
    cut, stepped = (load_tensors(tmp_path / x / "run" / "stage1" / "final") for x in "ab")
    assert cut.keys() == stepped.keys() and all(torch.equal(cut[k], stepped[k]) for k in cut)
    later = dataclasses.replace(budgeted, output_dir=str(tmp_path / "c" / "run"), out=str(tmp_path / "c" / "results"),
                                train=dataclasses.replace(budgeted.train, max_tokens=700))
    assert [(row["end_step"], row["train_tokens"]) for row in run_train(later)] == [(6, 648), (1, 756)]
    assert records(tmp_path / "c")["train_budget"].tolist() == [700, 700]
    with pytest.raises(HmtbenchError, match="train.max_tokens must be positive"):
        TrainSettings(max_tokens=0)
    spent = dataclasses.replace(short, output_dir=str(tmp_path / "d" / "run"),
                                train=dataclasses.replace(short.train, max_tokens=324,
                                                          init_from=str(tmp_path / "a" / "run" / "stage1" / "final")))
    with pytest.raises(HmtbenchError, match="has read 324 tokens, the whole train.max_tokens .324.: nothing to train"):
        run_train(spent)


def test_resume_takes_a_new_time_budget_compile_flag_and_results_folder_only(corpus: str, tmp_path: Path) -> None:
    config = config_for(corpus, tmp_path, max_minutes=5.0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(__import__("hmtbench.config").config.dump_yaml(config))
    assert load_run_config(str(tmp_path / "run")).train.max_minutes == 5.0
    assert load_run_config(str(tmp_path / "run"), {"train": {"max_minutes": 9}}).train.max_minutes == 9
    assert load_run_config(str(tmp_path / "run"), {"out": "elsewhere"}).out == "elsewhere"
    assert load_run_config(str(tmp_path / "run"), {"device": "cpu"}).device == "cpu"
    assert load_run_config(str(tmp_path / "run"), {"train": {"compile": True}}).train.compile is True
    assert load_run_config(str(tmp_path / "run"), {"train": {"compile": None}}).train.compile is False  # as saved
    with pytest.raises(HmtbenchError, match="only --max-minutes, --compile, --out and --device apply, got segment_le"):
        load_run_config(str(tmp_path / "run"), {"train": {"lr": 1.0}, "segment_length": 32})
    (tmp_path / "run").rename(tmp_path / "moved")  # carried to another machine between chunks
    assert load_run_config(str(tmp_path / "moved")).output_dir == str(tmp_path / "moved")


def passkey_config(tmp_path: Path, **curriculum: object) -> TrainConfig:
    return TrainConfig(
        backbone="random:llama", method=method_config("rmt", {"memory_tokens": 2}), segment_length=304,
        curriculum=CurriculumSettings(task="passkey", segments=[2, 3], needles="earlier", **curriculum),
        train=TrainSettings(batch_size=2, lr=1e-3, log_every=1, checkpoint_every=100, seed=0, train="lora",
                            lr_schedule="linear", warmup_share=0.5, decay_horizon=2.0),
        output_dir=str(tmp_path / "run"), out=str(tmp_path / "results"), recipe="recipes/x.yaml")


def test_levels_with_fixed_steps_restart_as_stages_of_their_own(tmp_path: Path) -> None:
    """curriculum.restart_per_level (the RMT BABILong script's levels): one stage per level, each from the last
    level's final tensors with a fresh optimizer and schedule, on the samples one stage over both levels reads."""
    config = passkey_config(tmp_path, level_steps=[2, 3], restart_per_level=True)
    assert [(s.folder, s.steps, s.level) for s in plan_stages(config)] == [("level1", 2, 0), ("level2", 3, 1)]
    rows = run_train(config)
    assert [r["curriculum_segments"] for r in rows] == [2, 3] and [r["steps"] for r in rows] == [2, 3]
    logs = [[json.loads(line) for line in (tmp_path / "run" / f"level{j}" / "log.jsonl").read_text().splitlines()]
            for j in (1, 2)]
    # the lr logged after step t is step t + 1's: warm-up of int(0.5 x steps) = 1 step, then down to 0 at 2 x steps
    assert [e["lr"] for e in logs[0]] == pytest.approx([1e-3 * 3 / 3, 1e-3 * 2 / 3])
    assert [e["lr"] for e in logs[1]] == pytest.approx([1e-3 * 5 / 5, 1e-3 * 4 / 5, 1e-3 * 3 / 5])  # its own
    assert {e["segments"] for e in logs[1]} == {3} and {e["recipe"] for e in logs[0] + logs[1]} == {"recipes/x.yaml"}
    assert logs[1][-1]["train_tokens"] > logs[1][0]["train_tokens"] > logs[0][-1]["train_tokens"]
    level1 = json.loads((tmp_path / "run" / "level1" / "final" / "checkpoint.json").read_text())
    level2 = json.loads((tmp_path / "run" / "level2" / "final" / "checkpoint.json").read_text())
    assert level2["tokens_before"] == level1["train_tokens"] > 0
    frame = records(tmp_path)
    assert frame["recipe"].tolist() == ["recipes/x.yaml"] * 2
    assert frame["train_tokens"].tolist() == [level1["train_tokens"], level2["train_tokens"]]
    assert [r["stage"] for r in read_ledger(tmp_path / "results")] == ["rmt level 1", "rmt level 2"]
    assert all(" " not in r for r in frame["run_id"]) and "-train-rmt-level2-" in frame["run_id"].iloc[1]


def test_a_later_level_resumes_without_the_earlier_levels_final(tmp_path: Path) -> None:
    """A run folder carried to another machine with level 2's resumable checkpoint alone (level 1's final stayed
    behind): --resume goes on with level 2 from that checkpoint, to the tensors and token count of the run that kept
    everything, and never trains level 1 again (it once restarted level 1 and overwrote the run's progress)."""
    import shutil

    straight = passkey_config(tmp_path / "a", level_steps=[2, 3], restart_per_level=True)
    run_train(straight)
    chunked = passkey_config(tmp_path / "b", level_steps=[2, 3], restart_per_level=True)
    run = chunked.output_dir
    run_train(dataclasses.replace(chunked, train=dataclasses.replace(chunked.train, max_minutes=1e-9)))
    for _ in range(2):  # level 1's second step, then level 2's first: each chunk ends at its first logged step
        run_train(load_run_config(run, {"train": {"max_minutes": 1e-9}}), resume=run)
    level1, level2 = Path(run) / "level1", Path(run) / "level2"
    assert json.loads((level2 / "last" / "checkpoint.json").read_text())["step"] == 1
    shutil.rmtree(level1 / "final")
    again = load_run_config(run)
    rows = run_train(dataclasses.replace(again, train=dataclasses.replace(again.train, max_minutes=None)), resume=run)
    assert [(r["stage"], r["first_step"], r["end_step"]) for r in rows] == [("rmt level 2", 1, 3)]
    assert not (level1 / "final").exists()
    a, b = load_tensors(tmp_path / "a" / "run" / "level2" / "final"), load_tensors(level2 / "final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    frame, expected = records(tmp_path / "b"), records(tmp_path / "a")
    assert frame["train_tokens"].iloc[-1] == expected["train_tokens"].iloc[-1] > 0
    assert frame["checkpoint"].iloc[-1] == str(level2 / "last")  # built from the stage's own checkpoint
    assert [r["stage"] for r in read_ledger(tmp_path / "b" / "results")] == ["rmt level 1"] * 2 + ["rmt level 2"] * 2


def test_tensors_without_a_gradient_are_named_in_the_log_and_the_warning(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """HMT at two-segment contexts recalls from a cache of one memory: its attention weight is one whatever the
    query, so the recall's query and key and the summary prompt get no gradient (the paper's HMT trained a whole
    first level so). The log names them at every logged step of that level, and no longer from the next level on,
    where the cache holds two memories."""
    hmt = method_config("hmt", {"sensory_tokens": 4, "recall_hidden_dim": 16})
    config = passkey_config(tmp_path, level_steps=[3, 2])
    config = dataclasses.replace(config, method=hmt,
                                 train=dataclasses.replace(config.train, stages=[2], warmup_share=0.0))
    run_train(config)
    logged = [json.loads(line) for line in (tmp_path / "run" / "stage2" / "log.jsonl").read_text().splitlines()]
    silent = {"summary_prompt", "recall.wq.weight", "recall.wk.weight"}
    assert [(e["segments"], set(e.get("no_gradient", ()))) for e in logged[1:]] == [
        (2, silent), (2, silent), (3, set()), (3, set())]
    lora_a = set(logged[0]["no_gradient"]) - silent  # after the first step also each LoRA A (its B starts at zero)
    assert lora_a and all(name.endswith("lora_A.default.weight") for name in lora_a)
    capsys.readouterr()
    two = dataclasses.replace(config, output_dir=str(tmp_path / "two"), curriculum=dataclasses.replace(
        config.curriculum, segments=[2], level_steps=[3]))
    run_train(two)  # a stage that never leaves two segments: the warning at its end names them
    printed = " ".join("".join(capsys.readouterr()).split())
    assert ("warning: hmt stage 2: 3 trainable tensors have had no gradient in the stage's 3 steps, so they do not "
            "train: summary_prompt, recall.wq.weight, recall.wk.weight") in printed


def test_a_level_stage_reads_the_samples_of_its_place_in_one_stage(tmp_path: Path) -> None:
    from hmtbench.backbones import load_backbone
    from hmtbench.commands.train import build_for_training
    from hmtbench.training.objectives import make_objective

    config = passkey_config(tmp_path, level_steps=[2, 3], restart_per_level=True)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_accum=2))
    backbone = load_backbone("random:llama", device="cpu")
    model = build_for_training(backbone, config, None)
    whole = make_objective(dataclasses.replace(config, curriculum=dataclasses.replace(
        config.curriculum, restart_per_level=False)), model, backbone, None)
    second = make_objective(config, model, backbone, None, level=1)
    assert second.segments == 3 and second.first_index == 2 * 2
    whole.level = 1
    assert all(torch.equal(a, b) for a, b in zip(second.batch(0, 2), whole.batch(4, 2), strict=True))


def test_fixed_level_steps_advance_the_curriculum_in_one_stage(tmp_path: Path) -> None:
    """Without restart (the HMT reference's curriculum): one optimizer, the level moves on after its steps."""
    config = passkey_config(tmp_path, level_steps=[2, 1])
    assert [(s.folder, s.steps) for s in plan_stages(config)] == [("train", 3)]
    run_train(config)
    logged = [json.loads(line) for line in (tmp_path / "run" / "train" / "log.jsonl").read_text().splitlines()]
    assert [e["segments"] for e in logged] == [2, 2, 3] and logged[1]["advanced_to"] == 3
    assert logged[1]["level_done"] == 1 and "level_done" not in logged[2]
    level1 = tmp_path / "run" / "train" / "level1" / "final"  # the first level's tensors, for its own evaluation
    meta = json.loads((level1 / "checkpoint.json").read_text())
    assert meta["step"] == 2 and meta["train_tokens"] == logged[1]["train_tokens"]
    assert not (tmp_path / "run" / "train" / "level2").exists()  # the last level's tensors are the stage's final
    first, last = load_tensors(level1), load_tensors(tmp_path / "run" / "train" / "final")
    assert first.keys() == last.keys() and not all(torch.equal(first[k], last[k]) for k in first)


def test_level_settings_are_checked() -> None:
    with pytest.raises(HmtbenchError, match="a positive step count per level"):
        CurriculumSettings(task="passkey", segments=[2, 3], level_steps=[5])
    with pytest.raises(HmtbenchError, match="needs curriculum.level_steps"):
        CurriculumSettings(task="passkey", restart_per_level=True)
    with pytest.raises(HmtbenchError, match="two truncation rules"):
        TrainSettings(bptt_truncate=2, k2=2)
