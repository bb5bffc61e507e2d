"""The BM25 retrieval baseline: how it ranks, what each step reads, what queries it, and eval-qa end to end."""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.engine import IGNORE, score_segments, segment_batch
from hmtbench.errors import HmtbenchError
from hmtbench.methods import retrieval
from hmtbench.methods.retrieval import EMPTY, bm25_scores, query_ids, top_segments, until_first_target
from hmtbench.qa.answers import qa_batch, score_answers
from tests.conftest import build_method, random_documents
from tests.test_rmt import BackboneInputs

SEGMENTS = [np.array([5, 9, 9, 3]), np.array([7, 7]), np.array([], dtype=np.int64), np.array([3, 11, 5])]


def test_bm25_scores_are_lucene_bm25_over_token_ids() -> None:
    """By hand for one segment (k1 1.5, b 0.75), and as bm25s scores the same tokens spelled as strings."""
    import bm25s

    scores = bm25_scores(SEGMENTS, np.array([9]))
    # 4 segments, 9 in one: idf ln(1 + 3.5 / 1.5); tf 2 in a segment of 4 tokens, mean length 9 / 4
    by_hand = math.log(1 + 3.5 / 1.5) * 2 / (2 + 1.5 * (1 - 0.75 + 0.75 * 4 / 2.25))
    assert scores[0] == pytest.approx(by_hand, rel=1e-5) and (scores[1:] == 0).all()
    reference = bm25s.BM25()
    reference.index([[str(t) for t in s] for s in SEGMENTS], show_progress=False)
    query = np.array([9, 3, 42, 3])  # 42 occurs in no segment
    np.testing.assert_allclose(bm25_scores(SEGMENTS, query), reference.get_scores(["9", "3", "42", "3"]), rtol=1e-6)
    assert (bm25_scores(SEGMENTS, np.array([42])) == 0).all() and bm25_scores([], query).shape == (0,)


def test_top_segments_come_in_document_order_and_the_newest_win_ties() -> None:
    assert top_segments(SEGMENTS, np.array([11, 5]), 2) == [0, 3]  # 11 is rare: segment 3 first, then 0
    assert top_segments(SEGMENTS, np.array([42]), 2) == [2, 3]  # all score 0: the newest
    assert top_segments(SEGMENTS, np.array([3]), 1) == [3]  # 0 and 3 hold 3 once; 3 is shorter, and newer
    assert top_segments(SEGMENTS[:1], np.array([3]), 3) == [0]


def test_the_query_reaches_back_into_the_stored_segments() -> None:
    segments = [np.array([1, 2, 3]), np.array([4, 5])]
    assert query_ids(segments, np.array([6]), 4).tolist() == [3, 4, 5, 6]
    assert query_ids(segments, np.array([6]), 10).tolist() == [1, 2, 3, 4, 5, 6]
    assert query_ids(segments, np.array([6, 7, 8]), 2).tolist() == [7, 8]


def test_a_scoring_segment_queries_with_the_tokens_up_to_its_first_prediction() -> None:
    ids = torch.arange(10, 18)[None].repeat(2, 1)
    targets = torch.full((2, 8), IGNORE)
    targets[0, 3:6], targets[1, 0:] = 1, 1  # an answer after 4 prompt tokens; language modelling from position 0
    query = until_first_target(ids, torch.tensor([6, 8]), targets, None)
    assert query.tolist() == [[10, 11, 12, 13] + [EMPTY] * 4, [10] + [EMPTY] * 7]
    known = torch.where(torch.arange(8) < 3, ids, EMPTY)  # a summary that knew only 3 tokens
    assert until_first_target(ids, torch.tensor([6, 8]), targets, known)[0].tolist() == [10, 11, 12] + [EMPTY] * 5


def needle_prompt(seed: int) -> tuple[torch.Tensor, int]:
    """Filler ids 100-139 with the needle 200-203 at token 30, ending with the question 200-203."""
    filler = torch.randint(100, 140, (108,), generator=torch.Generator().manual_seed(seed))
    needle = torch.tensor([200, 201, 202, 203])
    return torch.cat([filler[:30], needle, filler[30:], needle]), 30


