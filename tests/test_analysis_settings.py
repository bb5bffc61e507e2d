"""load: old and new configuration layouts read as one set of settings; settings a method lacks never split it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hmtbench.analysis.compare import build
from hmtbench.analysis.load import load_results, normalise_config, select
from hmtbench.results import write_record
from tests.test_compare import write_run

MAKE_RUN = Path(__file__).resolve().parents[1] / "results" / "make-run"
OLD_MEMORY = {"memory_tokens": 1, "recall_context": 100, "recall_hidden_dim": 4096, "segment_length": 256,
              "sensory_tokens": 0, "stage": 2, "sum_fraction": 0.5}


def new_layout(old: dict) -> dict:
    """The configuration as records written after the layout change hold it (the HMT fields of today's config)."""
    memory = {k: v for k, v in old["memory"].items() if k != "segment_length"}
    method = {"name": old["method"], **memory, "summary_pass": "auto", "summary_batch_tokens": 65536,
              "summary_segments": 8}
    rest = {k: v for k, v in old.items() if k not in ("memory", "method")}
    return {**rest, "segment_length": old["memory"]["segment_length"], "method": method,
            "engine": {"compile": False, "cuda_graphs": False}}


def table_of(*folders: Path, metric: str = "ppl"):
    return build(select(load_results(list(folders), warn=lambda m: None), {}), metric)


def test_todays_record_of_the_committed_make_run_falls_into_its_cell(tmp_path: Path) -> None:
    (hmt_file,) = sorted(MAKE_RUN.glob("20261124T134059/*-hmt-*.parquet"))
    record = pd.read_parquet(hmt_file)
    old = json.loads(record.loc[0, "config"])
    record.loc[0, "config"] = json.dumps(new_layout(old), sort_keys=True)
    record.loc[0, "run_id"] = "20261201T000000-eval-ppl-hmt-abcdef"
    write_record(record, tmp_path, record.loc[0, "run_id"])
    table = table_of(MAKE_RUN, tmp_path)
    (row,) = table.rows
    assert row.key["variant"] is None and table.notes == []
    committed = {m: len(list(MAKE_RUN.glob(f"*/*-eval-ppl-{m}-*.parquet"))) for m in ("plain", "rmt", "hmt")}
    assert min(committed.values()) >= 2  # the committed make-run folders: the same command, machines apart
    # the same evaluation at the same seed: identical repeats, one measurement (not a spread of ~0 over "runs")
    assert {m: (c.count, len(c.runs)) for m, c in row.cells.items()} == {
        m: (1, n + (m == "hmt")) for m, n in committed.items()}
    # reproduced to ~1e-5 across machines (this CPU's arithmetic gives 7.307995)
    assert row.cells["hmt"].mean == pytest.approx(7.30795, abs=1e-4) and row.cells["hmt"].std is None


def test_normalised_settings_of_both_layouts_are_equal() -> None:
    old = {"backbone": "b", "method": "hmt", "memory": OLD_MEMORY, "data": {"test_length": 2000}}
    assert normalise_config(old, "hmt") == normalise_config(new_layout(old), "hmt")
    rmt = normalise_config({"method": "rmt", "memory": {**OLD_MEMORY, "summary_pass": "inline"}}, "rmt")
    assert rmt == {"segment_length": 256, "method": {"memory_tokens": 1, "write": "state", "span_choice": "soft",
                                                     "write_after": "text", "memory_dtype": "backbone"},
                   "engine": {"compile": False, "cuda_graphs": False}}
    assert normalise_config({"memory": {"summary_pass": "x", "segment_length": 64}}, "zeta")["method"] == {
        "summary_pass": "x"}  # an unregistered method keeps what it recorded


def test_a_setting_the_method_lacks_never_splits_its_runs(tmp_path: Path) -> None:
    for seed, (ppl, passes) in enumerate([(10.0, "auto"), (11.0, "inline"), (12.0, None)]):
        memory = {**OLD_MEMORY, **({"summary_pass": passes} if passes else {})}
        config = json.dumps({"method": "rmt", "memory": memory})
        write_run(tmp_path, "rmt", ppl=ppl, config=config, seed=seed)
        write_run(tmp_path, "hmt", ppl=ppl - 5, config=config.replace('"rmt"', '"hmt"'), seed=seed)
    table = table_of(tmp_path)
    assert [(r.cells["rmt"].count, r.cells["rmt"].mean) for r in table.rows] == [(3, 11.0), (3, 11.0)]
    assert [(r.cells["hmt"].count, r.cells["hmt"].mean) for r in table.rows] == [(2, 6.0), (1, 6.0)]
    assert [r.key["variant"] for r in table.rows] == ["hmt: config.method.summary_pass=auto",
                                                      "hmt: config.method.summary_pass=inline"]


def test_engine_switches_shared_by_every_method_pair_by_value(tmp_path: Path) -> None:
    for compiled in (False, True):
        config = json.dumps({"engine": {"compile": compiled, "cuda_graphs": compiled}})
        for method, ppl in [("plain", 20.0), ("rmt", 18.0), ("hmt", 15.0)]:
            write_run(tmp_path, method, ppl=ppl + compiled, config=config)
    table = table_of(tmp_path)
    assert [r.key["variant"] for r in table.rows] == [
        "all: config.engine.compile=False, config.engine.cuda_graphs=False",
        "all: config.engine.compile=True, config.engine.cuda_graphs=True"]
    assert [[c.mean for c in r.cells.values()] for r in table.rows] == [[20.0, 18.0, 15.0], [21.0, 19.0, 16.0]]
    assert "rows pair runs that agree on config.engine.compile, config.engine.cuda_graphs" in table.notes


def test_a_departure_from_the_paper_is_named_even_when_every_run_agrees(tmp_path: Path) -> None:
    write_run(tmp_path / "plain", "plain", ppl=12.0)
    write_run(tmp_path / "state", "hmt", ppl=10.0, memory_write="state")
    for seed, ppl in enumerate((8.0, 9.0)):
        write_run(tmp_path / "span", "hmt", ppl=ppl, memory_write="span", seed=seed)
    (state,) = table_of(tmp_path / "plain", tmp_path / "state").rows
    assert state.key["variant"] is None  # the paper's write: nothing to name
    (span,) = table_of(tmp_path / "plain", tmp_path / "span").rows
    assert span.key["variant"] == "hmt: memory_write=span" and span.cells["hmt"].mean == pytest.approx(8.5)
    assert table_of(tmp_path / "span").notes == []  # named, not split: no note of runs kept apart


def test_a_whole_number_setting_some_records_lack_stays_whole(tmp_path: Path) -> None:
    """A plain row beside BM25 rows of 8 and 32 query tokens (plain has no such setting): 8, not 8.0."""
    write_run(tmp_path, "plain", ppl=20.0)
    for tokens, ppl in [(8, 15.0), (32, 14.0)]:
        write_run(tmp_path, "retrieval", ppl=ppl,
                  config=json.dumps({"method": {"name": "retrieval", "query_tokens": tokens}}))
    frame = load_results([tmp_path], warn=lambda m: None)
    values = frame.loc[frame["method"] == "retrieval", "config.method.query_tokens"].tolist()
    assert sorted(values) == [8, 32] and all(isinstance(v, int) for v in values)
    assert [r.key["variant"] for r in table_of(tmp_path).rows] == ["retrieval: config.method.query_tokens=8",
                                                                   "retrieval: config.method.query_tokens=32"]


def test_a_run_that_halved_its_batch_sits_in_the_row_of_the_batch_asked_for(tmp_path: Path) -> None:
    """plain asked for 125 samples a batch, ran out of device memory once and read them 63 at a time: its record
    says batch_size 63 (as run), its config 125 (as asked). It shares HMT's row (batch 125), so the two are compared
    there; the size it ran at stays in batch_size_run."""
    asked = json.dumps({"batch_size": 125})
    write_run(tmp_path, "plain", ppl=20.0, config=asked, batch_size=63, oom_retries=1)
    write_run(tmp_path, "hmt", ppl=15.0, config=asked, batch_size=125)
    frame = load_results([tmp_path], warn=lambda m: None)
    assert frame.set_index("method")[["batch_size", "batch_size_run"]].loc["plain"].tolist() == [125, 63]
    (row,) = build(frame, "ppl").rows
    assert set(row.cells) == {"plain", "hmt"} and row.key["batch_size"] == 125



PROTOCOL_ARMT = Path(__file__).resolve().parents[1] / "results" / "h100-protocol" / "results" / "test"


def test_a_setting_added_to_a_command_later_reads_as_its_default_in_older_records() -> None:
    """eval-qa gained memory_swap and memory_attention (default 0: off) after the protocol's first records."""
    files = [*PROTOCOL_ARMT.glob("passkey-armt-s*-armt/*.parquet")]
    configs = [json.loads(pd.read_parquet(f, columns=["config"]).loc[0, "config"]) for f in files]
    assert sum("memory_swap" not in c for c in configs) > sum("memory_swap" in c for c in configs) > 0  # as recorded
    frame = load_results([PROTOCOL_ARMT], warn=lambda m: None)
    assert set(frame["config.memory_swap"]) == {0} and set(frame["config.memory_attention"]) == {0}


def test_a_checkpoint_trained_again_bit_for_bit_keeps_its_first_recipe_and_cell() -> None:
    """ARMT's seeds 2 and 3 were trained again a day later (a newer code, more training fields: another recipe hash)
    to the same tensors and read at 256k; their records join the first training's recipe and seeds."""
    files = [*PROTOCOL_ARMT.glob("passkey-armt-s*-armt/*.parquet")]
    raw = pd.concat([pd.read_parquet(f, columns=["checkpoint_sha256", "train_recipe"]) for f in files])
    assert raw.groupby("checkpoint_sha256")["train_recipe"].nunique().max() == 2  # as recorded: two hashes
    frame = load_results([PROTOCOL_ARMT], warn=lambda m: None)
    armt = frame[(frame["method"] == "armt") & (frame["task"] == "passkey")]  # multi-fact: a recipe of its own
    assert armt["train_recipe"].nunique() == 1
    assert set(armt["checkpoint"]) == {f"recipe {armt['train_recipe'].iloc[0][:8]} (train seeds 1, 2, 3)"}
    table = build(select(frame, {"method": "armt", "task": "passkey"}), "exact_match_deep")
    at_256k = [row.cells["armt"] for row in table.rows if row.key["context_length"] == 262144]
    assert [cell.count for cell in at_256k] == [3]  # one cell of three seeds, not a row per training
