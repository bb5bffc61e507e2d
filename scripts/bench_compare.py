"""Time `hmtbench compare` step by step: load, table every metric, render each format.

    python scripts/bench_compare.py results/            # the committed records
    python scripts/bench_compare.py results/h100-protocol --format table

Prints seconds per step and the tables' sizes (rows, rendered characters), so a change to compare or its
rendering can be timed on the same records before and after.
"""

from __future__ import annotations

import argparse
import time

from hmtbench.analysis.compare import compare, metrics_for
from hmtbench.analysis.formats import FORMATS, render
from hmtbench.analysis.load import load_results, select


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["results"])
    parser.add_argument("--format", default=",".join(FORMATS), help="comma-separated (default: all)")
    args = parser.parse_args()
    start = time.perf_counter()
    frame = select(load_results(args.paths, warn=lambda message: None), {})
    print(f"load     {time.perf_counter() - start:7.2f} s  {len(frame)} runs")
    start = time.perf_counter()
    tables = compare(frame, metrics_for(frame, None))
    rows = sum(len(table.rows) for table in tables)
    print(f"compare  {time.perf_counter() - start:7.2f} s  {len(tables)} tables, {rows} rows")
    for fmt in args.format.split(","):
        start = time.perf_counter()
        try:
            size = f"{len(render(tables, fmt)):,} characters"
        except (TypeError, ValueError) as error:  # a format that cannot hold some value
            size = f"failed: {error}"
        print(f"{fmt:<8} {time.perf_counter() - start:7.2f} s  {size}")


if __name__ == "__main__":
    main()
