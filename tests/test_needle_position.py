"""scripts/needle_position.py: each sample's key placed in segments of the answer layout, folders pooled."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import load_script


def write_predictions(folder: Path, samples: list[dict]) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"exact_match": exact, "meta": {"prompt_tokens": 100, "depth": depth, **where}})
             for depth, exact, where in samples]
    (folder / "run.predictions.jsonl").write_text("\n".join(lines) + "\n")


def test_keys_are_counted_in_segments_before_and_after_them(tmp_path: Path) -> None:
    """100 prompt tokens, 10 text tokens a segment, 12 positions of answer room: the question's segment ends at
    position 111, so the prompt's first token is (111 - 0) // 10 = 11 segments back. A key ending at position 5 is
    10 back (1 segment before it); an older record's key starting at 95 is 1 back (10 before it)."""
    write_predictions(tmp_path / "seed1", [(0.0, 1.0, {"needle_ends": [6]}), (1.0, 0.0, {"needle_starts": [95]})])
    write_predictions(tmp_path / "seed2", [(0.0, 0.0, {"needle_ends": [6]}), (1.0, 1.0, {"needle_starts": [95]})])
    rows = load_script("needle_position").needle_rows([tmp_path / "seed1", tmp_path / "seed2"], text_tokens=10)
    assert rows == [
        {"context": 100, "depth": 0.0, "before": (1, 1), "after": (10, 10), "exact": 1, "samples": 2},
        {"context": 100, "depth": 1.0, "before": (10, 10), "after": (1, 1), "exact": 1, "samples": 2}]
