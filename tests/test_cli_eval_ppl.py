"""`hmtbench eval-ppl` end to end (CliRunner, random:llama, local files) and the paper protocol."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import hmtbench
import hmtbench.commands.eval_ppl
from hmtbench.backbones.tiny import byte_tokenizer, tiny_model
from hmtbench.cli import app
from hmtbench.data import Corpus, tokenize_corpus
from hmtbench.engine import score_segments, segment_batch
from hmtbench.evaluation.perplexity import evaluate, paper_batches, paper_windows
from hmtbench.results.schema import COLUMN_NAMES
from tests.conftest import build_method, one_error

L, K, N, H, TEST_LENGTH = 32, 4, 5, 16, 200
WORDS = "memory segment recall token summary sensory cache window stream paper".split()


def text(n_words: int, seed: int) -> str:
    generator = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (n_words,), generator=generator).tolist())


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    """Two long documents and one shorter than a segment (skipped)."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text(text(80, 0))
    (folder / "b.txt").write_text(text(60, 1))
    (folder / "c.txt").write_text("too short")
    return folder


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner(env=env).invoke(app, ["eval-ppl", *args])


def eval_args(dataset: Path | str, out: Path, *extra: str) -> list[str]:
    """The shared flags, and HMT's own when an HMT run is asked for (a setting no asked-for method has is an error)."""
    hmt = ["--sensory-tokens", str(K), "--recall-context", str(N), "--recall-hidden-dim", str(H)]
    return [
        "--backbone", "random:llama", "--dataset", str(dataset), "--out", str(out),
        "--segment-length", str(L), "--test-length", str(TEST_LENGTH), "--batch-size", "2",
        *(hmt if "hmt" in " ".join(extra) else []), *extra,
    ]


def records(out: Path) -> pd.DataFrame:
    files = sorted(out.glob("*.parquet"))
    return pd.concat([pd.read_parquet(f).assign(file=f.stem) for f in files], ignore_index=True)


