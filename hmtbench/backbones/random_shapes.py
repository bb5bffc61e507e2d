"""Build a ``random:NAME`` backbone: a published shape (``shapes.py``) with random weights, made on the target device.

The weights are created where they will live, in the dtype they will have: under a ``torch.device`` context with
``dtype=`` passed to ``from_config``, nothing is first made in fp32 on the CPU and copied (a 7B model would need 27 GB
of host memory and a minute for that). They are then drawn in place, in one fixed order, from a generator on the
target device, so that a seed gives the same weights on every build on the same kind of device, whatever
transformers' own initialisation does in the installed version. On the meta device nothing is drawn: that build
costs no memory and is how the tests count a 14B model's parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hmtbench.backbones.shapes import SHAPES
from hmtbench.backbones.tiny import BOS, EOS, PAD
from hmtbench.errors import HmtbenchError, did_you_mean


def shape_config(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The transformers config of shape ``name``, with ``overrides`` (e.g. ``num_hidden_layers=2`` for a CPU test)."""
    import transformers

    shape = SHAPES[name]
    config_class = getattr(transformers, shape.config_class)
    overrides = dict(overrides or {})
    known = set(shape.fields) | set(config_class().to_dict())
    for key in overrides:
        if key not in known:
            raise HmtbenchError(f"unknown {shape.config_class} field '{key}'{did_you_mean(key, known)} in overrides")
    # Token ids are the byte tokenizer's: the model is fed what tiny.byte_tokenizer() makes. The fields are copied:
    # transformers edits nested dicts such as rope_scaling in place, and the table must stay as published.
    fields = copy.deepcopy({**shape.fields, **overrides})
    return config_class(**fields, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)


def build_shape_model(
    name: str, *, device: Any, dtype: Any, seed: int = 0, overrides: Mapping[str, Any] | None = None
) -> Any:
    """A causal LM of shape ``name`` with random weights on ``device`` in ``dtype``, deterministic in ``seed``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = shape_config(name, overrides)
    device = torch.device(device)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if device.type != "meta":
        std = getattr(config, "initializer_range", None) or getattr(config, "init_std", 0.02)
        draw_weights(model, seed=seed, std=std)
    return model.eval()


def draw_weights(model: Any, *, seed: int, std: float) -> None:
    """Weights ~ N(0, std) drawn in place, norms' scales 1, biases 0 (what transformers' own init gives these models).

    In place and parameter by parameter, so the peak memory is the model's own; tied weights are drawn once.
    """
    import torch

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, std, generator=generator)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)
