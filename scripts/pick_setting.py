"""Pick one setting from validation records by a rule fixed before they are read: the run name with the most right
answers at depth below one, summed over every record (length, training seed) of that name; a tie goes to the
default, else to the first name in sorted order.

Every name must have been run on the same cells (checkpoint and samples): a name missing one would be judged on
fewer seeds or lengths, so an incomplete grid is refused with the cells it lacks. A record repeated on the same cell
(the same evaluation run again) counts once: the first written.

    python scripts/pick_setting.py results/cpu-bm25-passkey/validation --default bm25-k3-q32 --metric exact_match

Prints each name's count, any tie and how it was broken, and the context lengths the records were read at to
stderr, and the chosen name to stdout (for a script to pass on to the test run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hmtbench.analysis.columns import deep_counts


def read_records(folder: Path) -> list[pd.Series]:
    """Each record of ``folder``, the first written first (run ids start with their time)."""
    return [pd.read_parquet(path).iloc[0] for path in sorted(folder.glob("*.parquet"))]


def lengths_judged(records: list[pd.Series]) -> list[int]:
    """The context lengths the records were read at: the only ones the pick has seen."""
    found = {record.get("context_length") for record in records}
    return sorted(int(n) for n in found if n is not None and not pd.isna(n))


def right_per_name(records: list[pd.Series], folder: Path, metric: str) -> dict[str, tuple[int, int]]:
    """{run name: (right answers, samples)} at needle depths below one, summed over the cells of ``folder``'s
    records; refused (SystemExit) when the names were not all run on the same cells."""
    cells: dict[str, dict[tuple[str, str], tuple[int, int]]] = {}
    for record in records:
        cell = (str(record.get("checkpoint_sha256")), str(record["data_sha256"]))
        cells.setdefault(record["name"], {}).setdefault(cell, deep_counts(record["by_depth"], metric) or (0, 0))
    everywhere = set().union(*(set(own) for own in cells.values())) if cells else set()
    lacking = {name: len(everywhere - set(own)) for name, own in cells.items() if set(own) != everywhere}
    if lacking:
        sys.exit(f"the grid in {folder} is incomplete: " + ", ".join(
            f"{name} lacks {n} of the {len(everywhere)} cells (checkpoint, samples)" for name, n in
            sorted(lacking.items())) + "; run every setting on every cell before picking")
    return {name: (sum(r for r, _ in own.values()), sum(t for _, t in own.values())) for name, own in cells.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--default", required=True, help="the run name that wins a tie")
    parser.add_argument("--metric", default="exact_match", choices=["exact_match", "accuracy"])
    args = parser.parse_args(argv)
    records = read_records(args.folder)
    counts = right_per_name(records, args.folder, args.metric)
    if not counts:
        sys.exit(f"no records in {args.folder}")
    for name, (right, total) in sorted(counts.items()):
        print(f"{name}: {right}/{total}", file=sys.stderr)
    best = max(right / total for right, total in counts.values())
    winners = sorted(name for name, (right, total) in counts.items() if right / total == best)
    chosen = args.default if args.default in winners else winners[0]
    if len(winners) > 1:  # a reader of the choice must know it was a tie, and broken how
        broken = ("the default" if chosen == args.default
                  else "the first in sorted order (the default is not among them)")
        print(f"tie: {', '.join(winners)} answer alike; {chosen} is {broken}", file=sys.stderr)
    lengths = lengths_judged(records)
    if lengths:
        print(f"judged at context lengths {', '.join(map(str, lengths))} only: settings that differ only at other "
              "lengths (a cache that holds every segment here, say) look alike", file=sys.stderr)
    print(chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