def test_the_answer_reads_the_segments_most_like_the_question_then_its_own(llama: torch.nn.Module) -> None:
    """S 16 (L 64, top_k 3): the answer's segment reads 3 stored segments, the needle's among them, in document
    order; its NLL is the backbone's own on [those segments | the segment], and no context step ran the backbone."""
    model = build_method("retrieval", llama, {"segment_length": 64}).eval()
    assert model.segment_tokens == 16
    prompt, at = needle_prompt(0)
    answer = [210, 211]
    batch = qa_batch([prompt], [answer], 16, model.device)
    stored = [batch.segments[0, i, : int(batch.lengths[0, i])] for i in range(batch.segments.shape[1] - 1)]
    with BackboneInputs(model.backbone) as seen:
        (score,) = score_answers(model, model, [prompt], [answer])
    assert len(seen) == 1  # the answer's segment alone: context segments only joined the store
    first = int(batch.lengths[0, 0])
    needle_segment = 0 if at + 4 <= first else 1 + (at + 3 - first) // 16
    with torch.no_grad():
        picked = top_segments([s.numpy() for s in stored], query_ids([s.numpy() for s in stored],
                                                                     batch.segments[0, -1, :4].numpy(),
                                                                     model.config.query_tokens), 3)
        room = torch.cat([stored[i] for i in picked])
        room = F.pad(room, (48 - len(room), 0), value=retrieval.PAD)
        assert needle_segment in picked and picked == sorted(picked)
        torch.testing.assert_close(seen[0][0, :48], model.embed(room), rtol=0, atol=0)
        row = torch.cat([room, batch.segments[0, -1, : int(batch.lengths[0, -1])]])
        logits = llama(row[None]).logits[0]
    expected = F.cross_entropy(logits[48 + 3 : 48 + 5], torch.tensor(answer), reduction="sum")
    assert score.nll == pytest.approx(float(expected), rel=1e-5)


def test_language_modelling_never_queries_with_the_tokens_a_segment_predicts(llama, monkeypatch) -> None:
    """Each scoring segment queries with the 8 tokens ending at its first token (scored from the segment before)."""
    model = build_method("retrieval", llama, {"segment_length": 32, "top_k": 1, "query_tokens": 8}).eval()
    queries = []
    monkeypatch.setattr(retrieval, "top_segments", lambda segments, query, k: queries.append(query.tolist()) or [0])
    ids = random_documents(1, 80, seed=2)
    with torch.no_grad():
        score_segments(model, segment_batch(ids, torch.tensor([80]), model.segment_tokens))
    assert queries == [ids[0, start - 7 : start + 1].tolist() for start in range(16, 80, 16)]


def test_a_document_longer_than_the_store_is_a_clear_error(llama: torch.nn.Module) -> None:
    model = build_method("retrieval", llama, {"segment_length": 16, "store_tokens": 8}).eval()  # 2 segments of 4
    ids = random_documents(1, 40)
    with torch.no_grad(), pytest.raises(HmtbenchError, match="raise method.store_tokens"):
        score_segments(model, segment_batch(ids, torch.tensor([40]), model.segment_tokens))


@pytest.mark.parametrize(("settings", "flag"), [({"top_k": 0}, "method.top_k"),
                                                 ({"query_tokens": 0}, "method.query_tokens"),
                                                 ({"segment_length": 3}, "--segment-length")])
def test_invalid_settings_name_the_flag(llama: torch.nn.Module, settings: dict, flag: str) -> None:
    with pytest.raises(HmtbenchError, match=flag):
        build_method("retrieval", llama, {"segment_length": 32, **settings})


def test_passkey_through_eval_qa_records_its_settings(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval-qa", "--task", "passkey", "--method", "retrieval", "--backbone",
                                      "random:llama", "--segment-length", "64", "--context-length", "400", "--limit",
                                      "3", "--set", "method.top_k=2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (row,) = [r for _, r in pd.read_parquet(next(tmp_path.glob("*.parquet"))).iterrows()]
    assert row["method"] == "retrieval" and row["status"] == "success" and row["docs"] == 3
    assert row["retrieved_segments"] == 2 and row["text_tokens"] == 21 and row["segment_length"] == 64
    assert row["tokens_skipped"] == 0 and row["answer_ppl"] > 1


def test_ranking_writes_no_debug_lines(caplog: pytest.LogCaptureFixture) -> None:
    """bm25s sets its logger to DEBUG; once anything gives the root logger a handler (as absl does for rouge), each
    index built printed a line in eval-qa's output."""
    segments = [np.array([1, 2, 3]), np.array([4, 5, 6])]
    with caplog.at_level(logging.NOTSET):
        assert top_segments(segments, np.array([5]), 1) == [1]
    assert not [r for r in caplog.records if r.name.startswith("bm25s")]


def test_bm25s_is_imported_without_jax(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where JAX is installed, importing bm25s runs a JAX op, and JAX then claims three quarters of the GPU: on an
    H100, two trainings side by side ran out of memory. bm25s is imported with JAX hidden, and JAX is unhidden after."""
    fake = tmp_path / "jax"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "lax.py").write_text("CALLS = []\n\ndef top_k(scores, k):\n    CALLS.append(k)\n    return scores, k\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [n for n in sys.modules if n == "bm25s" or n.startswith(("bm25s.", "jax"))]:
        monkeypatch.delitem(sys.modules, name)
    retrieval._bm25s.cache_clear()
    try:
        bm25s = retrieval._bm25s()
        assert "jax" not in sys.modules and not bm25s.selection.JAX_IS_AVAILABLE
        import jax.lax  # the fake: hidden only while bm25s was imported

        assert jax.lax.CALLS == []
    finally:
        retrieval._bm25s.cache_clear()
        for name in [n for n in sys.modules if n == "jax" or n.startswith("jax.")]:
            del sys.modules[name]  # the fake, which no later test may import
