"""Training losses through the CLI: an anchor no code of ours sets (ln V), and pinned HMT losses.

Driven by ``hmtbench train`` flags (CliRunner), which stay stable while the Python config API moves.
Every setting a loss depends on is a flag here, so a changed default does not move these numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hmtbench.cli import app

TEXT = "the cat sat on the mat. the dog ate the bone. " * 120
VOCAB = 256 + 3  # the tiny models' byte-level vocabulary: 256 bytes, <pad>, <s>, </s>

# An untrained model with near-zero logits z predicts near-uniformly: its cross-entropy is ln V + (lse(z) - ln V) - z_y
# ~ ln V + sigma^2 / 2 - mean z_y. HF's initialisation (normal, std 0.02) with hidden size 64 gives logits of
# sigma ~ 0.02 * sqrt(64) = 0.16 across the vocabulary (measured: 0.158), so sigma^2 / 2 ~ 0.013 and the mean of the
# target logits, even fully correlated over the scored tokens, stays within ~1 sigma: 0.013 + 0.16 < 0.2.
# What the anchor catches lies far outside: a loss in bits (+2.5), a sum instead of a mean (x24), a mean over all
# D segments' positions while the last is scored (/3), unscored positions (memory, padding) in the count.
ANCHOR_TOLERANCE = 0.2

# Measured with this file's flags (seed 0, CPU, fp32) by this file's first run (torch 2.13 CPU): stage 1 (2 steps)
# then stage 2 (4 steps) from stage 1's tensors, with a fresh summary prompt and recall. LoRA's: measured again once
# its A matrices were drawn from the seed (build_method), not from the generator's state after loading.
GOLDEN_HMT = {
    "lora": {"stage1": [5.646639, 5.487916], "stage2": [5.384021, 5.276881, 5.234946, 5.209946]},
    "memory": {"stage1": [5.646639, 5.594734], "stage2": [5.598486, 5.554316, 5.567498, 5.554778]},
}


def train(tmp_path: Path, method: str, mode: str, steps: int, *extra: str) -> Path:
    """One ``hmtbench train`` run on the tiny random Llama; returns its run folder."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    run = tmp_path / "run"
    args = [
        "train", "--backbone", "random:llama", "--method", method, "--train", mode, "--dataset", str(corpus),
        "--segment-length", "24", "--bptt-depth", "3", "--batch-size", "2", "--grad-accum", "1",
        "--set", "train.loss_on=last", "--lr", "0.01", "--set", "train.warmup_steps=0", "--set", "train.lr_decay=0.9",
        "--set", "train.decay_every=100", "--set", "train.grad_clip=1.0", "--set", "lora.r=8", "--set", "lora.alpha=32",
        "--set", "lora.dropout=0.1", "--seed", "0", "--steps", str(steps),
        "--set", "train.log_every=1", "--set", f"train.checkpoint_every={steps}", "--device", "cpu",
        "--output-dir", str(run), "--out", str(tmp_path / "results"), *extra,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return run


def logged_losses(folder: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("method", "extra"), [("rmt", ()), ("hmt", ("--stage", "1", "--sensory-tokens", "4"))])
def test_first_loss_of_an_untrained_model_is_ln_vocab(tmp_path: Path, method: str, extra: tuple[str, ...]) -> None:
    run = train(tmp_path, method, "memory", 1, *extra)
    (log,) = run.glob("*/log.jsonl")
    first = logged_losses(log.parent)[0]
    assert abs(first - math.log(VOCAB)) < ANCHOR_TOLERANCE


@pytest.mark.parametrize("mode", ["lora", "memory"])
def test_hmt_two_stage_losses_are_pinned(tmp_path: Path, mode: str) -> None:
    run = train(tmp_path, "hmt", mode, 4, "--set", "train.stages=1,2", "--stage1-steps", "2", "--sensory-tokens", "4",
                "--recall-context", "5", "--recall-hidden-dim", "16")
    for stage, expected in GOLDEN_HMT[mode].items():
        assert logged_losses(run / stage) == pytest.approx(expected, abs=1e-4), stage
    assert logged_losses(run / "stage2")[-1] < logged_losses(run / "stage1")[0]  # it learns
