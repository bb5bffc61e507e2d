"""lm-eval's ``--model hmtbench`` (random:llama, local task YAMLs): every request type against the native numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from hmtbench.backbones.tiny import byte_tokenizer  # noqa: E402
from hmtbench.cli import app  # noqa: E402
from hmtbench.errors import HmtbenchError  # noqa: E402
from hmtbench.generation import greedy_generate  # noqa: E402
from hmtbench.lmeval.model import HmtbenchLM, lmeval_config  # noqa: E402
from hmtbench.qa.runner import answer_nll, stop_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "data" / "lmeval"
L, K, N, H = 32, 4, 5, 16  # segment length, sensory tokens, recall context, recall width: S = 32 - 2 - 4 = 26
HMT = {"sensory_tokens": K, "recall_context": N, "recall_hidden_dim": H}
TEST_LENGTH = 1024  # eval-ppl reads every test document whole (the longest is under 400 tokens)


def settings(method: str) -> dict:
    return {"backbone": "random:llama", "method": method, "segment_length": L, **(HMT if method == "hmt" else {})}


def model_args(method: str) -> str:
    return ",".join(f"{k}={v}" for k, v in settings(method).items())


def qa_rows() -> list[dict]:
    return [json.loads(line) for line in (TASKS / "qa.jsonl").read_text().splitlines()]


@pytest.fixture
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task YAMLs name their data relative to the repository root, as a user's YAML would."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="module")
def hmt() -> HmtbenchLM:
    return HmtbenchLM(**settings("hmt"))


def evaluate(model, tasks: list[str], **kwargs) -> dict:
    manager = TaskManager(include_path=str(TASKS), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=manager, log_samples=True, **kwargs)


def eval_ppl(method: str, out: Path) -> pd.Series:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings(method).items()]
    args = ["eval-ppl", *flags, "--dataset", str(TASKS / "docs.jsonl"), "--test-length", str(TEST_LENGTH),
            "--batch-size", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [record] = out.glob("*.parquet")
    return pd.read_parquet(record).iloc[0]


@pytest.mark.parametrize("method", ["plain", "full", "rmt", "hmt"])
def test_rolling_perplexity_is_eval_ppl(method: str, at_root: None, tmp_path: Path) -> None:
    """Same documents, backbone, method and segment length: lm-eval's rolling log-likelihoods give eval-ppl's ppl."""
    results = evaluate("hmtbench", ["hmtbench_test_rolling"], model_args=model_args(method), batch_size=3)
    samples = results["samples"]["hmtbench_test_rolling"]
    tokenizer = byte_tokenizer()
    texts = [s["doc"]["text"] for s in samples]
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    logprob = sum(s["filtered_resps"][0] for s in samples)
    row = eval_ppl(method, tmp_path / "results")
    assert (row["docs"], row["docs_skipped"], row["tokens_scored"]) == (len(texts), 0, tokens)
    assert math.exp(-logprob / tokens) == pytest.approx(row["ppl"], rel=1e-5)
    assert results["results"]["hmtbench_test_rolling"]["bits_per_byte,none"] == pytest.approx(row["bpb"], rel=1e-5)
    assert 150 < row["ppl"] < 450  # a random model over 259 tokens is near uniform: something was scored


def loglikelihood_requests(lm: HmtbenchLM) -> list[Instance]:
    pairs = [(r["context"], " " + r["answer"]) for r in qa_rows()] + [("", "window memory")]
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def test_loglikelihood_is_answer_nll_at_any_batch_size(hmt: HmtbenchLM) -> None:
    """The continuation's log-probability is eval-qa's answer NLL; batching and padding change nothing."""
    requests = loglikelihood_requests(hmt)
    by_size = {}
    for size in (1, 4):
        hmt.config.batch_size = size
        by_size[size] = hmt.loglikelihood(requests, disable_tqdm=True)
    for (one, greedy_one), (four, greedy_four) in zip(by_size[1], by_size[4], strict=True):
        assert one == pytest.approx(four, abs=1e-5) and greedy_one == greedy_four
    for request, (logprob, _) in zip(requests, by_size[1], strict=True):
        context, continuation = request.args
        if context:
            context_ids, continuation_ids = hmt._encode_pair(context, continuation)
        else:
            context_ids, continuation_ids = [hmt.prefix_token_id], hmt.tok_encode(continuation, False)
        assert context_ids[0] == hmt.prefix_token_id  # the byte tokenizer prepends <s>, as eval-qa's prompts hold
        nll, tokens = answer_nll(hmt.method, context_ids, continuation_ids)
        assert tokens == len(continuation_ids) > 0
        assert logprob == pytest.approx(-nll, rel=1e-5)
    assert max(len(r.args[0]) for r in requests) > 8 * hmt.method.segment_tokens  # contexts held in memory


def test_is_greedy_means_every_token_is_the_argmax(hmt: HmtbenchLM) -> None:
    # 41 tokens: the continuation stays in a segment that already holds more than the summary reads
    context_ids = hmt.tok_encode("x" * 40)
    generated = greedy_generate(hmt.method, context_ids, 5).token_ids
    changed = [*generated[:-1], (generated[-1] + 1) % 256]
    scores = hmt._loglikelihood_tokens([(("", ""), context_ids, generated), (("", ""), context_ids, changed)],
                                      disable_tqdm=True)
    assert [greedy for _, greedy in scores] == [True, False]
    nll, _ = answer_nll(hmt.method, context_ids, generated)
    assert scores[0][0] == pytest.approx(-nll, rel=1e-5)


def test_generate_until_is_greedy_generate(hmt: HmtbenchLM) -> None:
    context = qa_rows()[0]["context"]
    ids = greedy_generate(hmt.method, hmt.tok_encode(context), 6,
                          stop_ids=stop_ids(hmt.tokenizer, hmt.backbone.model)).token_ids
    expected = hmt.tok_decode(ids)
    [text] = hmt.generate_until([Instance("generate_until", {}, (context, {"until": ["never"], "max_gen_toks": 6}), 0)],
                                disable_tqdm=True)
    assert text == expected and len(ids) == 6
    stop = next(c for c in expected[1:] if c.isascii())  # random bytes: some are ASCII
    [cut] = hmt.generate_until([Instance("generate_until", {}, (context, {"until": [stop]}), 0)], disable_tqdm=True)
    assert cut == expected.split(stop)[0]


def test_generate_until_batches_requests_each_with_its_own_limits(hmt: HmtbenchLM) -> None:
    first, second = (row["context"] for row in qa_rows()[:2])
    contexts = [first, first, second, "short one", "x" * 70]
    kwargs = [{"until": ["never"], "max_gen_toks": 7}, {"until": ["never"], "max_gen_toks": 2}, {"until": ["e"]},
              {"until": ["never"], "max_gen_toks": 5}, {"until": ["\n"], "max_gen_toks": 9}]
    pairs = enumerate(zip(contexts, kwargs, strict=True))
    requests = [Instance("generate_until", {}, (c, k), i) for i, (c, k) in pairs]
    hmt.config.batch_size = 1
    alone = hmt.generate_until(requests, disable_tqdm=True)
    hmt.config.batch_size = 4
    together = hmt.generate_until(requests, disable_tqdm=True)
    assert together == alone
    assert together[0].startswith(together[1]) and len(together[1]) < len(together[0])  # each row its own limit


def test_every_request_type_through_simple_evaluate(hmt: HmtbenchLM, at_root: None) -> None:
    hmt.config.batch_size = 2
    tasks = ["hmtbench_test_rolling", "hmtbench_test_loglikelihood", "hmtbench_test_generate"]
    results = evaluate(hmt, tasks)
    assert results["results"]["hmtbench_test_loglikelihood"]["acc,none"] == 0.0  # random weights guess nothing
    assert results["results"]["hmtbench_test_generate"]["exact_match,none"] == 0.0
    for sample in results["samples"]["hmtbench_test_generate"]:
        expected = hmt.generate(sample["doc"]["context"], {"until": ["\n"], "max_gen_toks": 8})
        assert sample["filtered_resps"][0] == expected
    for sample in results["samples"]["hmtbench_test_loglikelihood"]:
        context_ids, answer_ids = hmt._encode_pair(sample["doc"]["context"], " " + sample["doc"]["answer"])
        assert sample["filtered_resps"][0][0] == pytest.approx(-answer_nll(hmt.method, context_ids, answer_ids)[0],
                                                              rel=1e-5)


def test_model_args_become_method_settings(tmp_path: Path) -> None:
    config = lmeval_config({**settings("hmt"), "batch_size": "4"})  # lm-eval's --batch_size arrives as text
    assert (config.method.name, config.method.sensory_tokens, config.segment_length, config.batch_size) == (
        "hmt", K, L, 4)
    with pytest.raises(HmtbenchError, match="did you mean 'sensory_tokens'"):
        lmeval_config({**settings("hmt"), "sensory_tokenz": 2})
    with pytest.raises(HmtbenchError, match="batch_size"):
        lmeval_config({**settings("plain"), "batch_size": "auto"})


def test_a_checkpoint_fills_the_settings_it_was_trained_with(tmp_path: Path) -> None:
    from hmtbench.checkpoints import save_checkpoint

    trained = HmtbenchLM(**settings("hmt"), seed=1)
    tensors = trained.method.added_parameters()
    meta = {"method": trained.method.config.settings(), "segment_length": L, "backbone_identity": "random:llama"}
    checkpoint = save_checkpoint(tmp_path / "ckpt", tensors, meta)
    lm = HmtbenchLM(backbone="random:llama", checkpoint=str(checkpoint))  # no method, segment or memory sizes
    assert (lm.method.name, lm.method.segment_length, lm.method.config.sensory_tokens) == ("hmt", L, K)
    for name, value in lm.method.added_parameters().items():
        assert torch.equal(value, tensors[name])


def test_the_registry_finds_hmtbench() -> None:
    from lm_eval.api.registry import get_model

    assert get_model("hmtbench") is HmtbenchLM
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, name = project["entry-points"]["lm_eval.models"]["hmtbench"].split(":")
    assert getattr(__import__(module, fromlist=[name]), name) is HmtbenchLM  # what later lm-evals discover
    assert project["optional-dependencies"]["lm-eval"] == [f"lm_eval=={lm_eval.__version__}"]  # the version tested


def test_passkey_task_scores_eval_qa_prompts(tmp_path: Path, hmt: HmtbenchLM) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from lmeval_niah import main
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    [name] = main(["--backbone", "random:llama", "--context-length", "320", "--samples", "3", "--out",
                   str(tmp_path / "tasks")])
    rows = [json.loads(line) for line in (tmp_path / "tasks" / f"{name}.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(abs(r["prompt_tokens"] - 320) <= 2 for r in rows)
    assert all(r["answer"].isdigit() and r["answer"] in r["prompt"] for r in rows)
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    results = lm_eval.simple_evaluate(model=hmt, tasks=[name], task_manager=manager, log_samples=True)
    assert results["results"][name]["exact_match,first-number"] == 0.0  # random weights recall nothing
    for sample in results["samples"][name]:
        assert sample["resps"][0][0] == hmt.generate(sample["doc"]["prompt"], {"until": ["\n\n"], "max_gen_toks": 12})


@pytest.mark.slow
def test_python_m_hmtbench_lmeval_runs_lm_evals_command_line(tmp_path: Path) -> None:
    """The plain lm_eval 0.4.13 command cannot see --model hmtbench; ``python -m hmtbench.lmeval`` can."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [sys.executable, "-m", "hmtbench.lmeval", "--model", "hmtbench", "--model_args", model_args("hmt"),
               "--include_path", str(TASKS), "--tasks", "hmtbench_test_loglikelihood", "--limit", "2",
               "--output_path", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hmtbench_test_loglikelihood" in done.stdout
    [written] = (tmp_path / "out").rglob("results_*.json")
    assert json.loads(written.read_text())["config"]["model"] == "hmtbench"
