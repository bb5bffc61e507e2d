"""scripts/gpu/protocol.sh on a CPU with a random Llama: a chain level trains to its fixed steps, a second chunk
skips it, its final travels through pack and unpack, and the evaluation reads it on the split it is given."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu" / "protocol.sh"


def protocol(*args: str, code: int = 0, **env: str) -> str:
    settings = {**os.environ, "BACKBONE": "random:llama", "PYTHON": sys.executable, "STEPS_SCALE": "0.01",
                "TRAIN_FLAGS": "--set train.batch_size=2", **env}
    done = subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=settings, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == code, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_chain_trains_once_travels_and_is_evaluated(tmp_path: Path) -> None:
    work, out, carried = tmp_path / "work", tmp_path / "out", tmp_path / "carried"
    out.mkdir()
    assert "rmt-s1-truncated: train exit 0" in protocol("train", str(work), "rmt", "1", "5")
    final = work / "runs" / "rmt-s1-truncated" / "train" / "final"
    assert json.loads((final / "checkpoint.json").read_text())["step"] == 5  # 490 steps x 0.01
    assert "rmt-s1-truncated: done (step 5)" in protocol("train", str(work), "rmt", "1", "5")
    level = final.parent / "level1" / "final"  # a curriculum level that ended inside the stage, at an earlier step
    shutil.copytree(final, level)
    meta = json.loads((level / "checkpoint.json").read_text())
    (level / "checkpoint.json").write_text(json.dumps({**meta, "step": 2}))
    assert "rmt-s1-truncated: done (step 5)" in protocol("train", str(work), "rmt", "1", "5")  # the stage's final
    shutil.rmtree(level.parent)

    protocol("pack", str(work), str(out), PACK_RUN="rmt-s1-*")
    with tarfile.open(out / "protocol.tgz") as packed:
        assert any(name.endswith(".parquet") for name in packed.getnames())  # the training record came back
    assert "rmt-s1-truncated/train/final/checkpoint.json" in protocol("unpack", str(carried), str(out))
    assert "rmt-s1-truncated: done (step 5)" in protocol("train", str(carried), "rmt", "1", "5")

    assert "has not reached its steps" in protocol("eval", str(carried), "validation", "1k", "rmt-s1", "rmt",
                                                   code=1, STEPS_SCALE="0.02")  # 10 steps asked, 5 trained
    assert "eval exit 0" in protocol("eval", str(carried), "validation", "1k", "rmt-s1", "rmt", LIMIT="2",
                                     DEPTHS="0.5")
    (record,) = (carried / "results" / "validation" / "passkey-rmt-s1-rmt").glob("*.parquet")
    row = pd.read_parquet(record).iloc[0]
    assert (row["split"], row["train_seed"], row["checkpoint"]) == ("validation", 1, str(final).replace(
        str(work), str(carried)))


@pytest.mark.slow
def test_a_chunk_stops_after_a_level_and_a_carried_level_skips_those_before_it(tmp_path: Path) -> None:
    work = tmp_path / "work"
    log = protocol("train", str(work), "hmt", "1", "5", STOP_AFTER="long")
    assert "hmt-s1-long: train exit 0" in log and "hmt-s1: stops after long (STOP_AFTER)" in log
    assert not (work / "runs" / "hmt-s1-long64").exists()
    assert "its last level has not reached its steps" in protocol("eval", str(work), "validation", "1k", "hmt-s1",
                                                                  "hmt", code=1)
    assert "its chain has no level 'short'" in protocol("eval", str(work), "validation", "1k", "hmt-s1", "hmt",
                                                        code=1, LEVEL="short")
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "hmt-s1", "hmt", LIMIT="2", DEPTHS="0.5",
                                     LEVEL="span")  # an earlier level's final, read on its own
    (record,) = (work / "results" / "validation" / "passkey-hmt-s1-hmt").glob("*.parquet")
    assert pd.read_parquet(record).iloc[0]["checkpoint"] == str(work / "runs" / "hmt-s1-span" / "stage2" / "final")

    shutil.rmtree(work / "runs" / "hmt-s1-span")  # a carried chain brings the last level's final only
    log = protocol("train", str(work), "hmt", "1", "5", STOP_AFTER="long")
    assert "hmt-s1-span: done" in log and "hmt-s1-long: done" in log and "train exit" not in log
    assert not (work / "runs" / "hmt-s1-span").exists()


@pytest.mark.slow
def test_a_validation_grid_lands_in_one_folder_that_pick_setting_reads(tmp_path: Path) -> None:
    work = tmp_path / "work"
    log = protocol("eval", str(work), "validation", "1k", "none", "hmt", "--grid", "method.recall_choice=soft,hard",
                   "--recall-context", "4", NAME="hmt-choices", LIMIT="2", DEPTHS="0.5")
    assert "eval exit 0" in log, log
    folder = work / "results" / "validation" / "passkey-hmt-choices"
    names = sorted(pd.read_parquet(path).iloc[0]["name"] for path in folder.glob("*.parquet"))
    assert names == ["hard", "soft"]
    picked = subprocess.run([sys.executable, str(ROOT / "scripts" / "pick_setting.py"), str(folder), "--default",
                             "soft"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert picked.returncode == 0 and picked.stdout.strip() in names, picked.stderr


def test_the_committed_chunks_are_adopted_with_every_chain_whole(tmp_path: Path) -> None:
    """results/h100-protocol into a fresh work folder: every seed's chain is whole (a train call starts no level),
    and the validation grid's 18 records (three seeds, six settings) join the grid's folder."""
    work = tmp_path / "work"
    log = protocol("adopt", str(work), str(ROOT / "results" / "h100-protocol"))
    assert "18 validation records" in log
    assert all(f"hmt-s{seed}-long64/stage2/final/checkpoint.json" in log for seed in (1, 2, 3))
    log = protocol("train", str(work), "hmt", "1,2,3", "1", STEPS_SCALE="1")  # a minute: too short to start a level
    assert all(f"hmt-s{seed}-long64: done (step 15)" in log for seed in (1, 2, 3)) and "train exit" not in log


@pytest.mark.slow
def test_a_level_out_of_memory_beside_the_others_runs_again_alone(tmp_path: Path) -> None:
    """Seed 2's first start fails as a training out of device memory does (before its first step); after the seeds
    side by side end, the chain runs seed 2 again alone, and its level reaches its steps."""
    marker, python = tmp_path / "failed-once", tmp_path / "python"
    python.write_text(f"""#!/usr/bin/env bash
