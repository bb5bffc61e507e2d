"""`hmtbench eval-ppl`: perplexity of plain / full / RMT / HMT on long documents, one record per method."""

from __future__ import annotations

import dataclasses
from typing import Any

from hmtbench import distributed
from hmtbench.backbones import load_backbone
from hmtbench.commands.common import (
    checkpoint_columns,
    console,
    prepare_method,
    quiet_transformers,
    run_columns,
)
from hmtbench.config import EvalConfig, to_json
from hmtbench.data import load_corpus, tokenize_corpus
from hmtbench.errors import HmtbenchError
from hmtbench.evaluation.perplexity import (
    PerplexityResult,
    evaluate,
    evaluate_sharded,
    paper_batches,
    stream_batches,
)
from hmtbench.fastpath import EngineOptions, accelerate, with_engine
from hmtbench.methods import method_class
from hmtbench.progress import TokenProgress
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import Measure, new_run_id, peak_host_mem_mb

PROTOCOLS = ("stream", "paper")


def run_eval_ppl(
    config: EvalConfig, methods: list[str], command_line: list[str] | None = None, engine: EngineOptions | None = None
) -> list[dict[str, Any]]:
    """Evaluate each method on the same documents and segment settings; write one parquet per method.

    ``engine``: the fast path's switches (``hmtbench.fastpath``); the first batches include compiling, capturing.
    """
    if config.protocol not in PROTOCOLS:
        raise HmtbenchError(f"unknown --protocol '{config.protocol}'; use stream or paper")
    if config.batch_size < 1 or config.data.test_length < 1:
        raise HmtbenchError("--batch-size and --test-length must be positive")
    for name in methods:
        method_class(name)  # unknown names fail before anything loads
    if config.checkpoint and len(methods) > 1:
        raise HmtbenchError("--checkpoint belongs to one method: evaluate one --method at a time with it")
    data = config.data
    stream = config.protocol == "stream"
    if stream and data.test_length < config.memory.segment_length:  # every document would be skipped
        raise HmtbenchError(
            f"--test-length {data.test_length} is shorter than one segment (--segment-length "
            f"{config.memory.segment_length}); raise --test-length or lower --segment-length"
        )
    quiet_transformers()
    device = distributed.setup(config.device, console)  # config.device itself in a single process
    with console.status(f"loading backbone {config.backbone}"):
        backbone = load_backbone(config.backbone, dtype=config.dtype, device=device)
    if config.checkpoint is None:  # bad segment settings fail before the corpus loads
        for name in methods:
            _build(backbone, name, config)
    corpus = load_corpus(data.dataset, data.split, data.max_docs)
    # stream reads the first test_length tokens of each document (skipping those shorter than a segment);
    # paper cuts its windows from all documents joined whole, as the reference does
    if stream:
        tokenized = tokenize_corpus(corpus, backbone.tokenizer, data.test_length, config.memory.segment_length)
    else:
        tokenized = tokenize_corpus(corpus, backbone.tokenizer, None, 1)
    if not tokenized.documents:
        raise HmtbenchError(  # stream only: paper keeps every non-empty document
            f"all {tokenized.skipped} documents of '{data.dataset}' are shorter than one segment "
            f"({config.memory.segment_length} tokens); lower --segment-length or use longer documents"
        )
    each = f"up to {data.test_length} tokens each" if stream else "whole"
    console.print(
        f"{len(tokenized.documents)} documents from {data.dataset} ({data.split}), {each}; "
        f"{tokenized.skipped} shorter than one segment skipped"
    )
    rows = []
    for name in methods:
        row = _evaluate_method(config, name, backbone, tokenized, command_line, engine)
        rows.append(row)
        console.print(f"{name}: ppl {row['ppl']:.3f}  bpb {row['bpb']:.4f}  ({row['tokens_per_s']:,.0f} tok/s)")
    return rows


def _build(backbone, name: str, config: EvalConfig) -> None:
    """Construct the method once with the command's settings, only to validate them (errors name the flag)."""
    cls = method_class(name)
    settings = cls.settings_for(dataclasses.asdict(config.memory), config.data.test_length)
    cls(backbone.model, cls.config_class.from_settings(settings))


def _evaluate_method(config: EvalConfig, name: str, backbone, tokenized, command_line, engine=None) -> dict[str, Any]:
    model = prepare_method(backbone, name, config.memory, config.data.test_length, config.checkpoint, config.seed)
    runner = model if engine is None else accelerate(model, engine)
    if config.protocol == "stream":
        batches = stream_batches(tokenized, config.batch_size, backbone.device)
        total = sum(len(d) for d in tokenized.documents)
    else:
        batches = paper_batches(tokenized, model.segment_tokens, config.data.test_length, config.batch_size,
                                config.max_windows, backbone.tokenizer, backbone.device)
        batches = list(batches)
        if not batches:  # otherwise a record with nothing scored and ppl = nan
            joined = sum(len(d) for d in tokenized.documents)
            raise HmtbenchError(
                f"the documents of '{config.data.dataset}' hold {joined} tokens, fewer than one paper window "
                f"(--test-length {config.data.test_length}); lower --test-length or use more documents"
            )
        total = sum(int(b[0][1].sum()) for b in batches)
    if distributed.is_distributed():  # whole batches dealt round-robin; rank 0's bar shows its own share
        with Measure(backbone.device) as measured:  # wall time up to the gather: the slowest rank's
            mine = distributed.deal(batches)
            share = sum(int(lengths.sum()) for _, ((_, lengths, _), _) in mine)
            with TokenProgress(f"{name:>5} rank 0", share) as progress:
                result = evaluate_sharded(runner, mine, progress.advance)
    else:
        with TokenProgress(f"{name:>5}", total) as progress, Measure(backbone.device) as measured:
            result = evaluate(runner, iter(batches), progress.advance)
    run_id = new_run_id("eval-ppl", name)
    row = _record(config, name, model, backbone, result, measured, total, command_line)
    row["docs_skipped"] = tokenized.skipped
    row["config"] = with_engine(row["config"], engine)
    row["run_id"] = run_id
    row["path"] = str(write_record(make_record(row), config.out, run_id)) if distributed.is_main() else None
    return row


def _record(config: EvalConfig, name, model, backbone, result: PerplexityResult, measured: Measure,
            tokens_read: int, command_line) -> dict[str, Any]:
    data = config.data
    resolved_config = dataclasses.replace(config, method=name)
    return {
        **run_columns("eval-ppl", config.seed, backbone, name, model, command_line),
        "status": "success",
        **checkpoint_columns(config.checkpoint),
        "dataset": data.dataset,
        "split": data.split,
        "protocol": config.protocol,
        "test_length": data.test_length,
        "max_docs": data.max_docs,
        "batch_size": config.batch_size,
        "docs": result.docs,
        "tokens_scored": result.tokens,
        "bytes_scored": result.bytes,
        "nll_mean": result.nll_mean,
        "ppl": result.ppl,
        "bpb": result.bpb,
        "paper_ppl": result.paper_ppl if config.protocol == "paper" else None,
        "segment_nll": result.segment_nll,
        "segment_tokens": result.segment_tokens,
        "peak_gpu_mem_mb": measured.peak_gpu_mb,
        "peak_host_mem_mb": peak_host_mem_mb(),
        "wall_s": measured.wall_s,
        "tokens_per_s": tokens_read / measured.wall_s if measured.wall_s else None,
        "config": distributed.with_world_size(to_json(resolved_config)),
    }
