"""scripts/seed_split.py: which first-level trainings learned, by initialisation and data seed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tests.conftest import load_script

RECIPE = "recipes/smollm2-135m-passkey-hmt-span.yaml"


def write_training(folder: Path, seed: int, data_seed: int | None, segments: list[int], init_from: str | None = None,
                   recipe: str = RECIPE, created_at: str = "2026-12-07T14:00:00+00:00") -> None:
    run = f"hmt-s{seed}-span"
    log = folder / "runs" / run / "stage2" / "log.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(json.dumps({"step": 5 * (i + 1), "segments": s, "exact": s / 8}) + "\n"
                           for i, s in enumerate(segments)))
    config = {"train": {"seed": seed, "data_seed": data_seed, "init_from": init_from}}
    (folder / "results" / "train").mkdir(parents=True, exist_ok=True)
    record = {"recipe": recipe, "config": json.dumps(config), "train_seed": seed, "created_at": created_at,
              "train_tokens": 1000 * seed * len(segments), "output_dir": f"/root/ss/runs/{run}/stage2"}
    name = f"{created_at[:13]}-{seed}-{data_seed}-{bool(init_from)}.parquet"
    pd.DataFrame([record]).to_parquet(folder / "results" / "train" / name)


def test_a_training_learned_when_its_curriculum_advanced(tmp_path: Path) -> None:
    split = load_script("seed_split")
    write_training(tmp_path / "own", 2, None, [2, 2, 3, 4])  # advanced at step 15
    write_training(tmp_path / "crossed", 1, 2, [2, 2, 2, 2])
    write_training(tmp_path / "later", 3, None, [8, 16], init_from="runs/hmt-s3-span/stage2/final")  # not a first level
    write_training(tmp_path / "other", 4, None, [2, 3], recipe="recipes/other.yaml")
    rows = split.training_rows([tmp_path], RECIPE)
    assert [(r["init"], r["data"], r["advanced_at"], r["step"], r["segments"]) for r in rows] == [
        (2, 2, 15, 20, 4), (1, 2, None, 20, 2)]
    assert split.summary(rows) == "learned: 1 of 1 with their own data seed, 0 of 1 with another seed's data"
    table = split.markdown(rows).splitlines()
    assert table[2].startswith("| 2 | 2 | 15 | 20 | 4 | 0.50 | 8,000 |")
    assert table[3].startswith("| 1 | 2 | never | 20 | 2 | 0.25 | 4,000 |")


def test_a_resumed_run_is_one_row_and_a_repeated_pair_one_cell(tmp_path: Path) -> None:
    """A run trained in two chunks (two records, one log) is its last chunk's row; the same seed pair trained again in
    another work folder is a second row but one cell of the count, learned if either run advanced."""
    split = load_script("seed_split")
    write_training(tmp_path / "protocol", 2, None, [2, 2], created_at="2026-12-06T04:00:00+00:00")
    write_training(tmp_path / "protocol", 2, None, [2, 2, 3], created_at="2026-12-06T05:00:00+00:00")
    write_training(tmp_path / "again", 2, 2, [2, 2, 2], created_at="2026-12-07T14:00:00+00:00")  # stopped earlier
    write_training(tmp_path / "again", 4, 4, [2, 2], created_at="2026-12-07T14:00:00+00:00")
    rows = split.training_rows([tmp_path], RECIPE)
    assert [(r["init"], r["data"], r["tokens"], r["advanced_at"]) for r in rows] == [
        (2, 2, 6000, 15), (2, 2, 6000, None), (4, 4, 8000, None)]
    assert split.summary(rows) == "learned: 1 of 2 with their own data seed, 0 of 0 with another seed's data"