if [[ " $* " == *" --seed 2 "* ]] && [ ! -e {marker} ]; then
  touch {marker}; echo "error: out of memory with 2-segment contexts at --batch-size 2; lower --batch-size"; exit 2
fi
exec {sys.executable} "$@"
""")
    python.chmod(0o755)
    work = tmp_path / "work"
    log = protocol("train", str(work), "rmt", "1,2", "5", PYTHON=str(python))
    assert "rmt-s2-truncated: stopped at step 0 of 5" in log
    assert "rmt-s2: out of device memory beside the other seeds; again, alone" in log
    assert log.count("train exit 0") == 2, log
    for seed in (1, 2):
        final = work / "runs" / f"rmt-s{seed}-truncated" / "train" / "final"
        assert json.loads((final / "checkpoint.json").read_text())["step"] == 5


@pytest.mark.slow
def test_the_armt_chain_trains_with_lora_at_its_fixed_steps(tmp_path: Path) -> None:
    """ARMT under the protocol: the passkey recipe with --train lora, 305 steps (3 at the smoke's scale), read by
    eval like every other chain."""
    work = tmp_path / "work"
    assert "armt-s1-lora: train exit 0" in protocol("train", str(work), "armt", "1", "5")
    final = work / "runs" / "armt-s1-lora" / "train" / "final"
    meta = json.loads((final / "checkpoint.json").read_text())
    assert meta["step"] == 3 and (final / "adapter_model.safetensors").is_file()
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "armt-s1", "armt", LIMIT="2",
                                     DEPTHS="0.5")


@pytest.mark.slow
def test_a_token_budget_ends_a_chain_at_the_level_that_spends_it(tmp_path: Path) -> None:
    """BUDGET (the rule for equal budgets): every training started gets train.max_tokens, so a budget of one token
    ends the hmt chain at its first level's first step; the chain is then done, and eval reads that level's final."""
    work = tmp_path / "work"
    log = protocol("train", str(work), "hmt", "1", "5", BUDGET="1", STEPS_SCALE="0.1")
    assert "hmt-s1-span: train exit 0" in log and "hmt-s1: BUDGET (1 tokens) spent at span, step 1" in log
    assert not (work / "runs" / "hmt-s1-long").exists()
    final = work / "runs" / "hmt-s1-span" / "stage2" / "final"
    meta = json.loads((final / "checkpoint.json").read_text())
    assert meta["step"] == 1 and meta["config"]["train"]["max_tokens"] == 1
    again = protocol("train", str(work), "hmt", "1", "5", BUDGET="1", STEPS_SCALE="0.1")
    assert "hmt-s1-span: done" in again and "train exit" not in again
    assert "has not reached its steps" in protocol("eval", str(work), "validation", "1k", "hmt-s1", "hmt", code=1,
                                                   STEPS_SCALE="0.1")  # without the budget the chain is unfinished
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "hmt-s1", "hmt", LIMIT="2", DEPTHS="0.5",
                                     BUDGET="1", STEPS_SCALE="0.1")


@pytest.mark.slow
def test_the_retrieval_chain_trains_bm25s_reader_with_lora(tmp_path: Path) -> None:
    """The BM25 baseline with a trained reader: its recipe's 120 steps (2 at the smoke's scale) on passkey answers
    at segment length 256, read by eval as the untrained baseline is, from its checkpoint."""
    work = tmp_path / "work"
    assert "retrieval-s1-lora: train exit 0" in protocol("train", str(work), "retrieval", "1", "5", STEPS_SCALE="0.02")
    final = work / "runs" / "retrieval-s1-lora" / "train" / "final"
    meta = json.loads((final / "checkpoint.json").read_text())
    assert meta["step"] == 2 and meta["segment_length"] == 256 and (final / "adapter_model.safetensors").is_file()
    assert meta["config"]["curriculum"]["segments"] == [6, 9, 12, 18, 24]
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "retrieval-s1", "retrieval", LIMIT="2",
                                     DEPTHS="0.5", STEPS_SCALE="0.02")
    (record,) = (work / "results" / "validation" / "passkey-retrieval-s1-retrieval").glob("*.parquet")
    row = pd.read_parquet(record).iloc[0]
    assert row["method"] == "retrieval" and row["train_mode"] == "lora" and row["checkpoint_sha256"]


@pytest.mark.slow
def test_multi_fact_continues_each_chain_from_its_passkey_final(tmp_path: Path) -> None:
    """TASK=multi-fact: a chain whose passkey level is done trains one more level, mf (90 steps of its multi-fact
    recipe, 1 at the smoke's scale), from that level's final; eval then reads the mf final on multi-fact, while the
    passkey evaluation still reads the passkey final."""
    work = tmp_path / "work"
    assert "rmt-s1-truncated: train exit 0" in protocol("train", str(work), "rmt", "1", "5")
    log = protocol("train", str(work), "rmt", "1", "5", TASK="multi-fact")
    assert "rmt-s1-truncated: done (step 5)" in log and "rmt-s1-mf: train exit 0" in log
    passkey = work / "runs" / "rmt-s1-truncated" / "train" / "final"
    meta = json.loads((work / "runs" / "rmt-s1-mf" / "train" / "final" / "checkpoint.json").read_text())
    assert meta["step"] == 1 and meta["config"]["curriculum"]["task"] == "multi-fact"
    assert meta["config"]["train"]["init_from"] == str(passkey) and meta["config"]["train"]["bptt_truncate"] == 2
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "rmt-s1", "rmt", LIMIT="2",
                                     TASK="multi-fact")
    (record,) = (work / "results" / "validation" / "multi-fact-rmt-s1-rmt").glob("*.parquet")
    assert pd.read_parquet(record).iloc[0]["task"] == "multi-fact"


@pytest.mark.slow
def test_mf_tokens_give_the_multi_fact_level_its_own_token_budget(tmp_path: Path) -> None:
    """MF_TOKENS (equal budgets for the mf level): the level trains to its passkey final's tokens plus MF_TOKENS,
    stops at the step that reads them, counts as done, and eval reads it."""
    work = tmp_path / "work"
    assert "rmt-s1-truncated: train exit 0" in protocol("train", str(work), "rmt", "1", "5", STEPS_SCALE="0.05")
    passkey = json.loads((work / "runs" / "rmt-s1-truncated" / "train" / "final" / "checkpoint.json").read_text())
    log = protocol("train", str(work), "rmt", "1", "5", TASK="multi-fact", MF_TOKENS="1", STEPS_SCALE="0.05",
                   BUDGET="1000000000")  # the mf level's own budget, not BUDGET
    assert "rmt-s1-mf: its token budget (train.max_tokens) spent at step 1" in log
    meta = json.loads((work / "runs" / "rmt-s1-mf" / "train" / "final" / "checkpoint.json").read_text())
    assert meta["step"] == 1 and meta["config"]["train"]["max_tokens"] == passkey["train_tokens"] + 1
    again = protocol("train", str(work), "rmt", "1", "5", TASK="multi-fact", STEPS_SCALE="0.05")
    assert "rmt-s1-mf: done" in again and "train exit" not in again
    assert "eval exit 0" in protocol("eval", str(work), "validation", "1k", "rmt-s1", "rmt", LIMIT="2",
                                     TASK="multi-fact", STEPS_SCALE="0.05")


@pytest.mark.slow
def test_a_language_modelling_chain_trains_both_hmt_stages_and_its_ppl_pairs_with_the_untrained_rows(
        tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert "lm-hmt-s1-lm: train exit 0" in protocol("train", str(work), "lm-hmt", "1", "5")
    stages = work / "runs" / "lm-hmt-s1-lm"
    assert [json.loads((stages / s / "final" / "checkpoint.json").read_text())["step"] for s in ("stage1", "stage2")] \
        == [1, 2]  # 100 and 200 steps x 0.01
    assert "lm-hmt-s1-lm: done (step 2)" in protocol("train", str(work), "lm-hmt", "1", "5")

    assert "ppl exit 0" in protocol("ppl", str(work), "test", "lm-hmt-s1", "hmt", "--max-docs", "2")
    assert "ppl exit 0" in protocol("ppl", str(work), "test", "none", "plain,full", "--max-docs", "2")
    rows = pd.concat(map(pd.read_parquet, (work / "results" / "lm-test").glob("*.parquet"))).set_index("method")
    assert sorted(rows.index) == ["full", "hmt", "plain"]
    assert rows.at["hmt", "checkpoint"] == str(stages / "stage2" / "final") and rows.at["hmt", "train_seed"] == 1
    assert set(rows["split"]) == {"test"} and set(rows["dtype"]) == {"float32"}
    assert all(len(nll) == 2 for nll in rows["doc_nll"])  # per-document NLL: the paired tests' input


@pytest.mark.slow
def test_the_seed_split_crosses_data_seeds_with_initialisation_seeds(tmp_path: Path) -> None:
    """scripts/gpu/seed-split.sh: each cell of GRID trains the chain's first level at its --seed on the data seed's
    samples, in a work folder per data seed; eval reads each cell's first-level final on validation."""
    work, out = tmp_path / "work", tmp_path / "out"
    split = ROOT / "scripts" / "gpu" / "seed-split.sh"
    env = {**os.environ, "BACKBONE": "random:llama", "PYTHON": sys.executable, "STEPS_SCALE": "0.05",
           "TRAIN_FLAGS": "--set train.batch_size=2", "GRID": "1:1 2:1", "LIMIT": "2", "DEPTHS": "0.5"}

    def run(*args: str) -> str:
        done = subprocess.run(["bash", str(split), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("train", str(work), "hmt", "5").count("hmt-s1: stops after span (STOP_AFTER)") == 2
    losses = []
    for data in (1, 2):
        run_dir = work / f"data{data}" / "runs" / "hmt-s1-span"
        assert f"data_seed: {data}\n" in (run_dir / "config.yaml").read_text()
        assert "\n  seed: 1\n" in (run_dir / "config.yaml").read_text()
        losses.append(json.loads((run_dir / "stage2" / "log.jsonl").read_text().splitlines()[-1])["loss"])
    assert losses[0] != losses[1]  # one initialisation, two data streams
    assert run("eval", str(work), "hmt", "1k").count("eval exit 0") == 2
    for data in (1, 2):
        (record,) = (work / f"data{data}" / "results" / "validation" / "passkey-hmt-s1-hmt").glob("*.parquet")
        assert pd.read_parquet(record).iloc[0]["train_seed"] == 1
    run("pack", str(work), str(out))
    assert (out / "data1" / "protocol.tgz").exists() and (out / "data2" / "protocol.tgz").exists()
