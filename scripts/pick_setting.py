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

from hmtbench.analysis.load import deep_counts


def right_per_name(folder: Path, metric: str) -> dict[str, tuple[int, int]]:
    """{run name: (right answers, samples)} at needle depths below one, summed over the records in ``folder``."""
    counts: dict[str, tuple[int, int]] = {}
    for path in sorted(folder.glob("*.parquet")):
        record = pd.read_parquet(path).iloc[0]
        right, total = deep_counts(record["by_depth"], metric) or (0, 0)
        before = counts.get(record["name"], (0, 0))
        counts[record["name"]] = (before[0] + right, before[1] + total)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--default", required=True, help="the run name that wins a tie")
    parser.add_argument("--metric", default="exact_match", choices=["exact_match", "accuracy"])
    args = parser.parse_args(argv)
    counts = right_per_name(args.folder, args.metric)
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
