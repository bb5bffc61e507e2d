"""Needle tasks for lm-eval, written offline: eval-qa's passkey samples as a local JSONL plus a task YAML.

The samples are ``hmtbench.qa.tasks``' own (same seed, same prompt, sized in the backbone's tokens),
so ``lm_eval --model hmtbench`` on this task reads the prompts ``hmtbench eval-qa --task passkey``
reads. The YAML scores ``generate_until`` by exact match of the first number generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hmtbench.backbones import gguf_cache, resolve_backbone
from hmtbench.config import SEED
from hmtbench.qa.tasks import TaskOptions, load_task

FIRST_NUMBER = r"(\d+)"


class _Dumper(yaml.SafeDumper):
    """YAML with line breaks written as ``"\\n"`` (the stop string), not as folded blank lines."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style='"' if "\n" in text else None))


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of backbone ``spec`` alone (a random: backbone's is the byte tokenizer), without its weights."""
    resolved = resolve_backbone(spec)
    if resolved.random_weights:
        from hmtbench.backbones.tiny import byte_tokenizer  # torch: only a random backbone's tokenizer needs it

        return byte_tokenizer()
    from transformers import AutoTokenizer

    converted = gguf_cache.existing(resolved.source, resolved.gguf_file) if resolved.gguf_file else None
    if converted is not None:  # a backbone loaded before on this machine: its tokenizer without reading the GGUF
        return AutoTokenizer.from_pretrained(converted, local_files_only=True)
    return AutoTokenizer.from_pretrained(resolved.source, gguf_file=resolved.gguf_file)


def task_name(task: str, context_length: int) -> str:
    return f"hmtbench_{task.replace('-', '_')}_{context_length}"


def write_needle_task(out: str | Path, backbone: str, context_length: int, *, task: str = "passkey", samples: int = 20,
                      seed: int = SEED, depths: list[float] | None = None, filler: str = "pydoc-topics",
                      tokenizer: Any = None) -> tuple[str, Path]:
    """Write ``<name>.jsonl`` and ``<name>.yaml`` into ``out``; return the lm-eval task name and the YAML."""
    tokenizer = tokenizer or load_tokenizer(backbone)
    options = TaskOptions(tokenizer=tokenizer, context_length=context_length, seed=seed, limit=samples,
                          depths=depths, filler=filler)
    needle = load_task(task, options)
    name = task_name(task, context_length)
    folder = Path(out).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    rows = [{"id": s.id, "prompt": tokenizer.decode(s.prompt_ids.tolist(), skip_special_tokens=True),  # built in tokens
             "answer": s.answers[0], "depth": s.meta.get("depth"),
             "prompt_tokens": s.meta.get("prompt_tokens")} for s in needle.load()]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {"until": ["\n\n"], "max_gen_toks": needle.max_new_tokens, "do_sample": False},
        "filter_list": [{"name": "first-number", "filter": [
            {"function": "regex", "regex_pattern": FIRST_NUMBER}, {"function": "take_first"}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0, "backbone": backbone, "context_length": context_length, "seed": seed,
                     "samples": len(rows), "filler": filler},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False))
    return name, path
