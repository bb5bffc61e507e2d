"""The result record: one schema, one parquet file per run."""

from hmtbench.results.schema import COLUMNS, METRIC_DIRECTION, make_record, read_results, write_record

__all__ = ["COLUMNS", "METRIC_DIRECTION", "make_record", "read_results", "write_record"]
