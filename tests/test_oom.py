"""Out of device memory: the batch is halved and the run goes on, with the numbers of a run that never split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.oom import HalvingBatches, OutOfMemoryAtOne

WORDS = "memory segment recall token summary sensory cache window stream paper".split()


def fits(limit: int, calls: list[int]):
    """A batch function that runs out of memory above ``limit`` rows; otherwise each row's number, by row."""

    def score(rows: slice) -> list[float]:
        calls.append(rows.stop - rows.start)
        if rows.stop - rows.start > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [float(i) ** 0.5 for i in range(rows.start, rows.stop)]

    return score


def test_halving_scores_every_row_once_in_order() -> None:
    calls: list[int] = []
    halving = HalvingBatches(8)
    pieces = halving.run(fits(3, calls), 10)
    assert [x for piece in pieces for x in piece] == fits(10, [])(slice(0, 10))  # the un-split run's numbers
    assert calls == [8, 4, 2, 2, 2, 2, 2]  # 8 and 4 fail; then halves of 2 to the end
    assert (halving.size, halving.retries) == (2, 2)
    again = halving.run(fits(3, calls), 5)  # the next batch starts at the size that fitted
    assert [x for piece in again for x in piece] == fits(5, [])(slice(0, 5)) and halving.retries == 2


def test_halving_splits_an_odd_batch_into_halves() -> None:
    calls: list[int] = []
    halving = HalvingBatches(7)
    assert [x for p in halving.run(fits(4, calls), 7) for x in p] == fits(7, [])(slice(0, 7))
    assert calls == [7, 4, 3] and halving.size == 4


def test_halving_gives_up_at_one_row_with_one_clear_error() -> None:
    halving = HalvingBatches(4, "lower --test-length")
    with pytest.raises(OutOfMemoryAtOne, match=r"with a batch of 1 \(after 2 halvings\); lower --test-length"):
        halving.run(fits(0, []), 4)


def test_retry_repeats_the_work_at_half_the_size() -> None:
    sizes: list[int] = []

    def work(size: int) -> int:
        sizes.append(size)
        if size > 3:
            raise torch.OutOfMemoryError("out of memory")
        return size * 10

    halving = HalvingBatches(16)
    assert halving.retry(work) == 20 and sizes == [16, 8, 4, 2] and halving.retries == 3


# ----- eval-ppl and bench --------------------------------------------------------------------------
@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, n in enumerate((90, 70, 60)):
        generator = torch.Generator().manual_seed(i)
        words = torch.randint(0, len(WORDS), (n,), generator=generator).tolist()
        (folder / f"{i}.txt").write_text(" ".join(WORDS[w] for w in words))
    return folder