def test_eval_ppl_end_to_end_writes_every_column(corpus_dir: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "results"
    args = eval_args(corpus_dir, out, "--method", "plain,full,rmt,hmt")
    monkeypatch.setattr(sys, "argv", ["hmtbench", "eval-ppl", *args])  # as typed in a shell
    built, build = [], hmtbench.commands.eval_ppl.build_method

    def build_and_keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(hmtbench.commands.eval_ppl, "build_method", build_and_keep)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert [m.most_tokens for m in built] == [TEST_LENGTH] * 4  # documents are cut there: HMT sizes its cache to it
    files = sorted(out.glob("*.parquet"))
    assert len(files) == 4
    for f in files:
        assert f"wrote {f}" in result.stdout  # the last lines name the files written
        assert list(pd.read_parquet(f).columns) == COLUMN_NAMES
    rows = records(out).set_index("method")
    assert sorted(rows.index) == ["full", "hmt", "plain", "rmt"]

    # both documents read whole (byte tokenizer: <s> + one token per byte), the short one skipped
    lengths = [min(TEST_LENGTH, 1 + len((corpus_dir / name).read_text().encode())) for name in ("a.txt", "b.txt")]
    assert lengths == [TEST_LENGTH, TEST_LENGTH]
    d = 64
    expected = {  # method: (segment_length, text_tokens, memory_tokens, sensory_tokens, added_params)
        "plain": (L, L, 0, 0, 0),
        "full": (TEST_LENGTH, TEST_LENGTH, 0, 0, 0),
        "rmt": (L, L - 2, 1, 0, d),
        "hmt": (L, L - 2 - K, 1, K, 2 * d + 2 * d * H),
    }
    for method, (segment_length, text_tokens, m, k, added) in expected.items():
        row = rows.loc[method]
        assert row["run_id"] == row["file"] and method in row["run_id"]
        identity = (row["command"], row["status"], row["protocol"], row["split"])
        assert identity == ("eval-ppl", "success", "stream", "test")
        assert (row["backbone"], row["backbone_resolved"]) == ("random:llama", "random:llama")
        assert row["dataset"] == str(corpus_dir)
        assert (row["segment_length"], row["text_tokens"], row["memory_tokens"], row["sensory_tokens"]) == (
            segment_length, text_tokens, m, k)
        assert row["text_tokens"] == row["segment_length"] - 2 * row["memory_tokens"] - row["sensory_tokens"]
        assert row["added_params"] == added
        assert row["trainable_params"] == added  # the backbone is frozen
        assert row["backbone_params"] == sum(p.numel() for p in tiny_model("llama").parameters())
        assert (row["docs"], row["docs_skipped"], row["test_length"], row["batch_size"]) == (2, 1, TEST_LENGTH, 2)
        assert row["tokens_scored"] == sum(n - 1 for n in lengths)  # every token but each document's first
        assert row["tokens_scored"] == sum(row["segment_tokens"])
        assert row["nll_mean"] == pytest.approx(sum(row["segment_nll"]) / row["tokens_scored"], rel=1e-12)
        assert row["ppl"] == pytest.approx(math.exp(row["nll_mean"]), rel=1e-12)
        assert row["bpb"] == pytest.approx(sum(row["segment_nll"]) / math.log(2) / row["bytes_scored"], rel=1e-12)
        assert row["bytes_scored"] == sum(n - 1 for n in lengths)  # one byte per token
        assert len(row["segment_tokens"]) == math.ceil(TEST_LENGTH / text_tokens)
        assert 150 < row["ppl"] < 450  # a random model over 259 tokens is near uniform
        assert pd.isna(row["paper_ppl"])
        assert (row["device"], row["dtype"], row["seed"]) == ("cpu", "float32", 3407)
        assert row["hmtbench_version"] == hmtbench.__version__ and row["torch_version"] == torch.__version__
        assert row["wall_s"] > 0 and row["tokens_per_s"] > 0 and row["peak_host_mem_mb"] > 0
        assert pd.isna(row["peak_gpu_mem_mb"]) and pd.isna(row["checkpoint"])
        assert row["command_line"] == " ".join(["hmtbench", "eval-ppl", *args])
        config = json.loads(row["config"])
        assert config["method"]["name"] == method and config["segment_length"] == L
        is_hmt = method == "hmt"
        for column, value in (("recall_context", N), ("recall_hidden_dim", H), ("sum_fraction", 0.5), ("hmt_stage", 2)):
            assert (row[column] == value) if is_hmt else pd.isna(row[column])


def test_a_second_run_does_not_overwrite_the_first(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    first = invoke(*eval_args(corpus_dir / "a.txt", out, "--method", "plain"))
    assert first.exit_code == 0, first.output
    [first_file] = out.glob("*.parquet")
    before = first_file.read_bytes()
    second = invoke(*eval_args(corpus_dir / "a.txt", out, "--method", "plain"))
    assert second.exit_code == 0, second.output
    files = sorted(out.glob("*.parquet"))
    assert len(files) == 2 and first_file in files
    assert first_file.read_bytes() == before
    rows = records(out)
    assert rows["run_id"].nunique() == 2
    assert rows["ppl"].iloc[0] == rows["ppl"].iloc[1]  # same seed, same data, same number
    assert list(out.glob(".*")) == []  # no temporary file left behind


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name: (extra CLI args, phrases the one-line error must hold)."""
    from hmtbench.checkpoints import save_checkpoint

    doc = tmp_path / "doc.txt"
    doc.write_text(text(80, 0))
    no_text_jsonl = write_jsonl(tmp_path / "rows.jsonl", [{"text": text(80, 0)}, {"body": "no text here"}])
    no_text_parquet = tmp_path / "rows.parquet"
    pd.DataFrame({"body": [text(80, 0)]}).to_parquet(no_text_parquet)
    checkpoint = save_checkpoint(tmp_path / "ckpt", {"memory": torch.zeros(3, 7)}, {"method": "rmt"})
    default = ["--dataset", str(doc), "--test-length", "300"]
    return {
        "alias": (["--backbone", "smollm2-13m", *default],
                  ["unknown backbone 'smollm2-13m'", "did you mean 'smollm2-135m'"]),
        "tiny": (["--backbone", "random:lama", *default],
                 ["unknown backbone 'random:lama'", "did you mean 'random:llama'"]),
        "dataset": (["--backbone", "random:llama", "--dataset", "wikitxt-103"],
                    ["unknown dataset 'wikitxt-103'", "did you mean 'wikitext-103'"]),
        "jsonl": (["--backbone", "random:llama", "--dataset", str(no_text_jsonl)],
                  ["rows.jsonl:2 has no 'text' field"]),
        "parquet": (["--backbone", "random:llama", "--dataset", str(no_text_parquet)],
                    ["has no 'text' column (columns: body)"]),
        "short segment rmt": (["--backbone", "random:llama", *default, "--method", "rmt", "--segment-length", "2"],
                              ["--segment-length 2 leaves no room for text", "use --segment-length 3 or more"]),
        "short segment hmt": (["--backbone", "random:llama", *default, "--method", "hmt", "--segment-length", "6",
                               "--sensory-tokens", "4"], ["--segment-length 6 leaves no room", "--segment-length 7"]),
        # caught before the (short) documents are read, so the message is about positions, not document length
        "positions": (["--backbone", "random:llama", "--dataset", str(doc), "--test-length", "6000",
                       "--segment-length", "5000"], ["exceeds the backbone's maximum of 4096 positions"]),
        "positions full": (["--backbone", "random:llama", "--dataset", str(doc), "--test-length", "5000",
                            "--method", "full"], ["need 5000 positions", "maximum of 4096", "--test-length"]),
        "test length": (["--backbone", "random:llama", "--dataset", str(doc), "--test-length", "200"],
                        ["--test-length 200 is shorter than one segment", "--segment-length 256"]),
        "checkpoint": (["--backbone", "random:llama", *default, "--method", "rmt", "--segment-length", "32",
                        "--checkpoint", str(checkpoint)], ["does not fit this backbone", "'memory' is (3, 7)"]),
        "method": (["--backbone", "random:llama", *default, "--method", "hmtt"], ["unknown method 'hmtt'",
                                                                                   "did you mean 'hmt'"]),
        "paper too short": (["--backbone", "random:llama", *default, "--protocol", "paper", "--test-length", "5000"],
                            ["fewer than one paper window (--test-length 5000)"]),
        "protocol": (["--backbone", "random:llama", *default, "--protocol", "papers"], ["unknown --protocol 'papers'"]),
        "hub offline": (["--backbone", "nobody/nothing", *default],
                        ["could not load 'nobody/nothing'", "HF_HUB_OFFLINE=1"]),
    }


BAD = ["alias", "tiny", "dataset", "jsonl", "parquet", "short segment rmt", "short segment hmt", "positions",
       "positions full", "test length", "checkpoint", "method", "paper too short", "protocol", "hub offline"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    args, phrases = bad_inputs(tmp_path)[case]
    out = tmp_path / "results"
    result = invoke(*args, "--out", str(out), env={"HF_HUB_OFFLINE": "1", "HMTBENCH_DEBUG": ""})
    one_error(result, *phrases)
    assert not list(out.glob("*.parquet"))  # nothing is recorded for a failed run


# ----- the paper protocol ------------------------------------------------------------------------
def tokenized(lengths: list[int]):
    corpus = Corpus("synthetic", "test", [text(n, i) for i, n in enumerate(lengths)])
    return tokenize_corpus(corpus, byte_tokenizer(), None, 1)


def test_paper_windows_follow_the_reference() -> None:
    """Spec 5.1: window for offset i = kS is [max(0, i - S), i + test_length), stride S, over the joined documents."""
    corpus = tokenized([20, 30])
    total = sum(len(d) for d in corpus.documents)
    s, test_length = 10, 40
    windows = paper_windows(corpus, s, test_length, None)
    expected = []
    k = 0
    while k * s + test_length <= total:
        expected.append((max(0, k * s - s), k * s + test_length))
        k += 1
    assert windows == expected
    assert windows[:3] == [(0, 40), (0, 50), (10, 60)]
    assert all(end - start == test_length + s for start, end in windows[1:])
    assert windows[-1][1] <= total and windows[-1][1] + s > total
    assert paper_windows(corpus, s, test_length, 3) == windows[:3]


@pytest.mark.parametrize("method", ["plain", "rmt", "hmt"])
def test_paper_protocol_scores_the_last_block_and_averages_batch_ppls(llama: torch.nn.Module, method: str) -> None:
    torch.manual_seed(0)
    model = build_method(method, llama, {"segment_length": 16, "sensory_tokens": 2, "recall_hidden_dim": 8}).eval()
    corpus = tokenized([40, 50, 60])
    s, test_length, tokenizer = model.segment_tokens, 48, byte_tokenizer()
    batches = list(paper_batches(corpus, s, test_length, 2, 8, tokenizer, torch.device("cpu")))
    windows = paper_windows(corpus, s, test_length, 8)
    assert len(windows) == 8 and len(batches) == 4
    stream = [t for d in corpus.documents for t in d]
    by_hand = []
    for b, ((ids, lengths, scored), scored_bytes) in enumerate(batches):
        rows = windows[2 * b : 2 * b + 2]
        for row, (start, end) in enumerate(rows):
            assert ids[row, : end - start].tolist() == stream[start:end]
            assert scored[row].nonzero().flatten().tolist() == list(range(end - start - s, end - start))
        assert scored_bytes == sum(sum(t < 256 for t in stream[end - s : end]) for _, end in rows)  # byte tokens
        with torch.no_grad():
            nll, tokens = score_segments(model, segment_batch(ids, lengths, s, scored))
        assert tokens.sum().item() == 2 * s  # only the last S tokens of each window
        by_hand.append(math.exp(nll.sum().item() / tokens.sum().item()))
    result = evaluate(model, iter(batches))
    assert result.docs == 8 and result.tokens == 8 * s
    assert result.paper_ppl == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-6)
    assert result.batch_ppls == pytest.approx(by_hand, rel=1e-6)
    # token-weighted ppl is exp of the mean batch CE here (equal batches): never above the mean of exps
    assert result.ppl == pytest.approx(math.exp(sum(map(math.log, by_hand)) / len(by_hand)), rel=1e-6)
    assert result.ppl <= result.paper_ppl


def test_eval_ppl_paper_protocol_on_the_cli(corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = invoke(*eval_args(corpus_dir, out, "--method", "plain,rmt", "--protocol", "paper", "--test-length", "64",
                               "--max-windows", "6"))
    assert result.exit_code == 0, result.output
    rows = records(out).set_index("method")
    for method, s in (("plain", L), ("rmt", L - 2)):
        row = rows.loc[method]
        # windows come from whole documents: cut to 64 tokens each, the two would only hold 3 windows
        assert row["protocol"] == "paper" and row["docs"] == 6
        assert row["docs_skipped"] == 0  # the short document joins the stream, as in the reference
        assert row["tokens_scored"] == 6 * s == sum(row["segment_tokens"])
        assert row["ppl"] == pytest.approx(math.exp(row["nll_mean"]), rel=1e-12)
        assert not pd.isna(row["paper_ppl"]) and row["paper_ppl"] >= row["ppl"] * (1 - 1e-9)


def test_a_grid_on_eval_ppl_gives_each_run_its_numbers_alone(corpus_dir: Path, tmp_path: Path) -> None:
    """--grid on eval-ppl: one record per value, named by it, each the perplexity of the same run made alone."""
    grid = tmp_path / "grid"
    result = invoke(*eval_args(corpus_dir, grid, "--method", "hmt", "--grid", "method.recall_choice=soft,hard"))
    assert result.exit_code == 0, result.output
    frame = records(grid).set_index("name")
    assert sorted(frame.index) == ["hard", "soft"] and frame["ppl"].nunique() == 2
    alone = tmp_path / "alone"
    assert invoke(*eval_args(corpus_dir, alone, "--method", "hmt", "--set", "method.recall_choice=hard")
                  ).exit_code == 0
    assert records(alone)["ppl"].iloc[0] == frame.loc["hard", "ppl"]
