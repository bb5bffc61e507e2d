"""Exact answers by where the key sat: segments the memory had read before it, and segments between it and the
question's, from eval-qa's predictions files.

    python scripts/needle_position.py results/h100-armt/passkey-armt results/h100-armt-seeds/passkey-armt-s{2,3} \
        --text-tokens 246

A recurrent memory that fails on keys far from the question loses what it wrote; one that fails on keys written
late (many segments before them) no longer writes, or writes into a state its training never reached. A table over
context length and depth tells the two apart only with both counts beside each other. Folders are pooled (several
training seeds of one recipe on the same samples); ``--text-tokens`` is the method's text tokens per segment (ARMT
at L 256 with m 10: 246), as the answer layout cut the prompt (segments end at the question's).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from hmtbench.training.answers import segments_back


def needle_rows(folders: list[Path], text_tokens: int) -> list[dict]:
    """One row per (context length, depth): the segments before the key and after it (min-max over samples), the
    exact answers and the samples, pooled over ``folders``."""
    cells: dict[tuple[int, float], list[tuple[int, int, float]]] = defaultdict(list)
    for folder in folders:
        for path in sorted(folder.glob("*.predictions.jsonl")):
            for line in path.read_text().splitlines():
                sample = json.loads(line)
                meta, length = sample["meta"], sample["meta"]["prompt_tokens"]
                key = meta["needle_ends"][0] - 1 if "needle_ends" in meta else meta["needle_starts"][0]  # older
                after = segments_back(length, key, text_tokens)
                before = segments_back(length, 0, text_tokens) - after
                cells[(meta["prompt_tokens"], meta["depth"])].append((before, after, sample["exact_match"]))
    rows = []
    for (length, depth), samples in sorted(cells.items()):
        befores, afters = [s[0] for s in samples], [s[1] for s in samples]
        rows.append({"context": length, "depth": depth, "before": (min(befores), max(befores)),
                     "after": (min(afters), max(afters)), "exact": int(sum(s[2] for s in samples)),
                     "samples": len(samples)})
    return rows


def span(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}–{bounds[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="eval-qa output folders (their predictions files)")
    parser.add_argument("--text-tokens", type=int, required=True, help="the method's text tokens per segment")
    args = parser.parse_args()
    print("| context | depth | segments before the key | segments after it | exact |")
    print("| --: | --: | --: | --: | --: |")
    for row in needle_rows(args.folders, args.text_tokens):
        print(f"| {row['context']:,} | {row['depth']} | {span(row['before'])} | {span(row['after'])} | "
              f"{row['exact']}/{row['samples']} |")


if __name__ == "__main__":
    main()
