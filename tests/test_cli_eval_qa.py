"""`hmtbench eval-qa` end to end on a tiny random backbone: parquet records, predictions, one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.qa.runner import answer_records

runner = CliRunner()
TINY = ["--backbone", "random:llama", "--segment-length", "64"]
HMT = ["--recall-hidden-dim", "16", "--sensory-tokens", "4"]  # only where an HMT run is asked for


def run(*args: str):
    return runner.invoke(app, ["eval-qa", *TINY, *(HMT if "hmt" in " ".join(args) else []), *args])


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def records(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))], ignore_index=True)


def predictions(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_passkey_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = run("--task", "passkey", "--context-length", "600", "--limit", "3", "--method", "plain,hmt",
                 "--max-new-tokens", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = records(out).set_index("method")
    assert sorted(frame.index) == ["hmt", "plain"]
    for method, row in frame.iterrows():
        assert row["command"] == "eval-qa" and row["protocol"] == "qa" and row["status"] == "success"
        assert row["task"] == "passkey" and row["context_length"] == 600 and row["docs"] == 3
        assert row["tokens_scored"] == 21  # 3 keys of " " + 5 digits + the line break that ends them, one byte each
        assert row["answer_ppl"] > 1 and 0 <= row["accuracy"] <= 1
        assert row["torch_version"] and row["hmtbench_version"] and row["command_line"].startswith("hmtbench")
        lines = predictions(row["predictions_file"])
        assert Path(row["predictions_file"]).parent == out
        assert [p["id"] for p in lines] == ["0", "1", "2"]
        assert all(p["method"] == method and p["answer_tokens"] == 7 for p in lines)
        assert all(p["prompt_tokens"] == 600 and 1 <= p["generated_tokens"] <= 4 for p in lines)  # free decoding
        assert all(p["exact_match"] == float(p["prediction"] == p["references"][0]) for p in lines)
        assert row["answers"] == "greedy"
        assert row["teacher_forced_exact"] == pytest.approx(sum(p["teacher_forced_exact"] for p in lines) / 3)
        agree = [p["exact_match"] == p["teacher_forced_exact"] for p in lines]
        assert row["decoding_agreement"] == pytest.approx(sum(agree) / 3)
        assert [p["meta"]["depth"] for p in lines] == [0.0, 0.25, 0.5]
        assert row["answer_ppl"] == pytest.approx(math.exp(sum(p["answer_nll"] for p in lines) / 21), rel=1e-6)
    assert frame.loc["hmt", "added_params"] > 0 and frame.loc["plain", "added_params"] == 0
    assert frame.loc["hmt", "segment_length"] == frame.loc["plain", "segment_length"] == 64
    assert "wrote" in result.output


def test_no_decode_scores_the_teacher_forced_argmax(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = run("--task", "passkey", "--context-length", "600", "--limit", "3", "--method", "hmt", "--no-decode",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    row = records(out).iloc[0]
    assert row["answers"] == "teacher-forced" and pd.isna(row["decoding_agreement"])
    lines = predictions(row["predictions_file"])
    assert all(p["generated_tokens"] == 7 and "segments_opened" not in p for p in lines)  # the argmax of 7 positions
    assert all(p["accuracy"] == p["exact_match"] == p["teacher_forced_exact"] for p in lines)
    assert row["exact_match"] == pytest.approx(row["teacher_forced_exact"])


def test_local_jsonl_end_to_end(tmp_path: Path) -> None:
    rows = [
        {"context": "Anna keeps her bicycle in the red shed behind the school. " * 8,
         "question": "Where is the bicycle?", "answer": "in the red shed"},
        {"id": "q2", "context": "The river Vell floods every spring. " * 10, "question": "What floods?",
         "answer": ["the river Vell", "Vell"]},
    ]
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    out = tmp_path / "results"
    result = run("--task", str(data), "--method", "rmt,full", "--max-new-tokens", "6", "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = records(out).set_index("method")
    assert list(frame["task"].unique()) == ["mine.jsonl"]
    assert frame.loc["full", "segment_length"] > 64  # full reads each prompt in one window
    lines = predictions(frame.loc["rmt", "predictions_file"])
    assert [p["id"] for p in lines] == ["mine.jsonl:1", "q2"]
    assert lines[1]["references"] == ["the river Vell", "Vell"]
    assert lines[0]["answer_tokens"] == len(" in the red shed\n")  # the answer and the line break that ends it
    assert lines[0]["context_segments"] >= 1  # the context spans several segments of 62 tokens


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"context": "c", "answer": "a"}], [], "mine.jsonl:1 has no 'question' field"),
        ([{"context": "c", "question": "q", "answer": "a"}, {"context": "c", "question": "q", "answer": "  "}], [],
         "mine.jsonl:2 has an empty answer"),
        ([{"context": "short", "question": "q", "answer": "a"}], ["--context-length", "5000"],
         "shorter than --context-length 5000"),
    ],
    ids=["missing-field", "empty-answer", "short-context"],
)
def test_bad_local_files_are_one_line_errors(tmp_path: Path, rows, extra, message) -> None:
    data = write_jsonl(tmp_path / "mine.jsonl", rows)
    result = run("--task", str(data), "--out", str(tmp_path / "r"), *extra)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.parquet"))


def test_unknown_task_suggests_the_closest(tmp_path: Path) -> None:
    result = run("--task", "paskey", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown task 'paskey' (did you mean 'passkey'?)" in result.output
    result = run("--task", "passkey", "--method", "hmtt", "--out", str(tmp_path))
    assert result.exit_code == 2 and "did you mean 'hmt'" in result.output


def test_bad_numbers_are_one_line_errors(tmp_path: Path) -> None:
    result = run("--task", "passkey", "--depth", "0.5,2", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--depth values must lie in [0, 1]" in result.output
    result = run("--task", "passkey", "--limit", "0", "--out", str(tmp_path))
    assert result.exit_code == 2 and "--limit must be positive" in result.output


def test_full_beyond_the_backbone_window_is_a_clear_error(tmp_path: Path) -> None:
    result = run("--task", "passkey", "--context-length", "5000", "--limit", "1", "--method", "full",
                 "--out", str(tmp_path))
    assert result.exit_code == 2
    assert "maximum of 4096" in result.output and "or a segmented method" in result.output


def test_a_missing_scorer_fails_before_the_backbone_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rouge-score missing (as on a bare GPU image): one clear error at once, not a traceback after the run."""
    import sys

    from hmtbench.commands import eval_qa
    from hmtbench.qa import metrics

    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setitem(sys.modules, "rouge_score", None)  # import rouge_score now raises ImportError
    monkeypatch.setattr(eval_qa, "load_backbone", no_loading)
    metrics._rouge_scorer.cache_clear()
    try:
        result = CliRunner().invoke(app, ["eval-qa", "--task", "passkey", "--backbone", "random:llama", "--device",
                                          "cpu", "--context-length", "600", "--limit", "2", "--out", str(tmp_path)])
    finally:
        metrics._rouge_scorer.cache_clear()
    assert result.exit_code == 2, result.output
    assert "pip install rouge-score" in result.output


