"""Training curves (`hmtbench plot --figure training-curve`) from the log.jsonl of run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hmtbench.analysis.curves import find_curves, level_starts, trailing_mean
from hmtbench.cli import app

RECIPE = "recipes/smollm2-135m-passkey-rmt-official.yaml"


def write_log(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "log.jsonl").open("a") as log:
        for row in rows:
            log.write(json.dumps({"recipe": RECIPE, **row}) + "\n")


def step(n: int, tokens: int, exact: float, segments: int = 2) -> dict:
    return {"step": n, "loss": 1.0 / n, "exact_earlier": exact, "segments": segments, "train_tokens": tokens}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """An RMT run of two levels, the first resumed once (steps 20-30 logged again), and an HMT run named only by its
    checkpoint."""
    write_log(tmp_path / "rmt-official" / "level1", [step(10, 1000, 0.0), step(20, 2000, 0.25), step(30, 3000, 0.5)])
    write_log(tmp_path / "rmt-official" / "level1", [step(30, 3000, 0.75), step(40, 4000, 1.0)])
    write_log(tmp_path / "rmt-official" / "level2", [step(10, 5500, 0.5, 3)])
    (tmp_path / "rmt-official" / "config.yaml").write_text("method:\n  name: rmt\n")
    write_log(tmp_path / "other" / "hmt-s1" / "stage2", [step(5, 800, 1.0)])
    checkpoint = tmp_path / "other" / "hmt-s1" / "stage2" / "final" / "checkpoint.json"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_text(json.dumps({"method": {"name": "hmt"}}))
    return tmp_path


def test_a_runs_stages_and_chunks_join_into_one_curve_ordered_by_tokens(runs: Path) -> None:
    rmt, hmt = sorted(find_curves([runs]), key=lambda c: c.name, reverse=True)
    assert (rmt.name, rmt.method, rmt.recipe) == ("rmt-official", "rmt", RECIPE)
    assert rmt.tokens.tolist() == [1000, 2000, 3000, 4000, 5500]
    assert rmt.values.tolist() == [0.0, 0.25, 0.75, 1.0, 0.5]  # the resumed chunk's step 30 kept
    assert level_starts(rmt) == [(5500.0, 3)]
    assert (hmt.name, hmt.method) == ("other/hmt-s1", "hmt")
    (loss,) = [c for c in find_curves([runs / "rmt-official"], "loss")]
    assert loss.name == "rmt-official" and loss.values[0] == pytest.approx(0.1)


def test_trailing_mean_skips_missing_values() -> None:
    values = np.array([1.0, np.nan, 3.0, 5.0, 7.0])
    assert trailing_mean(values, 2).tolist()[1:] == [1.0, 3.0, 4.0, 6.0]
    assert trailing_mean(values, 3).tolist() == [1.0, 1.0, 2.0, 4.0, 5.0]


def test_cli_draws_the_curves_and_names_what_is_missing(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    drawn = CliRunner().invoke(app, ["plot", str(runs), "--figure", "training-curve", "--out", str(out)])
    assert drawn.exit_code == 0, drawn.output
    assert (out / "training-curve.png").stat().st_size > 10_000 and (out / "training-curve.pdf").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = CliRunner().invoke(app, ["plot", str(empty), "--figure", "training-curve"])
    assert refused.exit_code == 2 and "needs the log.jsonl of training runs" in refused.stderr
    unknown = CliRunner().invoke(app, ["plot", str(runs), "--figure", "training-curve", "--metric", "exact_eerlier"])
    assert unknown.exit_code == 2 and "did you mean 'exact_earlier'" in unknown.stderr
