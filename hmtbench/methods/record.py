"""A column of the result record: the shared schema (``hmtbench.results.schema``) is a list of them, and a method
adds its own in ``SegmentMethod.record_schema``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype: string, Int64, Float64, boolean, object (lists / JSON)
    doc: str
