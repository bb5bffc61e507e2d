"""How the methods call an unmodified Hugging Face causal LM: exactly, without host syncs.

* ``last_hidden_states``: the base model's last hidden states (HF's ``hidden_states[-1]``, the
  output head's input). Our forwards never pad inside a sequence and never use a KV cache, so
  attention is plain causal: where the backbone runs PyTorch SDPA with no sliding window, the
  call goes through an attention implementation HF builds no mask for. It is HF's own SDPA
  function, handed no mask, which is what HF's mask code returns for such inputs anyway, so the
  numbers are the same; what goes is the mask construction and the host sync of HF's packed-
  sequence check (``.all()`` on a device tensor in every forward), which also keeps a CUDA-graph
  capture on the same code path as the eager warm-up before it.
* ``head_is_plain``: whether the logits are just the output head on its input (no soft-capping
  or scaling after the head), checked once per backbone; if so, scoring runs the head itself, in
  chunks of the positions it scores (``hmtbench.methods.loss``), and skips it where nothing is scored.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor, nn

CAUSAL_SDPA = "hmtbench_causal_sdpa"

_plain_heads: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def _causal_sdpa(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask, **kwargs):
    """HF's SDPA attention with no mask: is_causal, as HF itself runs an unpadded, uncached sequence."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if key.shape[2] != query.shape[2]:  # only full, uncached sequences come through here
        raise RuntimeError(f"{CAUSAL_SDPA} needs queries and keys of one length, got {query.shape} and {key.shape}")
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)


def _register_causal_sdpa() -> bool:
    try:
        from transformers import AttentionInterface
    except ImportError:
        return False
    AttentionInterface.register(CAUSAL_SDPA, _causal_sdpa)
    return True


def plain_causal(config) -> bool:
    """Whether every layer of this backbone attends causally over the whole sequence with PyTorch SDPA."""
    if getattr(config, "_attn_implementation", None) not in ("sdpa", CAUSAL_SDPA):
        return False
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None:
        return all(kind == "full_attention" for kind in layer_types)
    return getattr(config, "sliding_window", None) is None


@contextlib.contextmanager
def causal_attention(backbone: nn.Module) -> Iterator[None]:
    """Run the backbone's attention as plain causal SDPA without a mask while inside (see the module doc)."""
    config = backbone.config
    if not plain_causal(config) or not _register_causal_sdpa():
        yield
        return
    previous = config._attn_implementation
    config._attn_implementation = CAUSAL_SDPA
    try:
        yield
    finally:
        config._attn_implementation = previous


def last_hidden_states(backbone: nn.Module, embeds: Tensor) -> Tensor:
    """(B, T, d) last hidden states of the causal LM ``backbone`` for ``inputs_embeds`` (B, T, d), no cache."""
    with causal_attention(backbone):
        return backbone.base_model(inputs_embeds=embeds, use_cache=False).last_hidden_state


def head_is_plain(backbone: nn.Module) -> bool:
    """Whether the backbone's logits are its output head applied to the head's input, and nothing after.

    True for Llama, Qwen2, OPT, GPT-NeoX, ...; False where the logits are soft-capped or scaled after
    the head (Gemma 2, Cohere, Granite). Checked once per backbone on four positions, in eval mode.
    """
    if backbone not in _plain_heads:
        head = backbone.get_output_embeddings()
        plain = False
        if head is not None:
            captured: list[Tensor] = []
            hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
            was_training = backbone.training
            backbone.eval()
            try:
                with torch.no_grad():
                    embeds = backbone.get_input_embeddings().weight[:4][None]  # (1, 4, d) real embeddings
                    logits = backbone(inputs_embeds=embeds, use_cache=False).logits
                    plain = torch.allclose(logits, head(captured[0]), rtol=1e-3, atol=1e-4)
            finally:
                hook.remove()
                backbone.train(was_training)
        _plain_heads[backbone] = plain
    return _plain_heads[backbone]
