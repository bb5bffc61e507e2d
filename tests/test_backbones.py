"""Backbone loading: published random: shapes, their parameter counts, and hub ids failing fast without a network."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from hmtbench.backbones import load_backbone, resolve_backbone
from hmtbench.backbones.hub import reachable
from hmtbench.backbones.random_shapes import build_shape_model, shape_config
from hmtbench.backbones.shapes import SHAPES
from hmtbench.backbones.tiny import BOS, EOS, PAD, byte_tokenizer, tiny_model
from hmtbench.errors import HmtbenchError

# A few layers of narrow width: the published vocabulary and every other field stay, the build takes milliseconds.
NARROW = {"num_hidden_layers": 1, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
          "num_key_value_heads": 2}


def test_shapes_have_the_published_parameter_counts() -> None:
    # Exact counts from the layer formula, e.g. Llama-2-7B: 32 x (4 x 4096^2 + 3 x 4096 x 11008 + 2 x 4096)
    # + 4096 + 2 x 32000 x 4096 = 6,738,415,616; the meta device makes a 14B model cost no memory.
    assert SHAPES["llama-7b"].params == 6_738_415_616
    assert SHAPES["opt-2.7b"].params == 2_651_596_800
    assert SHAPES["openllama-3b"].params == 3_426_473_600
    assert SHAPES["qwen2.5-14b"].params == 14_770_033_664
    for name, shape in SHAPES.items():
        model = build_shape_model(name, device="meta", dtype=torch.bfloat16)
        assert sum(p.numel() for p in model.parameters()) == shape.params, name
        assert next(model.parameters()).dtype == torch.bfloat16


def test_published_fields_reach_the_config() -> None:
    for name, shape in SHAPES.items():
        config = shape_config(name)
        for key, value in shape.fields.items():
            assert _config_value(config, key) == value, (name, key)
        assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == (PAD, BOS, EOS)


def _config_value(config, key: str):
    """A published field as the installed transformers keeps it (rope fields moved into rope_parameters in v5)."""
    rope = getattr(config, "rope_parameters", None) or {}
    if key == "rope_theta":
        return rope.get("rope_theta", getattr(config, "rope_theta", None))
    if key == "rope_scaling":
        scaling = rope or config.rope_scaling
        return {k: scaling[k] for k in ("rope_type", "factor", "low_freq_factor", "high_freq_factor",
                                        "original_max_position_embeddings")}
    if key == "sliding_window" and not config.use_sliding_window:
        return config.to_dict()["max_position_embeddings"]  # v5 drops the unused window: nothing to compare
    return getattr(config, key)


def test_random_shape_is_built_in_the_dtype_and_deterministic_in_the_seed() -> None:
    first = build_shape_model("qwen2.5-7b", device="cpu", dtype=torch.bfloat16, overrides=NARROW)
    again = build_shape_model("qwen2.5-7b", device="cpu", dtype=torch.bfloat16, overrides=NARROW)
    other = build_shape_model("qwen2.5-7b", device="cpu", dtype=torch.bfloat16, overrides=NARROW, seed=1)
    weights, same, different = (dict(model.named_parameters()) for model in (first, again, other))
    embedding = "model.embed_tokens.weight"
    assert {p.dtype for p in weights.values()} == {torch.bfloat16}
    assert weights[embedding].shape == (152064, 64)  # the published vocabulary stays
    assert all(torch.equal(p, same[n]) for n, p in weights.items())
    assert not torch.equal(weights[embedding], different[embedding])
    assert torch.all(weights["model.norm.weight"] == 1)
    assert torch.all(weights["model.layers.0.self_attn.q_proj.bias"] == 0)
    assert 0.015 < weights[embedding].float().std() < 0.025


def test_load_backbone_random_shape_runs_on_byte_tokens() -> None:
    backbone = load_backbone("random:opt-350m", device="cpu", shape_overrides={"num_hidden_layers": 1})
    resolved = backbone.resolved
    assert resolved.random_weights and resolved.kind == "shape"
    assert resolved.identity == resolved.description == "random:opt-350m[num_hidden_layers=1]"
    assert resolve_backbone("random:opt-350m").identity == "random:opt-350m"
    assert not any(p.requires_grad for p in backbone.model.parameters())
    ids = backbone.tokenizer("memory tokens", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = backbone.model(ids).logits
    assert logits.shape == (1, ids.shape[1], 50272) and torch.isfinite(logits).all()


def test_tiny_random_backbones_are_unchanged() -> None:
    resolved = resolve_backbone("random:llama")
    assert (resolved.kind, resolved.source, resolved.description, resolved.identity) == (
        "random", "llama", "random:llama", "random:llama")
    assert resolved.random_weights and not resolve_backbone("facebook/opt-2.7b").random_weights
    backbone = load_backbone("random:llama", device="cpu")
    assert backbone.parameter_count == sum(p.numel() for p in tiny_model("llama").parameters())


def test_unknown_names_and_overrides_fail_in_one_line() -> None:
    with pytest.raises(HmtbenchError, match=r"did you mean 'random:llama-7b'\?\); choose random:llama, .*qwen2.5-14b"):
        resolve_backbone("random:llama7b")
    with pytest.raises(HmtbenchError, match="did you mean 'num_hidden_layers'"):
        load_backbone("random:llama-7b", device="meta", shape_overrides={"num_hiden_layers": 2})
    with pytest.raises(HmtbenchError, match="published shapes"):
        resolve_backbone("random:llama", shape_overrides={"num_hidden_layers": 1})
    with pytest.raises(HmtbenchError, match="random: backbones of a published shape"):
        resolve_backbone("facebook/opt-2.7b", shape_overrides={"num_hidden_layers": 1})


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """HF_HUB_OFFLINE unset, as on a user's machine (conftest sets it, and huggingface_hub read it at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_hub_id_without_network_fails_in_seconds_saying_how_to_work_offline(online: pytest.MonkeyPatch) -> None:
    start = time.perf_counter()
    with pytest.raises(HmtbenchError) as caught:
        load_backbone("opt-2.7b", device="cpu")
    assert time.perf_counter() - start < 10
    message = str(caught.value)
    assert "\n" not in message and "could not reach the Hugging Face Hub" in message
    assert "HF_HUB_OFFLINE=1" in message and "random:opt-2.7b" in message


