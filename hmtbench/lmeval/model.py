"""The lm-eval model ``hmtbench``: every request type read through a memory method around a backbone.

* ``loglikelihood``: context + continuation read segment after segment, the context through the
  memory; only the continuation tokens are scored (the summed log-probability, and whether each
  one is the argmax of its prediction). Requests are right-padded into batches, longest first.
* ``loglikelihood_rolling``: the document read once, every token but the first scored: the stream
  protocol of ``hmtbench eval-ppl``. The row is ``[prefix] + text``, prefix = BOS (else EOS), so
  for a tokenizer that prepends BOS it is the row ``eval-ppl`` scores, and the NLL is the same.
* ``generate_until``: the prompts of a batch read through the memory together, then greedy decoding by
  ``hmtbench.generation.decode`` (the decoding of ``eval-qa``), each request until its own stop string,
  the end-of-sequence id or its ``max_gen_toks``.

lm-eval imports this module to list its models: torch comes with the model (the imports inside the methods below).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs, postprocess_generated_text
from tqdm import tqdm

from hmtbench.backbones import load_backbone
from hmtbench.config import SEED, ModelSettings
from hmtbench.errors import HmtbenchError
from hmtbench.progress import quiet_transformers
from hmtbench.resolve import resolve

logger = logging.getLogger(__name__)
DEFAULT_LENGTH = 2048  # max_length for a backbone whose position scheme has no limit


@dataclass
class LMEvalConfig(ModelSettings):
    """What ``--model_args`` sets; any other key is a setting of the method (``sensory_tokens=32``)."""

    checkpoint: str | None = None
    seed: int = SEED
    batch_size: int = 1  # requests per batch (every request type)
    max_length: int | None = None  # positions of one backbone call for `full` (default: the backbone's maximum)
    max_gen_toks: int = 256  # generation limit when a task gives none


def lmeval_config(settings: dict[str, Any]) -> LMEvalConfig:
    """The typed config from ``--model_args``: a checkpoint's settings (its method too) fill what is not given."""
    shared = {f.name for f in dataclasses.fields(LMEvalConfig)} - {"method"}
    given: dict[str, Any] = {k: v for k, v in settings.items() if k in shared and v is not None}
    method = {k: v for k, v in settings.items() if k not in shared and k != "method"}
    given["method"] = {**({"name": settings["method"]} if settings.get("method") else {}), **method}
    configs = resolve(LMEvalConfig, given, given.get("checkpoint"))
    if len(configs) > 1:
        raise HmtbenchError("model_args method= takes one method; run lm_eval once per method")
    return configs[0]


