"""Where does BM25 rank a passkey's segment? The retrieval baseline's ranking, replayed without running the model.

    python scripts/retrieval_trace.py --context-length 1k,4k,16k,64k,256k,1m --samples 100 --split test \
        --query-tokens 8,12,16,32 --top-k 3 --out results/cpu-bm25-passkey/trace

The prompts are eval-qa's passkey samples (the same seed, split and depths give the same ids), cut as the answer
layout cuts them for ``--method retrieval`` (S = L // (top_k + 1) text tokens a segment). As the method does, the
segment that holds the prompt's end ranks the segments before it with ``bm25_scores``, against a query of the last
``query_tokens`` tokens before the answer (the question, then the context before it). Per sample it records the
rank of the needle's segment (the best rank when the needle spans two) and whether every segment the needle
touches is among the top_k retrieved, that is, whether the backbone could read the key at all. Samples at depth 1
(the key in the answer's own segment) are left out. A run writes ``<name>.jsonl`` (a line per sample and query
size) and ``<name>.json`` (the counts with Wilson 95% intervals, the settings and the commit) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hmtbench.answer_layout import answer_first_segments
from hmtbench.backbones import load_backbone
from hmtbench.config import parse_counts
from hmtbench.methods.retrieval import bm25_scores, query_ids, ranking
from hmtbench.qa.tasks import TaskOptions, task_factory
from hmtbench.results.provenance import provenance, run_start
from hmtbench.stats import wilson_interval


def cut(prompt: np.ndarray, segment_tokens: int) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """(stored segments, the answer segment's prompt tokens, each stored segment's start) in the answer layout."""
    first = int(answer_first_segments(torch.tensor([len(prompt)]), segment_tokens)[0])
    starts = [0, *range(first, len(prompt), segment_tokens)]
    pieces = [prompt[start:end] for start, end in zip(starts, [*starts[1:], len(prompt)], strict=True)]
    return pieces[:-1], pieces[-1], starts[:-1]


def needle_rank(order: np.ndarray, touched: list[int]) -> int:
    """The best 1-based rank of the touched segments in ``order`` (``ranking``'s, best first)."""
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(1, len(order) + 1)
    return int(ranks[touched].min())


def trace_sample(prompt: np.ndarray, meta: dict, segment_tokens: int, query_sizes: list[int],
                 top_k: int) -> list[dict]:
    stored, known, starts = cut(prompt, segment_tokens)
    begin, end = meta["needle_starts"][0], meta["needle_ends"][0]
    touched = [i for i, (start, segment) in enumerate(zip(starts, stored, strict=True))
               if start < end and begin < start + len(segment)]
    rows = []
    for size in query_sizes:
        scores = bm25_scores(stored, query_ids(stored, known, size))
        order = ranking(scores)
        retrieved = set(order[:top_k].tolist())
        rows.append({"query_tokens": size, "segments": len(stored), "needle_segments": touched,
                     "rank": needle_rank(order, touched), "read": all(i in retrieved for i in touched),
                     "needle_score": float(scores[touched].max()), "top_score": float(scores[order[0]])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="smollm2-135m", help="whose tokenizer cuts the prompts")
    parser.add_argument("--context-length", default="1k,4k,16k,64k")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--query-tokens", default="8,12,16,32")
    parser.add_argument("--out", default="results/retrieval-trace")
    parser.add_argument("--name", default="trace")
    args = parser.parse_args(argv)
    started = run_start()
    tokenizer = load_backbone(args.backbone, device="cpu").tokenizer
    segment_tokens = args.segment_length // (args.top_k + 1)
    query_sizes = [int(q) for q in args.query_tokens.split(",")]
    lines, summary = [], []
    for length in parse_counts(args.context_length, "--context-length"):
        task = task_factory("passkey")(TaskOptions(tokenizer=tokenizer, context_length=length, seed=args.seed,
                                                   limit=args.samples, split=args.split))
        rows = []
        for sample in task.load():
            if sample.meta["depth"] >= 1:
                continue
            for row in trace_sample(sample.prompt_ids.numpy().astype(np.int64), sample.meta, segment_tokens,
                                    query_sizes, args.top_k):
                rows.append({"context_length": length, "id": sample.id, "depth": sample.meta["depth"], **row})
        lines += rows
        for size in query_sizes:
            these = [r for r in rows if r["query_tokens"] == size]
            read = sum(r["read"] for r in these)
            low, high = wilson_interval(read, len(these))
            summary.append({"context_length": length, "query_tokens": size, "samples": len(these),
                            "needle_read": read, "needle_read_ci": [low, high],
                            "median_rank": float(np.median([r["rank"] for r in these])),
                            "segments": these[0]["segments"] if these else 0})
            print(f"{length:>8} tokens, query {size:>3}: needle among the top {args.top_k} in {read}/{len(these)}, "
                  f"median rank {summary[-1]['median_rank']:.0f} of {summary[-1]['segments']}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    record = {"settings": vars(args), "segment_tokens": segment_tokens, "summary": summary,
              "provenance": provenance(started_at=started)}
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
