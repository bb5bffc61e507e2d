"""`hmtbench bench` end to end on the CPU (random:llama): one record per case, the columns compare and plot read."""

from __future__ import annotations

import json
import math
import weakref
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.benchmark.cases import plan_cases
from hmtbench.benchmark.config import BenchConfig
from hmtbench.build import build_method
from hmtbench.cli import app
from hmtbench.config import method_config, parse_counts
from hmtbench.errors import HmtbenchError
from hmtbench.methods import method_names
from hmtbench.results.schema import COLUMN_NAMES, record_schema

L, K, H = 32, 4, 16
COMMON = ["--backbone", "random:llama", "--device", "cpu", "--segment-length", str(L), "--warmup", "0", "--repeat", "1"]
HMT = ["--sensory-tokens", str(K), "--recall-hidden-dim", str(H)]  # where HMT runs (every method runs by default)


def bench(out: Path, *args: str):
    hmt = "--method" not in args or "hmt" in args[args.index("--method") + 1]
    result = CliRunner().invoke(app, ["bench", *COMMON, *(HMT if hmt else []), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
    return result, files, frame


def test_bench_writes_one_record_per_case(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result, files, rows = bench(out, "--lengths", "64,128", "--batch-size", "1,2", "--bptt-depth", "3")
    methods = len(method_names())  # every registered method by default
    assert len(files) == methods * 2 * 2 + methods * 2  # eval: methods x lengths x batch sizes; train: x batch sizes
    assert result.stdout.strip().splitlines()[-1] == f"wrote {len(files)} records to {out}"
    for f in files:
        record = pd.read_parquet(f)
        assert list(record.columns) == [c.name for c in record_schema(record["method"][0])]
        assert list(record.columns)[: len(COLUMN_NAMES)] == COLUMN_NAMES  # the shared columns, then the method's
    assert set(rows["command"]) == {"bench"} and rows["run_id"].is_unique

    evals = rows[rows["protocol"] == "bench-eval"]
    assert (evals["status"] == "success").all()
    assert sorted(set(evals["test_length"])) == [64, 128] and sorted(set(evals["batch_size"])) == [1, 2]
    for _, row in evals.iterrows():
        segments = 1 if row["method"] == "full" else math.ceil(row["test_length"] / row["text_tokens"])
        assert row["tokens_per_s"] == pytest.approx(row["batch_size"] * row["test_length"] / row["wall_s"])
        assert row["ms_per_segment"] == pytest.approx(1000 * row["wall_s"] / segments)
        assert row["tokens_scored"] == row["batch_size"] * (row["test_length"] - 1)
        assert 4.5 < row["nll_mean"] < 6.5  # a random model over 259 tokens: about ln 259 = 5.56
        assert row["model_tflops"] > 0 and pd.isna(row["peak_flops_pct"])  # no data-sheet peak for a CPU
        assert row["dataset"] == "random-tokens" and pd.isna(row["peak_gpu_mem_mb"]) and row["peak_host_mem_mb"] > 0
        config = json.loads(row["config"])
        assert config["engine"] == {"compile": False, "cuda_graphs": False}
        assert config["bench"]["mode"] == "eval" and config["segment_length"] == L
    full = evals[evals["method"] == "full"]
    assert (full["segment_length"] == full["test_length"]).all()  # one forward over the whole document
    hmt = evals[evals["method"] == "hmt"].iloc[0]
    assert (hmt["text_tokens"], hmt["sensory_tokens"], hmt["recall_hidden_dim"]) == (L - 2 - K, K, H)
    assert json.loads(hmt["config"])["bench"] == {"mode": "eval", "summaries": "ahead"}  # auto, on a CPU

    trains = rows[rows["protocol"] == "bench-train"].set_index(["method", "batch_size"])
    assert (trains["test_length"] == 3 * L).all() and (trains["train_mode"] == "memory").all()
    for method in ("rmt", "hmt"):
        for batch in (1, 2):
            row = trains.loc[(method, batch)]
            assert row["status"] == "success" and row["final_loss"] > 0 and row["tokens_per_s"] > 0
            assert row["tokens_per_s"] == pytest.approx(batch * 3 * row["text_tokens"] / row["wall_s"])
            assert json.loads(row["config"])["bench"] == {
                "bptt_depth": 3,
                "loss_on": "last",
                "mode": "train",
                "train": "memory",
            }
    for method in ("plain", "full"):  # nothing of their own to train in memory training
        row = trains.loc[(method, 1)]
        assert row["status"] == "skipped" and "no parameters of its own" in json.loads(row["config"])["reason"]


def test_full_context_beyond_the_backbones_positions_is_a_skipped_row(tmp_path: Path) -> None:
    _, files, rows = bench(
        tmp_path, "--method", "full,plain", "--lengths", "8k", "--mode", "eval", "--max-batch-tokens", "8192"
    )
    assert len(files) == 2
    full = rows.set_index("method").loc["full"]
    assert full["status"] == "skipped" and full["test_length"] == 8192
    assert "maximum of 4096" in json.loads(full["config"])["reason"]
    assert rows.set_index("method").loc["plain", "status"] == "success"


def test_graphed_steps_record_the_eager_numbers(tmp_path: Path) -> None:
    """--cuda-graphs on the CPU runs the graphs' buffer plumbing eagerly: the NLL of every case is unchanged."""
    args = ("--method", "plain,rmt,hmt", "--lengths", "100", "--batch-size", "1,3", "--mode", "eval")
    _, _, eager = bench(tmp_path / "eager", *args)
    _, _, graphed = bench(tmp_path / "graphed", *args, "--cuda-graphs")
    key = ["method", "batch_size"]
    eager, graphed = eager.set_index(key).sort_index(), graphed.set_index(key).sort_index()
    assert (eager["nll_mean"] == graphed["nll_mean"]).all()
    assert all(json.loads(c)["engine"]["cuda_graphs"] for c in graphed["config"])


def test_each_case_is_freed_before_the_next_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A later case's peak memory must not hold an earlier case's method (nor its graphs and their pools)."""
    import hmtbench.benchmark.cases as bench_run

    built: list[weakref.ref] = []

    def build_and_track(*args, **kwargs):
        assert all(ref() is None for ref in built), "an earlier case's method is still alive"
        method = build_method(*args, **kwargs)
        built.append(weakref.ref(method))
        return method

    monkeypatch.setattr(bench_run, "build_method", build_and_track)
    bench(tmp_path, "--method", "rmt,hmt", "--lengths", "64,128", "--mode", "eval,train", "--cuda-graphs")
    assert len(built) == 2 * 2 + 2 and all(ref() is None for ref in built)


def test_counts_and_the_plan() -> None:
    assert parse_counts("2k, 4k,64k", "--lengths") == [2048, 4096, 65536]
    assert parse_counts("1,8", "--batch-size") == [1, 8]
    for bad in ("two", "0", ""):
        with pytest.raises(HmtbenchError, match="--lengths"):
            parse_counts(bad, "--lengths")
    config = BenchConfig(
        method=[method_config("plain"), method_config("hmt")], lengths=[2048, 65536], batch_size=[1, 64],
        max_batch_tokens=2**17, bptt_depth=6,
    )
    cases = [(c.mode, c.method.name, c.batch_size, c.length) for c in plan_cases(config)]
    assert ("eval", "plain", 64, 65536) not in cases and ("eval", "plain", 64, 2048) in cases
    assert ("eval", "hmt", 1, 65536) in cases and ("train", "hmt", 64, 6) in cases


def test_bad_mode_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", *COMMON, "--out", str(tmp_path), "--mode", "infer"])
    assert result.exit_code == 2 and "unknown --mode 'infer'" in result.output


def test_a_bad_recompute_share_is_a_one_line_error_not_failed_rows(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", *COMMON, "--out", str(tmp_path), "--mode", "train",
                                      "--grad-checkpoint", "--recompute-share", "1.5"])
    assert result.exit_code == 2 and "--recompute-share must be in (0, 1], got 1.5" in result.output
    assert not list(tmp_path.glob("*.parquet"))


def test_a_recompute_share_is_recorded_and_keeps_the_loss(tmp_path: Path) -> None:
    args = ("--method", "rmt", "--mode", "train", "--bptt-depth", "4", "--batch-size", "2")
    _, _, plain = bench(tmp_path / "plain", *args)
    _, _, shared = bench(tmp_path / "share", *args, "--grad-checkpoint", "--recompute-share", "0.5")
    config = json.loads(shared["config"].iloc[0])["bench"]
    assert config["grad_checkpoint"] is True and config["recompute_share"] == 0.5
    assert shared["final_loss"].iloc[0] == pytest.approx(plain["final_loss"].iloc[0], rel=1e-6)
    assert shared["model_tflops"].iloc[0] / shared["tokens_per_s"].iloc[0] == pytest.approx(
        5 / 4 * plain["model_tflops"].iloc[0] / plain["tokens_per_s"].iloc[0])  # 5W per token against 4W


def test_layer_checkpointing_is_recorded_keeps_the_loss_and_counts_one_more_forward(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmtbench.commands.bench as bench_command

    wrapped: list[int] = []
    real = bench_command.checkpoint_blocks
    monkeypatch.setattr(bench_command, "checkpoint_blocks", lambda backbone: wrapped.append(real(backbone)))
    args = ("--method", "rmt", "--mode", "train", "--bptt-depth", "4", "--batch-size", "2")
    _, _, plain = bench(tmp_path / "plain", *args)
    assert wrapped == []
    _, _, layers = bench(tmp_path / "layers", *args, "--layer-checkpoint")
    assert wrapped and set(wrapped) == {2}  # the tiny Llama's two blocks
    _, _, both = bench(tmp_path / "both", *args, "--layer-checkpoint", "--grad-checkpoint", "--recompute-share", "0.5")
    assert json.loads(layers["config"].iloc[0])["bench"]["layer_checkpoint"] is True
    assert "layer_checkpoint" not in json.loads(plain["config"].iloc[0])["bench"]
    for row in (layers, both):
        assert row["final_loss"].iloc[0] == pytest.approx(plain["final_loss"].iloc[0], rel=1e-6)
    flops_per_token = {name: row["model_tflops"].iloc[0] / row["tokens_per_s"].iloc[0]
                       for name, row in (("plain", plain), ("layers", layers), ("both", both))}
    assert flops_per_token["layers"] == pytest.approx(6 / 4 * flops_per_token["plain"])  # 6W per token against 4W
    assert flops_per_token["both"] == pytest.approx(7 / 4 * flops_per_token["plain"])  # and half the segments: 7W


def test_every_timed_call_is_recorded_and_the_median_gives_the_speed(tmp_path: Path) -> None:
    args = ["bench", "--backbone", "random:llama", "--device", "cpu", "--segment-length", str(L), "--warmup", "1",
            "--repeat", "3", "--max-seconds", "600", "--method", "rmt", "--mode", "eval", "--lengths", "96",
            "--batch-size", "2", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(next(tmp_path.glob("*.parquet"))).iloc[0]
    seconds = list(row["call_seconds"])
    assert row["timed_calls"] == 3 == len(seconds) and all(s > 0 for s in seconds) and row["warmup_s"] > 0
    assert row["wall_s"] == pytest.approx(sum(seconds))
    median = sorted(seconds)[1]
    assert row["tokens_per_s"] == pytest.approx(2 * 96 / median)
    assert row["ms_per_segment"] == pytest.approx(1000 * median / math.ceil(96 / row["text_tokens"]))
    assert "(warm-up" in result.stdout and "3 timed)" in result.stdout
