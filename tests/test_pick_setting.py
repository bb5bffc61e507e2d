"""scripts/pick_setting.py: the rule that picks a setting on validation records, fixed before they are read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import load_script

pick = load_script("pick_setting")


def write(folder: Path, stamp: str, name: str, checkpoint: str, samples: str, deep_right: list[int],
          near_right: int = 0) -> None:
    """One record: 25 samples at each depth 0-0.75 (``deep_right`` exact at each) and 25 at depth 1."""
    by_depth = [{"depth": d, "n": 25, "exact_match": right / 25, "accuracy": right / 25}
                for d, right in zip((0.0, 0.25, 0.5, 0.75), deep_right, strict=True)]
    by_depth.append({"depth": 1.0, "n": 25, "exact_match": near_right / 25, "accuracy": near_right / 25})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"name": name, "checkpoint_sha256": checkpoint, "data_sha256": samples, "by_depth": by_depth}]
                 ).to_parquet(folder / f"{stamp}-eval-qa-{name}.parquet")


def choose(folder: Path, capsys: pytest.CaptureFixture, default: str = "soft-100") -> tuple[str, str]:
    assert pick.main([str(folder), "--default", default]) == 0
    printed = capsys.readouterr()
    return printed.out.strip(), printed.err


def test_the_most_deep_answers_over_seeds_win_and_depth_one_does_not_count(tmp_path: Path, capsys) -> None:
    for seed, soft, hard in (("s1", [0, 0, 25, 25], [25, 25, 25, 25]), ("s2", [0, 0, 0, 25], [10, 10, 10, 10])):
        write(tmp_path, f"1{seed}", "soft-100", seed, "64k", soft, near_right=25)
        write(tmp_path, f"2{seed}", "hard-6000", seed, "64k", hard, near_right=0)
    chosen, counts = choose(tmp_path, capsys)
    assert chosen == "hard-6000"  # 140 of 200 deep answers against 75; soft's 50 answers at depth 1 left out
    assert "hard-6000: 140/200" in counts and "soft-100: 75/200" in counts


def test_a_tie_goes_to_the_default_else_to_the_first_name(tmp_path: Path, capsys) -> None:
    for name in ("soft-6000", "hard-6000", "soft-100"):
        write(tmp_path, name, name, "s1", "64k", [25, 25, 25, 25] if name != "soft-100" else [0, 0, 0, 25])
    chosen, said = choose(tmp_path, capsys)
    assert chosen == "hard-6000"
    assert "tie: hard-6000, soft-6000 answer alike; hard-6000 is the first in sorted order (the default is not " \
           "among them)" in said
    chosen, said = choose(tmp_path, capsys, default="soft-6000")
    assert chosen == "soft-6000" and "soft-6000 is the default" in said


def test_the_lengths_the_pick_has_seen_are_said(tmp_path: Path, capsys) -> None:
    write(tmp_path, "1", "soft-100", "s1", "64k", [0, 0, 0, 25])
    write(tmp_path, "2", "hard-1000", "s1", "64k", [25, 25, 25, 25])
    for path in tmp_path.glob("*.parquet"):
        pd.read_parquet(path).assign(context_length=65536).to_parquet(path)
    chosen, said = choose(tmp_path, capsys)
    assert chosen == "hard-1000" and "tie" not in said
    assert "judged at context lengths 65536 only" in said


def test_a_repeat_counts_once_and_an_incomplete_grid_is_refused(tmp_path: Path, capsys) -> None:
    write(tmp_path, "1", "soft-100", "s1", "64k", [0, 0, 0, 25])
    write(tmp_path, "2", "soft-100", "s1", "64k", [0, 0, 0, 25])  # the same evaluation again
    write(tmp_path, "3", "hard-6000", "s1", "64k", [0, 0, 10, 10])
    chosen, counts = choose(tmp_path, capsys)
    assert chosen == "soft-100" and "soft-100: 25/100" in counts  # not 50/200
    write(tmp_path, "4", "soft-100", "s2", "64k", [25, 25, 25, 25])  # seed 2 for one name only
    with pytest.raises(SystemExit, match="hard-6000 lacks 1 of the 2 cells"):
        pick.main([str(tmp_path), "--default", "soft-100"])