def test_hub_id_offline_says_how_to_get_the_model() -> None:
    with pytest.raises(HmtbenchError) as caught:
        load_backbone("nobody/no-such-model", device="cpu")
    message = str(caught.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message
    for way in ("hf download nobody/no-such-model", "local model folder", ".gguf", "smollm2-135m", "gemma3-270m"):
        assert way in message


def test_unreachable_hub_loads_from_the_cache_without_retrying(online: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    snapshot = tmp_path / "models--hmtbench--tiny-llama" / "snapshots" / ("0" * 40)
    tiny_model("llama").save_pretrained(snapshot)
    byte_tokenizer().save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    online.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    port = _closed_port()
    online.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    lookups: list[object] = []  # every host name resolved: transformers may use its own copy of the endpoint
    connects: list[object] = []
    getaddrinfo, connect = socket.getaddrinfo, socket.socket.connect
    online.setattr(socket, "getaddrinfo", lambda host, *rest: (lookups.append(host), getaddrinfo(host, *rest))[1])
    online.setattr(socket.socket, "connect", lambda sock, to: (connects.append(to), connect(sock, to))[1])
    start = time.perf_counter()
    backbone = load_backbone("hmtbench/tiny-llama", device="cpu")
    assert time.perf_counter() - start < 10
    assert backbone.parameter_count == sum(p.numel() for p in tiny_model("llama").parameters())
    assert set(lookups) <= {"127.0.0.1"} and connects == [("127.0.0.1", port)]  # the probe alone reached out


def test_probe_honours_the_endpoint_and_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert reachable(f"http://127.0.0.1:{port}", timeout=2)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
        assert reachable("https://hub.invalid", timeout=2)  # the proxy carries the request: it is what must answer
    monkeypatch.delenv("HTTPS_PROXY")
    assert not reachable(f"http://127.0.0.1:{_closed_port()}", timeout=2)
