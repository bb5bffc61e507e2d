"""The record's accounting and writing: per-document ppl sums, the computed columns, the schema, file modes."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pandas as pd
import pytest
import torch

from hmtbench.backbones.tiny import byte_tokenizer
from hmtbench.data import Corpus, tokenize_corpus
from hmtbench.engine import score_segments, segment_batch
from hmtbench.evaluation.perplexity import PerplexityResult, evaluate, paper_batches, stream_batches
from hmtbench.results.provenance import tokens_sha256
from hmtbench.results.record_columns import depth_breakdown, ppl_columns, qa_columns
from hmtbench.results.schema import COLUMNS, METRIC_DIRECTION, make_record, read_results, write_record
from hmtbench.stats import bootstrap_ppl_interval
from tests.conftest import build_method

# two batches of (B, n) per-segment sums as score_segments returns them: 3 documents of 2 segments, then 2 of 3
BATCHES = [
    (torch.tensor([[4.0, 6.0], [3.0, 0.0], [10.0, 2.5]]), torch.tensor([[2, 3], [1, 0], [4, 1]])),
    (torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 0.5]]), torch.tensor([[1, 1, 1], [2, 2, 1]])),
]


def accumulated() -> PerplexityResult:
    result = PerplexityResult()
    for nll, tokens in BATCHES:
        result.add(nll, tokens)
    return result


def test_add_keeps_each_document_sum_and_the_segment_sums() -> None:
    result = accumulated()
    assert result.doc_nll == [10.0, 3.0, 12.5, 6.0, 10.5]
    assert result.doc_tokens == [5, 1, 5, 3, 5] and all(type(t) is int for t in result.doc_tokens)
    assert result.segment_nll == [23.0, 15.5, 3.5] and result.segment_tokens == [10, 7, 2]
    assert all(type(t) is int for t in result.segment_tokens)
    assert result.nll_sum == sum(result.doc_nll) and result.tokens == sum(result.doc_tokens) == 19
    assert result.batch_ppls == pytest.approx([math.exp(25.5 / 11), math.exp(16.5 / 8)])
    assert result.ppl == pytest.approx(math.exp(42.0 / 19))


def test_merging_one_batch_results_in_order_repeats_add() -> None:
    merged = PerplexityResult()
    for nll, tokens in BATCHES:
        piece = PerplexityResult()
        piece.add(nll, tokens)
        merged.merge(piece)
    assert merged == accumulated()


def test_ppl_interval_is_the_bootstrap_over_documents() -> None:
    result = accumulated()
    low, high = result.ppl_interval()
    assert low <= result.ppl <= high
    assert (low, high) == bootstrap_ppl_interval(result.doc_nll, result.doc_tokens)
    assert result.ppl_interval(seed=3) == bootstrap_ppl_interval(result.doc_nll, result.doc_tokens, seed=3)
    assert all(math.isnan(x) for x in PerplexityResult().ppl_interval())


WORDS = "memory segment recall token summary sensory cache window stream paper".split()


def tokenized(lengths: list[int]):
    generator = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n,), generator=generator).tolist())
             for n in lengths]
    return tokenize_corpus(Corpus("synthetic", "test", texts), byte_tokenizer(), None, 1)


def test_evaluate_keeps_one_sum_per_document_as_if_scored_alone(llama: torch.nn.Module) -> None:
    torch.manual_seed(0)
    model = build_method("plain", llama, {"segment_length": 16}).eval()
    corpus = tokenized([12, 20, 7, 15])
    result = evaluate(model, stream_batches(corpus, 2, torch.device("cpu")))
    assert len(result.doc_nll) == len(result.doc_tokens) == result.docs == 4
    assert sum(result.doc_tokens) == result.tokens and sum(result.doc_nll) == pytest.approx(result.nll_sum)
    longest_first = sorted(corpus.documents, key=len, reverse=True)  # the order stream_batches scores them in
    for document, nll, tokens in zip(longest_first, result.doc_nll, result.doc_tokens, strict=True):
        with torch.no_grad():
            alone, count = score_segments(model, segment_batch(torch.tensor([document]), torch.tensor([len(document)]),
                                                               model.segment_tokens))
        assert tokens == int(count.sum()) == len(document) - 1
        assert nll == pytest.approx(alone.sum().item(), rel=1e-5)


def test_paper_windows_are_the_documents(llama: torch.nn.Module) -> None:
    model = build_method("plain", llama, {"segment_length": 16}).eval()
    s = model.segment_tokens
    batches = paper_batches(tokenized([40, 50]), s, 32, 3, 7, byte_tokenizer(), torch.device("cpu"))
    result = evaluate(model, batches)
    assert result.doc_tokens == [s] * 7 and result.docs == 7  # each window scores its last S tokens


def test_ppl_columns_keep_each_document_in_the_order_the_hash_reads_them() -> None:
    result, documents = accumulated(), [[1, 2, 3], [4], [5], [6], [7]]  # 5 units: NLL 10, 3, 12.5, 6, 10.5
    low, high = result.ppl_interval()
    assert ppl_columns(result, documents) == {"ppl_ci_low": low, "ppl_ci_high": high,
                                              "data_sha256": tokens_sha256(documents),
                                              "doc_nll": [10.0, 3.0, 12.5, 6.0, 10.5], "doc_tokens": [5, 1, 5, 3, 5]}
    # scored in another order (stream: longest first): the j-th unit scored is corpus document order[j]
    columns = ppl_columns(result, documents, order=[2, 0, 4, 1, 3])
    assert (columns["doc_nll"], columns["doc_tokens"]) == ([3.0, 6.0, 10.0, 10.5, 12.5], [1, 3, 5, 5, 5])
    with pytest.raises(ValueError, match="permutation"):
        ppl_columns(result, documents, order=[0, 0, 1, 2, 3])


def sample(depth: float | None, accuracy: float, exact: float) -> dict:
    return {"accuracy": accuracy, "exact_match": exact, "f1": 0.5, "meta": {} if depth is None else {"depth": depth}}


def test_qa_columns_wilson_intervals_and_depths() -> None:
    records = [sample(0.5, 1.0, 1.0), sample(0.0, 1.0, 0.0), sample(0.5, 0.0, 0.0), sample(0.0, 1.0, 1.0)]
    columns = qa_columns(records, [[5, 6]])
    # 3 of 4 contain the answer: Wilson 95% by hand (z^2 = 3.8415): center (0.75 + 0.4802) / 1.9604 = 0.6275,
    # half 1.96 / 1.9604 * sqrt(0.046875 + 0.060025) = 0.3268 -> [0.3006, 0.9544]
    assert (columns["accuracy_ci_low"], columns["accuracy_ci_high"]) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert (columns["exact_match_ci_low"], columns["exact_match_ci_high"]) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert columns["by_depth"] == [
        {"depth": 0.0, "n": 2, "accuracy": 1.0, "exact_match": 0.5},
        {"depth": 0.5, "n": 2, "accuracy": 0.5, "exact_match": 0.5},
    ]
    assert columns["data_sha256"] == tokens_sha256([[5, 6]])


def test_depth_breakdown_is_null_without_needles_and_intervals_refuse_graded_scores() -> None:
    assert depth_breakdown([sample(None, 1.0, 1.0)]) is None
    with pytest.raises(ValueError):
        qa_columns([{"accuracy": 0.5, "exact_match": 0.0, "meta": {}}], [])


NEW_COLUMNS = {
    "ppl_ci_low": "Float64", "ppl_ci_high": "Float64", "accuracy_ci_low": "Float64", "accuracy_ci_high": "Float64",
    "exact_match_ci_low": "Float64", "exact_match_ci_high": "Float64", "by_depth": "object",
    "data_sha256": "string", "run_label": "string", "weights": "string",
}


def test_schema_declares_the_new_columns_and_no_interval_is_a_metric() -> None:
    declared = {c.name: c.dtype for c in COLUMNS}
    assert {name: declared.get(name) for name in NEW_COLUMNS} == NEW_COLUMNS
    assert not any(name.endswith(("_ci_low", "_ci_high")) for name in METRIC_DIRECTION)
    assert "by_depth" not in METRIC_DIRECTION


def test_new_columns_round_trip_through_parquet(tmp_path: Path) -> None:
    by_depth = [{"depth": 0.0, "n": 2, "accuracy": 1.0, "exact_match": 0.5}]
    values = {"run_id": "r1", "command": "eval-qa", "method": "hmt", "by_depth": by_depth, "accuracy_ci_low": 0.3,
              "ppl_ci_high": math.nan, "run_label": "sweep A", "weights": "random", "data_sha256": "ab" * 32}
    write_record(make_record(values), tmp_path, "r1")
    write_record(make_record({"run_id": "r2", "command": "eval-ppl", "method": "plain"}), tmp_path, "r2")
    frame = read_results([tmp_path]).set_index("run_id")
    assert [dict(d) for d in frame.loc["r1", "by_depth"]] == by_depth
    assert frame.loc["r1", "accuracy_ci_low"] == 0.3 and pd.isna(frame.loc["r1", "ppl_ci_high"])
    assert (frame.loc["r1", "run_label"], frame.loc["r1", "weights"]) == ("sweep A", "random")
    assert frame.loc["r2", "by_depth"] is None and pd.isna(frame.loc["r2", "weights"])


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_records_are_written_with_the_mode_open_would_give(tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        path = write_record(make_record({"run_id": "r", "command": "eval-ppl", "method": "plain"}), tmp_path, "r")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
