"""Published architectures of the paper's backbones (and a few neighbours), for ``random:NAME`` backbones.

Speed and memory depend on the shape, not on the weights, so ``hmtbench bench --backbone random:llama-7b`` measures
Llama-2-7B without downloading 13 GB: the fields below are copied from each model's ``config.json`` on the Hugging
Face Hub (the repository named in ``hub``), keeping its key names so that a diff against that file is easy. Only the
fields that set the shape or the numerics are kept; token ids are left out because these models talk to the byte-level
tokenizer of ``tiny.py`` (``load_backbone`` sets them), while the vocabulary stays the published size so that the
embedding and LM-head cost what they cost in the real model. ``params`` is what the fields give, derived by hand from
the layer formula and checked against a meta-device build in ``tests/test_backbones.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    hub: str  # the repository whose config.json the fields come from
    config_class: str  # transformers configuration class
    fields: dict[str, Any]  # config.json keys, as published
    params: int  # parameter count of the built model (tied embeddings counted once)


_LLAMA2_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,  # not in the first revision of config.json; 10000 is Llama 2's (and the class default)
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}

_LLAMA31_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}

_OPENLLAMA_3B_V2 = {
    "hidden_size": 3200,
    "intermediate_size": 8640,
    "num_hidden_layers": 26,
    "num_attention_heads": 32,  # head_dim 100
    "num_key_value_heads": 32,  # not in config.json: Llama's default, multi-head attention
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,  # not in config.json: the class default
    "rms_norm_eps": 1e-6,  # as recalled from config.json (v1 and v2 both 1e-6); does not change the shape
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}

_OPT_2_7B = {
    "hidden_size": 2560,
    "ffn_dim": 10240,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "vocab_size": 50272,
    "max_position_embeddings": 2048,
    "word_embed_proj_dim": 2560,
    "do_layer_norm_before": True,
    "activation_function": "relu",
    "enable_bias": True,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "tie_word_embeddings": True,  # not in config.json: OPT's default, the LM head is the input embedding
}

_OPT_350M = {
    **_OPT_2_7B,
    "hidden_size": 1024,
    "ffn_dim": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "word_embed_proj_dim": 512,  # embeddings are 512 wide, projected in and out of the 1024-wide layers
    "do_layer_norm_before": False,  # the only post-LN OPT: no final layer norm either
}

_QWEN25_14B = {
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-5,  # 1e-5 from 14B up, 1e-6 for 0.5B-7B (as recalled; does not change the shape)
    "use_sliding_window": False,
    "sliding_window": 131072,
    "max_window_layers": 48,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}

_QWEN25_7B = {
    **_QWEN25_14B,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-6,
    "max_window_layers": 28,
}

_QWEN25_05B = {
    **_QWEN25_14B,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "sliding_window": 32768,
    "max_window_layers": 24,
    "tie_word_embeddings": True,
}

_SMOLLM2_135M = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "initializer_range": 0.041666666666666664,  # 1/sqrt(576), as recalled; only the init's spread
    "tie_word_embeddings": True,
}

SHAPES: dict[str, Shape] = {
    "llama-7b": Shape("meta-llama/Llama-2-7b-hf", "LlamaConfig", _LLAMA2_7B, 6_738_415_616),
    "opt-2.7b": Shape("facebook/opt-2.7b", "OPTConfig", _OPT_2_7B, 2_651_596_800),
    "openllama-3b": Shape("openlm-research/open_llama_3b_v2", "LlamaConfig", _OPENLLAMA_3B_V2, 3_426_473_600),
    "qwen2.5-14b": Shape("Qwen/Qwen2.5-14B", "Qwen2Config", _QWEN25_14B, 14_770_033_664),
    "opt-350m": Shape("facebook/opt-350m", "OPTConfig", _OPT_350M, 331_196_416),
    "qwen2.5-0.5b": Shape("Qwen/Qwen2.5-0.5B", "Qwen2Config", _QWEN25_05B, 494_032_768),
    "qwen2.5-7b": Shape("Qwen/Qwen2.5-7B", "Qwen2Config", _QWEN25_7B, 7_615_616_512),
    "smollm2-135m": Shape("HuggingFaceTB/SmolLM2-135M", "LlamaConfig", _SMOLLM2_135M, 134_515_008),
    "llama-3.1-8b": Shape("meta-llama/Llama-3.1-8B", "LlamaConfig", _LLAMA31_8B, 8_030_261_248),
}


def shape_for_hub_id(hub_id: str) -> str | None:
    """The ``random:`` name whose shape is ``hub_id``'s, to suggest when that model can't be downloaded."""
    for name, shape in SHAPES.items():
        if shape.hub.lower() == hub_id.lower():
            return name
    return None
