"""The bench's roofline numbers: FLOPs per token, linear weights, peaks by device name, shares of the bounds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmtbench.backbones.tiny import tiny_model
from hmtbench.benchmark.roofline import device_peaks, flops_per_token, linear_weights, roofline_columns


def test_linear_weights_count_every_linear_layer_once() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 6, bias=True), nn.Linear(6, 10, bias=False))
    model[2].weight = nn.Parameter(torch.zeros(10, 6, dtype=torch.bfloat16))
    elements, size = linear_weights(model)
    assert elements == 4 * 6 + 6 * 10  # biases and the embedding table are no matmul weights
    assert size == 4 * 6 * 4 + 6 * 10 * 2  # fp32 and bf16 bytes


def test_a_shared_weight_is_one_matmul_and_the_lm_head_counts() -> None:
    shared = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    shared[1].weight = shared[0].weight  # tied, as an LM head tied to another projection
    assert linear_weights(shared)[0] == 16
    model = tiny_model("llama")
    layers = sum(m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear) and "layers" in name)
    assert linear_weights(model)[0] == layers + model.lm_head.weight.numel()


def test_flops_per_token_by_step() -> None:
    assert flops_per_token(100, "eval") == 200
    assert flops_per_token(100, "train", "memory") == 400  # forward + activation gradients
    assert flops_per_token(100, "train", "lora") == 400
    assert flops_per_token(100, "train", "full") == 600  # + weight gradients
    assert flops_per_token(100, "train", "lora", recompute=True) == 600  # one more forward
    assert flops_per_token(100, "train", "lora", recompute=0.5) == 500  # half the segments run again


def test_device_peaks_by_name() -> None:
    assert device_peaks("NVIDIA H200").flops == pytest.approx(989.4e12)
    assert device_peaks("NVIDIA H200").bandwidth == pytest.approx(4.8e12)
    assert device_peaks("NVIDIA H100 80GB HBM3").bandwidth == pytest.approx(3.35e12)
    assert device_peaks("NVIDIA H100 PCIe").bandwidth == pytest.approx(2.0e12)
    assert device_peaks("Intel Xeon") is None and device_peaks(None) is None


def test_shares_of_peak_and_of_the_bandwidth_bound() -> None:
    model = nn.Sequential(nn.Linear(1000, 1000, bias=False).to(torch.bfloat16))  # 1e6 weights, 2 MB
    columns = roofline_columns(model, "NVIDIA H200", "eval", None, False, tokens_per_s=1e6, batch_size=1,
                               text_tokens_per_segment=200)
    assert columns["model_tflops"] == pytest.approx(2.0)  # 1e6 tokens/s x 2e6 FLOPs
    assert columns["peak_flops_pct"] == pytest.approx(100 * 2e12 / 989.4e12)
    bound = 200 * 4.8e12 / 2e6  # 200 tokens per read of 2 MB of weights at 4.8 TB/s
    assert columns["bandwidth_bound_pct"] == pytest.approx(100 * 1e6 / bound)
    train = roofline_columns(model, "NVIDIA H200", "train", "lora", True, 1e6, 1, 200)
    assert train["model_tflops"] == pytest.approx(6.0) and train["bandwidth_bound_pct"] is None


def test_the_backbone_share_counts_every_position_the_backbone_runs() -> None:
    model = nn.Sequential(nn.Linear(1000, 1000, bias=False).to(torch.bfloat16))
    columns = roofline_columns(model, "NVIDIA H200", "eval", None, False, tokens_per_s=1e6, batch_size=1,
                               text_tokens_per_segment=200, positions_per_segment=300)
    assert columns["backbone_flops_pct"] == pytest.approx(1.5 * columns["peak_flops_pct"])
    plain = roofline_columns(model, "NVIDIA H200", "eval", None, False, 1e6, 1, 200)
    assert plain["backbone_flops_pct"] == pytest.approx(plain["peak_flops_pct"])
    assert roofline_columns(model, None, "eval", None, False, 1e6, 1, 200)["backbone_flops_pct"] is None


def test_positions_per_segment_of_each_method(llama: nn.Module) -> None:
    """L for every step; HMT adds its summary: [T | j | T] ahead (training, CPU), a side row of L inline."""
    from tests.conftest import build_method

    settings = {"segment_length": 32, "sensory_tokens": 4, "recall_hidden_dim": 16}
    for name in ("plain", "rmt", "overlap"):
        assert build_method(name, llama, settings).positions_per_segment(1) == 32
    hmt = build_method("hmt", llama, settings)  # S = 32 - 2 - 4 = 26 text tokens, j = 13
    assert hmt.segment_tokens == 26 and hmt.summary_tokens == 13
    assert hmt.positions_per_segment(1, training=True) == 32 + 15
    assert hmt.positions_per_segment(1) == 32 + 15  # on the CPU auto summarises ahead
    inline = build_method("hmt", llama, {**settings, "summary_pass": "inline"})
    assert inline.positions_per_segment(1) == 64 and inline.positions_per_segment(1, training=True) == 47
    stage1 = build_method("hmt", llama, {**settings, "stage": 1})
    assert stage1.positions_per_segment(1) == 32