def out_of_memory_above(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """The segment loop runs out of memory on batches of more than ``rows`` documents."""
    import hmtbench.evaluation.perplexity as perplexity

    real = perplexity.score_segments

    def limited(method, batch, **kwargs):
        if batch.segments.shape[0] > rows:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(method, batch, **kwargs)

    monkeypatch.setattr(perplexity, "score_segments", limited)


def eval_ppl(corpus: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, [
        "eval-ppl", "--backbone", "random:llama", "--method", "plain,hmt", "--sensory-tokens", "4",
        "--recall-hidden-dim", "16", "--dataset", str(corpus), "--segment-length", "32", "--test-length", "200",
        "--batch-size", "3", "--out", str(out), *extra])


@pytest.mark.parametrize("protocol", ["stream", "paper"])
def test_eval_ppl_halves_the_batch_and_records_it(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  protocol: str) -> None:
    extra = ["--protocol", protocol, "--max-windows", "5", "--test-length", "64"] if protocol == "paper" else []
    whole = eval_ppl(corpus, tmp_path / "whole", *extra)
    assert whole.exit_code == 0, whole.output
    out_of_memory_above(monkeypatch, 1)
    split = eval_ppl(corpus, tmp_path / "split", *extra)
    assert split.exit_code == 0, split.output
    assert "out of device memory, 2 times: batches of 3 were scored 1 at a time" in " ".join(split.output.split())
    a = pd.concat(pd.read_parquet(f) for f in (tmp_path / "whole").glob("*.parquet")).set_index("method")
    b = pd.concat(pd.read_parquet(f) for f in (tmp_path / "split").glob("*.parquet")).set_index("method")
    for method in ("plain", "hmt"):
        assert (a.loc[method, "batch_size"], a.loc[method, "oom_retries"]) == (3, 0)
        assert (b.loc[method, "batch_size"], b.loc[method, "oom_retries"]) == (1, 2)  # 3 -> 2 -> 1
        assert json.loads(b.loc[method, "config"])["batch_size"] == 3  # the batches asked for, scored in pieces
        for column in ("docs", "tokens_scored", "bytes_scored", "segment_tokens"):
            assert list(pd.Series(b.loc[method, column]).tolist()) == list(pd.Series(a.loc[method, column]).tolist())
        # float32 matmuls of 1 and 3 rows round differently: equal to float rounding (the fake scores above: exactly)
        for column in ("ppl", "nll_mean", "bpb", "ppl_ci_low", "ppl_ci_high") + (("paper_ppl",) if extra else ()):
            assert b.loc[method, column] == pytest.approx(a.loc[method, column], rel=1e-6), column
        assert list(b.loc[method, "segment_nll"]) == pytest.approx(list(a.loc[method, "segment_nll"]), rel=1e-6)


def test_eval_ppl_out_of_memory_at_one_document_is_one_line(corpus: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out_of_memory_above(monkeypatch, 0)
    result = eval_ppl(corpus, tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "error: out of device memory with a batch of 1 (after 2 halvings); lower --test-length or --segment-length")


def test_bench_measures_a_case_again_at_half_the_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmtbench.commands.bench as bench

    real = bench.time_workload
    limits = {"plain": 2, "rmt": 0}  # rmt runs out of memory at every batch size

    def limited(workload, device, *args, **kwargs):
        size, method = limited.case.batch_size, limited.case.method.name
        if size > limits[method]:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(workload, device, *args, **kwargs)

    real_case_workload = bench.case_workload

    def remember(config, backbone, case, model, runner):
        limited.case = case
        return real_case_workload(config, backbone, case, model, runner)

    monkeypatch.setattr(bench, "time_workload", limited)
    monkeypatch.setattr(bench, "case_workload", remember)
    result = CliRunner().invoke(app, ["bench", "--backbone", "random:llama", "--method", "plain,rmt", "--lengths",
                                      "64", "--batch-size", "8", "--segment-length", "32", "--mode", "eval",
                                      "--device", "cpu", "--repeat", "1", "--warmup", "0", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = pd.concat(pd.read_parquet(f) for f in tmp_path.glob("*.parquet")).set_index("method")
    assert (rows.loc["plain", "status"], rows.loc["plain", "batch_size"], rows.loc["plain", "oom_retries"]) == (
        "success", 2, 2)
    assert rows.loc["plain", "docs"] == 2 and rows.loc["plain", "tokens_scored"] == 2 * 63
    assert (rows.loc["rmt", "status"], rows.loc["rmt", "batch_size"], rows.loc["rmt", "oom_retries"]) == (
        "failed", 1, 3)
    assert json.loads(rows.loc["rmt", "config"])["reason"] == "out of GPU memory down to batch 1 (from 8)"
    assert "B=2    (out of memory: batch halved 2x)" in result.stdout


def test_eval_qa_halves_the_batch_and_records_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of samples that runs out of memory is read in halves: the same records, batch_size as run."""
    import hmtbench.qa.runner as qa_runner

    def eval_qa(out: Path):
        return CliRunner().invoke(app, [
            "eval-qa", "--backbone", "random:llama", "--method", "hmt", "--sensory-tokens", "4",
            "--recall-hidden-dim", "16", "--segment-length", "64", "--task", "passkey", "--context-length", "600",
            "--limit", "4", "--batch-size", "4", "--max-new-tokens", "4", "--out", str(out)])

    whole = eval_qa(tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    real = qa_runner.read_answers

    def limited(method, runner, prompts, *args, **kwargs):
        if len(prompts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(method, runner, prompts, *args, **kwargs)

    monkeypatch.setattr(qa_runner, "read_answers", limited)
    split = eval_qa(tmp_path / "split")
    assert split.exit_code == 0, split.output
    assert "out of device memory, 2 times: batches of 4 were read 1 at a time" in " ".join(split.output.split())
    a, b = (pd.read_parquet(next((tmp_path / name).glob("*.parquet"))).iloc[0] for name in ("whole", "split"))
    assert (a["batch_size"], a["oom_retries"], b["batch_size"], b["oom_retries"]) == (4, 0, 1, 2)
    for column in ("docs", "tokens_scored", "exact_match", "teacher_forced_exact", "data_sha256"):
        assert b[column] == a[column], column
    assert b["answer_ppl"] == pytest.approx(a["answer_ppl"], rel=1e-5)  # rows of 1 and 4 round differently