def _device(device: str) -> str:
    """``device``, or auto where it names CUDA on a machine without: lm-eval's command line always passes cuda:0."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("hmtbench: device %s asked for but CUDA is not available; running on the CPU", device)
        return "auto"
    return device


@register_model("hmtbench")
class HmtbenchLM(TemplateLM):
    """``--model hmtbench --model_args backbone=...,method=hmt,checkpoint=...,segment_length=...``."""

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        from hmtbench.build import build_method, warn_if_untrained
        from hmtbench.methods.base import max_positions

        quiet_transformers()
        settings.pop("max_batch_size", None)  # lm-eval's limit for batch_size=auto, which hmtbench does not do
        self.config = config = lmeval_config(settings)
        if config.batch_size < 1 or config.max_gen_toks < 1:
            raise HmtbenchError("batch_size and max_gen_toks must be positive")
        self.backbone = load_backbone(config.backbone, dtype=config.dtype, device=_device(config.device))
        self._max_length = config.max_length or max_positions(self.backbone.model.config) or DEFAULT_LENGTH
        self.method = build_method(self.backbone, config.method, config.segment_length, seed=config.seed,
                                   document_length=self._max_length, checkpoint=config.checkpoint).eval()
        warn_if_untrained(self.method, config.checkpoint)
        self.tokenizer = self.backbone.tokenizer
        self._device = self.backbone.device

    # ----- what lm-eval asks of a tokenizing model ---------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context and every rolling document start from: BOS, else EOS (as lm-eval's HF model)."""
        bos = self.tokenizer.bos_token_id
        return self.eot_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def tokenizer_name(self) -> str:
        return self.backbone.resolved.identity

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """Token ids with the tokenizer's special tokens unless told otherwise, as ``eval-qa`` tokenizes prompts."""
        special = True if add_special_tokens is None else add_special_tokens
        return self.tokenizer(string, add_special_tokens=special)["input_ids"]

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def get_model_info(self) -> dict[str, Any]:
        """What the results JSON records about the model: the method's settings as built and its segment layout."""
        return {"hmtbench_method": self.method.config.settings(), "hmtbench_backbone": self.backbone.resolved.identity,
                **{f"hmtbench_{k}": v for k, v in self.method.record_columns().items()}}

    # ----- requests ----------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        from hmtbench.lmeval.scoring import continuation_scores

        rows = [context + continuation for _, context, continuation in requests]
        starts = [len(context) for _, context, _ in requests]
        results = self._batched(rows, lambda chosen: continuation_scores(
            self.method, [rows[i] for i in chosen], [starts[i] for i in chosen]), disable_tqdm, "loglikelihood")
        for (key, _, _), result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        from hmtbench.lmeval.scoring import rolling_nll

        texts = [request.args[0] for request in requests]
        rows = [[self.prefix_token_id, *self.tok_encode(text, add_special_tokens=False)] for text in texts]
        nll = self._batched(rows, lambda chosen: rolling_nll(self.method, [rows[i] for i in chosen]), disable_tqdm,
                            "loglikelihood_rolling")
        results = [-value for value in nll]
        for text, result in zip(texts, results, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), result)
        return results

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        prompts, settings = [], []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(gen_kwargs, self.config.max_gen_toks)
            if kwargs.get("do_sample"):
                logger.warning("hmtbench decodes greedily: do_sample and temperature are ignored")
            prompts.append(self.tok_encode(context) or [self.prefix_token_id])
            settings.append(([s for s in kwargs["until"] if s], kwargs["max_gen_toks"]))
        texts = self._batched(prompts, lambda chosen: self._generate([prompts[i] for i in chosen],
                                                                     [settings[i] for i in chosen]),
                              disable_tqdm, "generate_until")
        for request, text in zip(requests, texts, strict=True):
            self.cache_hook.add_partial("generate_until", request.args, text)
        return texts

    def generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        """Greedy continuation of ``context`` as ``eval-qa`` decodes, cut before the first stop string."""
        kwargs = normalize_gen_kwargs(gen_kwargs, self.config.max_gen_toks)
        until = [s for s in kwargs["until"] if s]
        prompt = self.tok_encode(context) or [self.prefix_token_id]
        return self._generate([prompt], [(until, kwargs["max_gen_toks"])])[0]

    def _generate(self, prompts: list[list[int]], settings: list[tuple[list[str], int]]) -> list[str]:
        """Greedy continuations of a batch of prompts, each with its own stop strings and token limit."""
        from hmtbench.generation import decode, read_openings
        from hmtbench.qa.runner import stop_ids

        def rule(until: list[str], limit: int):
            return lambda ids: len(ids) >= limit or any(s in self.tok_decode(ids) for s in until)

        openings = read_openings(self.method, self.method, prompts)
        generations = decode(self.method, openings, prompts, max(limit for _, limit in settings),
                             stop_ids=stop_ids(self.tokenizer, self.backbone.model),
                             stop=[rule(until, limit) for until, limit in settings])
        return [postprocess_generated_text(self.tok_decode(g.token_ids), until, None)
                for g, (until, _) in zip(generations, settings, strict=True)]

    def _batched(self, rows: list[list[int]], score: Callable[[list[int]], list[Any]], disable_tqdm: bool,
                 label: str) -> list[Any]:
        """``score(indices)`` over batches of rows, longest first (similar lengths pad least), in request order."""
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        results: list[Any] = [None] * len(rows)
        with tqdm(total=len(rows), desc=f"{label} (hmtbench)", disable=disable_tqdm) as progress:
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                for i, result in zip(chosen, score(chosen), strict=True):
                    results[i] = result
                progress.update(len(chosen))
        return results
