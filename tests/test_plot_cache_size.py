"""The cache-size figure of issue 32 is two existing figures of the same eval-qa records: accuracy and peak memory
against context length, a line per recall cache size N."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from hmtbench.analysis import plot
from hmtbench.analysis.load import load_results
from tests.test_compare import write_run

matplotlib.use("Agg")

LENGTHS = [4096, 16384, 65536, 262144]
ACCURACY = {100: [1.0, 1.0, 0.25, 0.05], 1000: [1.0, 1.0, 0.98, 0.49], 6000: [1.0, 1.0, 0.99, 0.98]}
PEAK_MB = {100: [900.0, 1000.0, 1500.0, 1500.0], 1000: [900.0, 1100.0, 4000.0, 5000.0],
           6000: [900.0, 1200.0, 6000.0, 23000.0]}


@pytest.mark.parametrize(("figure", "values"), [("accuracy-vs-length", ACCURACY), ("memory-vs-length", PEAK_MB)])
def test_accuracy_and_peak_memory_against_length_draw_a_line_per_cache_size(tmp_path: Path, figure: str,
                                                                            values: dict) -> None:
    for n in ACCURACY:
        for i, length in enumerate(LENGTHS):
            write_run(tmp_path, "hmt", command="eval-qa", protocol="qa", task="passkey", context_length=length,
                      test_length=None, docs=100, recall_context=n, accuracy=ACCURACY[n][i],
                      peak_gpu_mem_mb=PEAK_MB[n][i],
                      config=json.dumps({"method": {"name": "hmt", "recall_context": n}}))
    (ax,) = plot.figure(load_results([tmp_path], warn=lambda message: None), figure).axes
    drawn = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    assert drawn == {f"HMT (recall of {n})": values[n] for n in values}