ANSWER_RECORDS = answer_records  # the real scoring, whatever a test patches


def kill_after_two_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation is interrupted (as by Ctrl-C) when its third batch starts."""
    from hmtbench.qa import runner as qa_runner

    calls = []

    def killed(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return ANSWER_RECORDS(*a, **k)

    monkeypatch.setattr(qa_runner, "answer_records", killed)


def count_scored_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches the evaluation scores from now on (the real scoring, counted)."""
    from hmtbench.qa import runner as qa_runner

    scored: list[int] = []
    monkeypatch.setattr(qa_runner, "answer_records",
                        lambda *a, **k: scored.append(len(a[3])) or ANSWER_RECORDS(*a, **k))
    return scored


def test_a_killed_evaluation_resumes_to_the_uninterrupted_record(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches scored before a kill stay on disk; --resume scores the rest, and the record equals a straight run's."""
    args = ("--task", "passkey", "--context-length", "600", "--limit", "5", "--batch-size", "2", "--method", "hmt",
            "--max-new-tokens", "4")
    straight = run(*args, "--out", str(tmp_path / "straight"))
    assert straight.exit_code == 0, straight.output
    kill_after_two_batches(monkeypatch)
    out = tmp_path / "resumed"
    killed = run(*args, "--out", str(out))
    assert killed.exit_code != 0 and not list(out.glob("*.parquet"))
    [partial] = out.glob(".eval-qa-*.partial.jsonl")
    assert len(partial.read_text().splitlines()) == 2  # the two batches scored before the kill
    scored = count_scored_batches(monkeypatch)
    resumed = run(*args, "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert scored == [1]  # 5 samples in batches of 2, 2, 1: only the last batch ran again
    assert not list(out.glob(".eval-qa-*.partial.jsonl"))
    before, after = records(tmp_path / "straight").iloc[0], records(out).iloc[0]
    assert after["resumed_samples"] == 4 and before["resumed_samples"] == 0
    for column in ("answer_ppl", "exact_match", "accuracy", "teacher_forced_exact", "decoding_agreement", "rouge_l",
                   "tokens_scored", "docs", "data_sha256"):
        assert after[column] == before[column], column
    strip = lambda lines: [{k: v for k, v in p.items() if k != "run_id"} for p in lines]  # noqa: E731
    assert strip(predictions(after["predictions_file"])) == strip(predictions(before["predictions_file"]))


def test_scored_batches_resume_with_the_checkpoint_moved_to_another_path(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The partial file names the checkpoint by its tensors, not its path: carried with the checkpoint to another
    machine (another folder), --resume continues it."""
    trained = runner.invoke(app, ["train", "--backbone", "random:llama", "--device", "cpu", "--method", "rmt",
                                  "--task", "passkey", "--curriculum", "2", "--steps", "1", "--batch-size", "2",
                                  "--segment-length", "128", "--output-dir", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "train")])
    assert trained.exit_code == 0, trained.output
    shutil.copytree(tmp_path / "run" / "train" / "final", tmp_path / "elsewhere")
    args = ("--task", "passkey", "--context-length", "600", "--limit", "5", "--batch-size", "2", "--method", "rmt",
            "--max-new-tokens", "4", "--segment-length", "128")
    kill_after_two_batches(monkeypatch)
    here, there = tmp_path / "here", tmp_path / "there"
    assert run(*args, "--checkpoint", str(tmp_path / "run" / "train" / "final"), "--out", str(here)).exit_code != 0
    there.mkdir()
    [partial] = here.glob(".eval-qa-*.partial.jsonl")
    shutil.copy(partial, there / partial.name)
    scored = count_scored_batches(monkeypatch)
    resumed = run(*args, "--checkpoint", str(tmp_path / "elsewhere"), "--out", str(there), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert scored == [1] and records(there).iloc[0]["resumed_samples"] == 4


@pytest.mark.parametrize("task", ["passkey", "passkey-unseen-b"])
def test_a_validation_split_at_several_lengths_end_to_end(tmp_path: Path, task: str) -> None:
    """`eval-qa --split validation --context-length 1k,4k`: one record per length saying its split, and samples
    that are none of the test split's."""
    out, test_out = tmp_path / "validation", tmp_path / "test"
    common = ["--task", task, "--context-length", "1k,4k", "--limit", "2", "--method", "plain"]
    result = run(*common, "--split", "validation", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "validation split" in result.output  # the table names it
    assert run(*common, "--out", str(test_out)).exit_code == 0  # the default: test
    frame, test_frame = records(out).sort_values("context_length"), records(test_out).sort_values("context_length")
    assert list(frame["split"]) == ["validation"] * 2 and list(test_frame["split"]) == ["test"] * 2
    assert list(frame["context_length"]) == [1024, 4096] and list(frame["task"]) == [task] * 2
    for row, test_row in zip(frame.itertuples(), test_frame.itertuples(), strict=True):
        lines, test_lines = predictions(row.predictions_file), predictions(test_row.predictions_file)
        assert [p["meta"]["template"] for p in lines] == [task] * 2
        assert all(p["prompt_tokens"] == row.context_length for p in lines)
        assert not {p["references"][0] for p in lines} & {p["references"][0] for p in test_lines}
        assert json.loads(row.config)["split"] == "validation"


def test_a_split_the_task_lacks_is_a_one_line_error_before_the_backbone_loads(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from hmtbench.commands import eval_qa

    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(eval_qa, "load_backbone", no_loading)
    for task, split, message in [("narrativeqa", "validation", "task narrativeqa has no validation split"),
                                 ("babilong-qa1", "validation", "task babilong-qa1 has no validation split"),
                                 ("passkey", "train", "--split must be validation or test, got 'train'")]:
        result = run("--task", task, "--split", split, "--out", str(tmp_path))
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = run("--task", "passkey", "--selected-on", "valid", "--out", str(tmp_path))  # a typo is not recorded
    assert result.exit_code == 2 and result.output.strip() == (
        "error: unknown --selected-on 'valid' (did you mean 'validation'?); choose one of: fixed, test, train, "
        "validation"), result.output


def test_a_local_file_is_read_by_its_rows_split(tmp_path: Path) -> None:
    rows = [{"context": f"The box holds {word} and nothing else. " * 4, "question": "What is in the box?",
             "answer": word, "split": split} for word, split in (("pens", "test"), ("cups", "validation"),
                                                                 ("keys", "train"), ("mugs", "validation"))]
    data = write_jsonl(tmp_path / "split.jsonl", rows)
    out = tmp_path / "results"
    result = run("--task", str(data), "--split", "validation", "--method", "plain", "--max-new-tokens", "2",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    [row] = records(out).itertuples()
    assert row.split == "validation" and row.docs == 2
    assert [p["references"] for p in predictions(row.predictions_file)] == [["cups"], ["mugs"]]
    unmarked = write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "split"} for r in rows])
    result = run("--task", str(unmarked), "--split", "validation", "--out", str(tmp_path / "none"))
    assert result.exit_code == 2 and "plain.jsonl has no validation split" in result.output


def test_a_grid_runs_each_combination_once_loaded_as_separate_runs_would(tmp_path: Path) -> None:
    """--grid makes one named run per combination on the same samples; each equals the run made alone with its
    settings (no state passes from one grid run to the next), and the settings do change the answers."""
    common = ["--task", "passkey", "--context-length", "600", "--limit", "2", "--method", "hmt", "--max-new-tokens",
              "2", "--split", "validation"]
    grid = tmp_path / "grid"
    result = run(*common, "--grid", "method.recall_choice=soft,hard", "--grid", "method.recall_context=1,8",
                 "--out", str(grid))
    assert result.exit_code == 0, result.output
    frame = records(grid).set_index("name")
    assert sorted(frame.index) == ["hard-1", "hard-8", "soft-1", "soft-8"]
    assert frame.loc["hard-8", "recall_choice"] == "hard" and frame.loc["hard-8", "recall_context"] == 8
    assert frame["data_sha256"].nunique() == 1 and frame["answer_ppl"].nunique() > 1
    alone = tmp_path / "alone"
    assert run(*common, "--set", "method.recall_choice=hard", "--recall-context", "8", "--out",
               str(alone)).exit_code == 0
    assert records(alone)["answer_ppl"].iloc[0] == frame.loc["hard-8", "answer_ppl"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--grid", "checkpoint=a,b"], "--grid varies a method's settings"),
    (["--grid", "segment_length=64,128"], "--grid varies a method's settings"),
    (["--grid", "method.recall_choice="], "--grid expects KEY=VALUE,VALUE"),
    (["--grid", "method.recall_choice=soft", "--grid", "method.recall_choice=hard"], "recall_choice twice"),
    (["--grid", "method.recall_choice=soft,hard", "--name", "x"], "drop --name"),
    (["--grid", "method.sensory_tokens=2,4", "--method", "plain,hmt"], "give one --method"),
])
def test_bad_grids_are_one_line_errors(tmp_path: Path, extra: list[str], message: str) -> None:
    result = run("--task", "passkey", "--context-length", "600", "--limit", "1", "--out", str(tmp_path),
                 *(["--method", "hmt"] if "--method" not in extra else []), *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output
