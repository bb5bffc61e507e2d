"""`hmtbench bench`: speed and memory of plain, full, RMT and HMT per context length and batch size.

``measure`` times one workload (an evaluation pass over a batch of documents, or one training
step); ``run`` plans the cases, builds each method, and writes one result row per measurement.
"""

from hmtbench.benchmark.run import BenchConfig, describe_row, parse_counts, plan_cases, run_bench

__all__ = ["BenchConfig", "describe_row", "parse_counts", "plan_cases", "run_bench"]
