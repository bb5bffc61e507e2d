"""`hmtbench eval-ppl`: perplexity of each method on the same long documents, one record per method."""

from __future__ import annotations

import dataclasses
from typing import Any

from hmtbench import distributed
from hmtbench.backbones import load_backbone
from hmtbench.build import build_method, warn_if_untrained
from hmtbench.config import to_json
from hmtbench.data import load_corpus, tokenize_corpus
from hmtbench.errors import HmtbenchError
from hmtbench.evaluation.config import EvalConfig
from hmtbench.evaluation.perplexity import (
    PerplexityResult,
    evaluate,
    evaluate_sharded,
    paper_batches,
    stream_batches,
    stream_order,
)
from hmtbench.fastpath import accelerate
from hmtbench.oom import HalvingBatches
from hmtbench.progress import TokenProgress, console, quiet_transformers
from hmtbench.results import make_record, write_record
from hmtbench.results.provenance import Measure, new_run_id, peak_host_mem_mb, run_start
from hmtbench.results.record_columns import checkpoint_columns, ppl_columns, run_columns

PROTOCOLS = ("stream", "paper")


def run_eval_ppl(configs: list[EvalConfig], command_line: list[str] | None = None) -> list[dict[str, Any]]:
    """Evaluate each config's method on the same documents and shared settings; one parquet per method."""
    config = configs[0]  # every config shares all but the method
    _check(configs)
    quiet_transformers()
    device = distributed.setup(config.device, console)  # config.device itself in a single process
    with console.status(f"loading backbone {config.backbone}"):
        backbone = load_backbone(config.backbone, dtype=config.dtype, device=device)
    data = config.data
    models = [build_method(backbone, c.method, c.segment_length, seed=c.seed, document_length=data.test_length,
                           checkpoint=c.checkpoint, most_tokens=data.test_length)
              for c in configs]  # bad settings fail before the corpus loads; documents are cut at test_length
    for model in models:
        warn_if_untrained(model, config.checkpoint)
    tokenized = _tokenize(config, backbone)
    rows = []
    for method_config, model in zip(configs, models, strict=True):
        run = dataclasses.replace(method_config, method=model.config)  # the settings as built (defaults resolved)
        row = _evaluate_method(run, model.eval(), backbone, tokenized, command_line)
        rows.append(row)
        console.print(f"{model.name}: ppl {row['ppl']:.3f}  bpb {row['bpb']:.4f}  ({row['tokens_per_s']:,.0f} tok/s)")
    return rows


def _check(configs: list[EvalConfig]) -> None:
    config = configs[0]
    if config.protocol not in PROTOCOLS:
        raise HmtbenchError(f"unknown --protocol '{config.protocol}'; use stream or paper")
    if config.batch_size < 1 or config.data.test_length < 1:
        raise HmtbenchError("--batch-size and --test-length must be positive")
    if config.checkpoint and len({c.method.name for c in configs}) > 1:
        raise HmtbenchError("--checkpoint belongs to one method: evaluate one --method at a time with it")
    if config.protocol == "stream" and config.data.test_length < config.segment_length:  # all would be skipped
        raise HmtbenchError(
            f"--test-length {config.data.test_length} is shorter than one segment (--segment-length "
            f"{config.segment_length}); raise --test-length or lower --segment-length"
        )


def _tokenize(config: EvalConfig, backbone):
    """stream reads the first test_length tokens of each document (skipping those shorter than a segment);
    paper cuts its windows from all documents joined whole, as the reference does."""
    data = config.data
    corpus = load_corpus(data.dataset, data.split, data.max_docs)
    stream = config.protocol == "stream"
    if stream:
        tokenized = tokenize_corpus(corpus, backbone.tokenizer, data.test_length, config.segment_length)
    else:
        tokenized = tokenize_corpus(corpus, backbone.tokenizer, None, 1)
    if not tokenized.documents:
        raise HmtbenchError(  # stream only: paper keeps every non-empty document
            f"all {tokenized.skipped} documents of '{data.dataset}' are shorter than one segment "
            f"({config.segment_length} tokens); lower --segment-length or use longer documents"
        )
    each = f"up to {data.test_length} tokens each" if stream else "whole"
    console.print(
        f"{len(tokenized.documents)} documents from {data.dataset} ({data.split}), {each}; "
        f"{tokenized.skipped} shorter than one segment skipped"
    )
    return tokenized


def _batches(config: EvalConfig, model, backbone, tokenized) -> tuple[list, int]:
    """The batches to score and the tokens they hold."""
    if config.protocol == "stream":
        batches = list(stream_batches(tokenized, config.batch_size, backbone.device))
        return batches, sum(len(d) for d in tokenized.documents)
    batches = list(paper_batches(tokenized, model.segment_tokens, config.data.test_length, config.batch_size,
                                 config.max_windows, backbone.tokenizer, backbone.device))
    if not batches:  # otherwise a record with nothing scored and ppl = nan
        joined = sum(len(d) for d in tokenized.documents)
        raise HmtbenchError(
            f"the documents of '{config.data.dataset}' hold {joined} tokens, fewer than one paper window "
            f"(--test-length {config.data.test_length}); lower --test-length or use more documents"
        )
    return batches, sum(int(b[0][1].sum()) for b in batches)


def _evaluate_method(config: EvalConfig, model, backbone, tokenized, command_line) -> dict[str, Any]:
    started = run_start()
    runner = accelerate(model, config.engine)
    batches, total = _batches(config, model, backbone, tokenized)
    name = model.name
    # out of memory: the batch is halved and the run goes on (the record says the size it ended at)
    halving = HalvingBatches(config.batch_size, "lower --test-length or --segment-length")
    if distributed.is_distributed():  # whole batches dealt round-robin; rank 0's bar shows its own share
        with Measure(backbone.device) as measured:  # wall time up to the gather: the slowest rank's
            mine = distributed.deal(batches)
            share = sum(int(lengths.sum()) for _, ((_, lengths, _), _) in mine)
            with TokenProgress(f"{name:>5} rank 0", share) as progress:
                result = evaluate_sharded(runner, mine, progress.advance, halving)
    else:
        with TokenProgress(f"{name:>5}", total) as progress, Measure(backbone.device) as measured:
            result = evaluate(runner, iter(batches), progress.advance, halving)
    if halving.retries:
        console.print(f"[yellow]{name}: out of device memory, {halving.retries} times: batches of "
                      f"{config.batch_size} were scored {halving.size} at a time, to the same numbers[/]")
    run_id = new_run_id("eval-ppl", name, started)
    row = _record(config, model, backbone, result, measured, total, command_line, started)
    order = stream_order(tokenized.documents) if config.protocol == "stream" else None  # paper: windows in order
    row.update(ppl_columns(result, tokenized.documents, order), docs_skipped=tokenized.skipped)
    row.update(batch_size=halving.size, oom_retries=halving.retries)
    row["run_id"] = run_id
    row["path"] = str(write_record(make_record(row), config.out, run_id)) if distributed.is_main() else None
    return row


def _record(config: EvalConfig, model, backbone, result: PerplexityResult, measured: Measure,
            tokens_read: int, command_line, started) -> dict[str, Any]:
    data = config.data
    return {
        **run_columns("eval-ppl", config.seed, backbone, model, command_line, started),
        "status": "success",
        **checkpoint_columns(config.checkpoint),
        "name": config.name,
        "selected_on": config.selected_on,
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
        "config": distributed.with_world_size(to_json(config)),
    }
