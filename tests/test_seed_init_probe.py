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
