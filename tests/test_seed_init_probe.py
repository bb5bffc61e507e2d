"""scripts/seed_init_probe.py: the span writer's weights and the first gradient of a seed's initialisation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tests.conftest import load_script

RECIPE = "recipes/smollm2-135m-passkey-rmt-span-truncated.yaml"


class DigitTokenizer:
    """One token per character: the key's digits are found wherever they stand in the needle."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


def test_the_key_is_found_inside_its_needle_not_before_it() -> None:
    probe = load_script("seed_init_probe")
    prompt = [ord(c) for c in "12345 filler. The pass key is 12345. Remember it."]
    needle = prompt.index(ord("T"))
    sample = SimpleNamespace(prompt_ids=prompt, meta={"values": ["12345"], "needle_starts": [needle],
                                                      "needle_ends": [len(prompt)]})
    start, end = probe.key_positions(sample, DigitTokenizer())
    assert prompt[start:end] == [ord(c) for c in "12345"] and start > needle


@pytest.mark.slow
def test_a_seeds_probe_is_consistent_and_repeats_exactly() -> None:
    probe = load_script("seed_init_probe")
    first = probe.probe_seed(RECIPE, seed=1, data_seed=2, rows=4, backbone_spec="random:llama")
    chunked = probe.probe_seed(RECIPE, seed=1, data_seed=2, rows=4, backbone_spec="random:llama", chunk=2)
    again = probe.probe_seed(RECIPE, seed=1, data_seed=2, rows=4, backbone_spec="random:llama")
    other = probe.probe_seed(RECIPE, seed=2, data_seed=2, rows=4, backbone_spec="random:llama")
    assert first == again  # a seed's initialisation and data are all the probe reads
    # chunks sum to the batch's gradient (LoRA's own gradient aside: its dropout masks are drawn per chunk)
    for key in ("loss", "stay", "key_mass", "entropy", "grad_norm_writer"):
        assert math.isclose(chunked[key], first[key], rel_tol=1e-4), key
    assert first["rows_with_earlier_key"] > 0
    assert 0 < first["stay"] < 1 and 0 < first["key_mass"] < 1 - first["stay"]
    assert 0 < first["entropy"] <= first["log_positions"] + 1e-6
    # RMT with the span write and LoRA trains the writer and LoRA only: their norms make up the whole
    assert math.isclose(first["grad_norm"] ** 2, first["grad_norm_writer"] ** 2 + first["grad_norm_lora"] ** 2,
                        rel_tol=1e-4)
    # the same data, another initialisation: the loss and the writer differ, the samples do not
    assert other["rows_with_earlier_key"] == first["rows_with_earlier_key"]
    assert other["stay"] != first["stay"] and other["loss"] != first["loss"]


def test_the_table_tests_learned_seeds_against_the_rest(tmp_path) -> None:
    """Perfectly separated groups of 5 and 3 give the exact test's smallest p, 2 / C(8, 3) = 0.036; ties none."""
    import pandas as pd

    probe = load_script("seed_init_probe")
    seeds = list(range(1, 9))
    runs = pd.DataFrame({"seed": seeds, "loss": [float(s) for s in seeds], "stay": 0.01, "key_mass": 0.1,
                         "uniform_key_mass": 0.1, "entropy": [5.0 - s / 10 for s in seeds], "log_positions": 5.0,
                         "grad_norm": [1.0, 3, 2, 5, 4, 7, 6, 8], "grad_norm_writer": 1.0, "grad_norm_lora": 1.0,
                         "git_commit": "abc", "git_dirty": False})
    runs.to_csv(tmp_path / "probe.csv", index=False)
    text = probe.table(tmp_path / "probe.csv", {1, 2, 3, 4, 5})
    assert "| 6 | no | 6.000 | 0.0100 | 1.00 | 4.400 |" in text
    assert "learned (n = 5) against not (n = 3): loss p = 0.036," in text
    assert "entropy p = 0.036" in text and "key mass / uniform p = 1," in text
