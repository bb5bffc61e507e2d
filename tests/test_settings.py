"""What the user gives wins; a checkpoint fills the rest; settings it fixes by training cannot be overridden."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hmtbench.cli import app
from hmtbench.config import gather
from hmtbench.errors import HmtbenchError
from hmtbench.resolve import check_method_keys, checkpoint_settings

TINY = ["--backbone", "random:llama", "--device", "cpu"]


def invoke(*args: str):
    return CliRunner().invoke(app, [*args, *TINY])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An HMT stage-2 checkpoint trained at L = 48 with k = 4, h = 16, N = 6."""
    root = tmp_path_factory.mktemp("ckpt")
    (root / "corpus.txt").write_text(" ".join(f"w{i % 31}" for i in range(3000)))
    result = invoke("train", "--method", "hmt", "--stage", "2", "--train", "memory", "--steps", "1", "--batch-size",
                    "1", "--bptt-depth", "2", "--segment-length", "48", "--sensory-tokens", "4",
                    "--recall-hidden-dim", "16", "--recall-context", "6", "--dataset", str(root / "corpus.txt"),
                    "--output-dir", str(root / "run"), "--out", str(root / "results"))
    assert result.exit_code == 0, result.output
    return root / "run" / "stage2" / "final"


def evaluate(checkpoint: Path, out: Path, *flags: str) -> tuple[int, str, dict | None]:
    corpus = checkpoint.parent.parent.parent / "corpus.txt"
    result = invoke("eval-ppl", "--method", "hmt", "--checkpoint", str(checkpoint), "--dataset", str(corpus),
                    "--test-length", "200", "--out", str(out), *flags)
    files = sorted(out.glob("*.parquet"))
    row = pd.read_parquet(files[0]).iloc[0].to_dict() if files else None
    return result.exit_code, result.output, row


def test_what_is_not_given_comes_from_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    code, output, row = evaluate(checkpoint, tmp_path)
    assert code == 0, output
    config = json.loads(row["config"])
    assert config["segment_length"] == 48 == row["segment_length"]
    assert (row["sensory_tokens"], row["recall_hidden_dim"], row["recall_context"]) == (4, 16, 6)
    assert config["method"] == json.loads((checkpoint / "checkpoint.json").read_text())["method"]


def test_a_given_segment_length_and_recall_context_win(checkpoint: Path, tmp_path: Path) -> None:
    """L and N are not baked into the tensors: what the user typed is what runs, and what the record says."""
    code, output, row = evaluate(checkpoint, tmp_path, "--segment-length", "64", "--recall-context", "3")
    assert code == 0, output
    config = json.loads(row["config"])
    assert (row["segment_length"], row["text_tokens"], row["recall_context"]) == (64, 64 - 2 - 4, 3)
    assert (config["segment_length"], config["method"]["recall_context"]) == (64, 3)
    assert config["method"]["sensory_tokens"] == 4  # still the checkpoint's


@pytest.mark.parametrize(("flag", "value", "trained"), [("--sensory-tokens", "8", "4"),
                                                        ("--recall-hidden-dim", "32", "16")])
def test_a_setting_fixed_by_training_cannot_be_overridden(checkpoint: Path, tmp_path: Path, flag: str, value: str,
                                                          trained: str) -> None:
    code, output, row = evaluate(checkpoint, tmp_path, flag, value)
    assert code == 2 and row is None
    [line] = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"{flag} {value} conflicts with checkpoint" in line and f"trained with {trained}" in line


def test_the_same_value_as_the_checkpoint_is_fine(checkpoint: Path, tmp_path: Path) -> None:
    assert evaluate(checkpoint, tmp_path, "--sensory-tokens", "4")[0] == 0


def test_recipe_then_flags_then_set(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method:\n  name: hmt\n  sensory_tokens: 32\n  recall_context: 50\nsegment_length: 128\n")
    values = gather(str(recipe), {"segment_length": 96, "method.recall_context": None}, ["method.sensory_tokens=16"])
    assert values == {"method": {"name": "hmt", "sensory_tokens": 16, "recall_context": 50}, "segment_length": 96}
    assert gather(None, {"method": "rmt"}, None) == {"method": {"name": "rmt"}}


def test_eval_ppl_with_a_recipe_and_a_set(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    (tmp_path / "doc.txt").write_text(" ".join(f"w{i % 17}" for i in range(400)))
    recipe.write_text(f"method:\n  name: hmt\n  sensory_tokens: 4\n  recall_hidden_dim: 16\nsegment_length: 32\n"
                      f"data:\n  dataset: {tmp_path / 'doc.txt'}\n  test_length: 128\n")
    result = invoke("eval-ppl", "--recipe", str(recipe), "--set", "method.sensory_tokens=6", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(next(tmp_path.glob("*.parquet"))).iloc[0]
    assert (row["method"], row["sensory_tokens"], row["text_tokens"]) == ("hmt", 6, 32 - 2 - 6)
    assert json.loads(row["config"])["method"]["sensory_tokens"] == 6


def test_a_setting_no_chosen_method_has_is_an_error() -> None:
    check_method_keys(["plain", "hmt"], {"sensory_tokens": 4})  # HMT has it: fine
    with pytest.raises(HmtbenchError, match="'method.sensory_tokens' does not apply to --method plain,rmt"):
        check_method_keys(["plain", "rmt"], {"sensory_tokens": 4})
    with pytest.raises(HmtbenchError, match=r"did you mean 'sensory_tokens'"):
        check_method_keys(["hmt"], {"sensory_token": 4})


def test_old_checkpoint_meta_reads_as_the_new_layout() -> None:
    old = {"method": "hmt", "memory": {"segment_length": 256, "sensory_tokens": 32, "recall_hidden_dim": 1536}}
    assert checkpoint_settings(old) == ({"name": "hmt", "sensory_tokens": 32, "recall_hidden_dim": 1536}, 256)
    new = {"method": {"name": "rmt", "memory_tokens": 2}, "segment_length": 64}
    assert checkpoint_settings(new) == ({"name": "rmt", "memory_tokens": 2}, 64)


def test_recall_width_defaults_to_the_backbones_width(tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text(" ".join(f"w{i % 17}" for i in range(400)))
    result = invoke("eval-ppl", "--method", "hmt", "--dataset", str(tmp_path / "doc.txt"), "--segment-length", "32",
                    "--test-length", "128", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(next(tmp_path.glob("*.parquet"))).iloc[0]
    assert row["recall_hidden_dim"] == 64 == json.loads(row["config"])["method"]["recall_hidden_dim"]  # d = 64
    assert row["added_params"] == 2 * 64 + 2 * 64 * 64  # memory, summary prompt, wq, wk
