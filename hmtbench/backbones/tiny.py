"""Tiny randomly initialised models of real architectures, built in memory (tests and CI smoke runs).

``random:llama``, ``random:opt``, ``random:gpt-neox``, ``random:qwen2``: 2 layers, hidden 64,
a byte-level vocabulary of 259 tokens, weights drawn from a fixed seed. No download.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 259  # 256 bytes + <pad>, <s>, </s>
PAD, BOS, EOS = 256, 257, 258

TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": (
        "LlamaConfig",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
        },
    ),
    "opt": (
        "OPTConfig",
        {
            "hidden_size": 64,
            "ffn_dim": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "word_embed_proj_dim": 32,
            "enable_bias": True,
        },
    ),
    "gpt-neox": (
        "GPTNeoXConfig",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "rotary_pct": 0.5,
        },
    ),
    "qwen2": (
        "Qwen2Config",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "num_hidden_layers": 2,
        },
    ),
}


def tiny_model(architecture: str, *, seed: int = 0, max_positions: int = 4096) -> torch.nn.Module:
    """A 2-layer random causal LM of ``architecture`` in fp32 on the CPU, deterministic in ``seed``."""
    import transformers

    class_name, sizes = TINY_CONFIGS[architecture]
    config = getattr(transformers, class_name)(
        vocab_size=VOCAB,
        max_position_embeddings=max_positions,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
        **sizes,
    )
    config._attn_implementation = "eager" if architecture == "gpt-neox" else "sdpa"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def byte_tokenizer() -> Any:
    """A real ``PreTrainedTokenizerFast`` over UTF-8 bytes (ids 0-255) that prepends <s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    vocab.update({"<pad>": PAD, "<s>": BOS, "</s>": EOS})
    assert set(byte_to_char.values()) == set(alphabet)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=10**9,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel pre-tokenization emits)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}
