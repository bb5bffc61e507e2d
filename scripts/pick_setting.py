"""Pick one setting from validation records by a rule fixed before they are read: the run name with the most right
answers at depth below one, summed over every record (length) of that name; a tie goes to the default, else to the
first name in sorted order.

    python scripts/pick_setting.py results/cpu-bm25-passkey/validation --default bm25-k3-q32 --metric exact_match

Prints each name's count to stderr and the chosen name to stdout (for a script to pass on to the test run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def deep_counts(folder: Path, metric: str) -> dict[str, tuple[int, int]]:
    """{run name: (right answers, samples)} over the needle depths below one of every record in ``folder``."""
    counts: dict[str, tuple[int, int]] = {}
    for path in sorted(folder.glob("*.parquet")):
        record = pd.read_parquet(path).iloc[0]
        deep = [d for d in record["by_depth"] if d["depth"] < 1]
        right, total = counts.get(record["name"], (0, 0))
        counts[record["name"]] = (right + round(sum(d[metric] * d["n"] for d in deep)),
                                  total + sum(int(d["n"]) for d in deep))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--default", required=True, help="the run name that wins a tie")
    parser.add_argument("--metric", default="exact_match", choices=["exact_match", "accuracy"])
    args = parser.parse_args(argv)
    counts = deep_counts(args.folder, args.metric)
    if not counts:
        sys.exit(f"no records in {args.folder}")
    for name, (right, total) in sorted(counts.items()):
        print(f"{name}: {right}/{total}", file=sys.stderr)
    best = max(right / total for right, total in counts.values())
    winners = sorted(name for name, (right, total) in counts.items() if right / total == best)
    print(args.default if args.default in winners else winners[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
