"""Where does HMT with the span write lose a passkey? Its write, recall and read, traced sample by sample.

    python scripts/memory_trace.py --checkpoint results/h200-retrieval-span/runs/hmt-span-lora/stage2/final \
        --context-length 16k --depth 0.25 --samples 25 [--span-choice hard] [--recall-choice hard] \
        [--oracle-recall | --fresh-write] \
        --out results/cpu-memory-trace

Passkey samples in eval-qa's answer layout, scored as eval-qa scores them (teacher-forced greedy answer, exact or
not). Per sample the trace records:

* write: the candidate of largest weight in the span write of the segment that holds the key (``stay`` or the
  span ending at text position t), whether that span holds the whole key, and its weight;
* holds: which cached memories hold the key, following ``stay`` (a memory that keeps what it recalled holds the key
  if the memory its recall weighted most does);
* recall: at the segment that answers, the recall weight on the memories that hold the key, and whether one of
  them has the largest weight;
* exact: the answer.

``--task multi-fact`` traces the asked fact the same way (its three default depths; ``--depth`` is passkey's) and
records what the memory the answering segment weighs most holds: the asked fact, another fact, or none.

Failures then split into write (no memory holds the key), recall (one does; recall weighs another most) and read
(recall finds it, the answer is still wrong). ``--oracle-recall`` runs each batch a second time with the answering
segment recalling the needle segment's memory alone (weight 1): an intervention that measures the read.
``--fresh-write`` runs only each sample's needle segment, once, reading the blank memory that segment 0 reads (its
real sensory tokens kept) instead of what it recalled in the long context: does the long context's read disturb
the write? (One backbone step per batch: no pass over the context.) A run writes
``<name>.jsonl`` (a line per sample) and ``<name>.json`` (the counts with Wilson 95% intervals, the settings and the
commit) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hmtbench.backbones import load_backbone
from hmtbench.build import build_method
from hmtbench.config import parse_counts
from hmtbench.engine import IGNORE
from hmtbench.qa.answers import answer_pass, exact_rows, qa_batch
from hmtbench.qa.config import QAConfig, qa_configs
from hmtbench.qa.runner import batches, prepare_samples
from hmtbench.qa.tasks import TaskOptions, task_factory
from hmtbench.results.provenance import provenance, run_start
from hmtbench.stats import wilson_interval


class Tracer:
    """Records every span write's weights and every recall's weights, segment by segment (one batch at a time)."""

    def __init__(self, model: Any, oracle: Callable[[int], Tensor | None] | None = None) -> None:
        self.writes: list[Tensor] = []  # per segment: (B, 1 + S) span-write weights [stay, text positions]
        self.recalls: list[Tensor] = []  # per segment from 1 on: (B, N) recall weights over the cache slots
        self.oracle = oracle  # segment -> (B, N) weights to use instead, or None (the model's own)
        writer, recall = model.span_write, model.recall
        weights, forward = writer.weights, recall.forward

        def traced_weights(*args: Any) -> Tensor:
            result = weights(*args)
            self.writes.append(result.detach().float().cpu())
            return result

        def traced_recall(summary: Tensor, cache: Any) -> tuple[Tensor, Tensor]:
            recalled, found = forward(summary, cache)
            forced = self.oracle(len(self.recalls) + 1) if self.oracle else None
            if forced is not None:
                found = forced.to(found)
                recalled = recall.read(found, cache)
            self.recalls.append(found.detach().float().cpu())
            return recalled, found

        writer.weights, recall.forward = traced_weights, traced_recall

    def reset(self, oracle: Callable[[int], Tensor | None] | None = None) -> None:
        self.writes, self.recalls, self.oracle = [], [], oracle


def slot_segment(slot: int, segment: int, capacity: int) -> int:
    """The segment whose memory cache slot ``slot`` holds when ``segment`` reads (slot = segment % capacity)."""
    return slot + capacity * ((segment - 1 - slot) // capacity)


class RowText:
    """One row's token ids segment by segment, as a span write sees them."""

    def __init__(self, segments: Tensor, lengths: Tensor, tokenizer: Any, m: int, k: int) -> None:
        self.text = [segments[i, : int(lengths[i])].tolist() for i in range(segments.shape[0])]
        self.tokenizer, self.m, self.k = tokenizer, m, k

    def visible(self, i: int) -> list[int]:
        """The ids a span of segment i may cover: the sensory tokens (the previous segment's last k), then its text."""
        before = self.text[i - 1][len(self.text[i - 1]) - self.k :] if i and self.k else []
        return before + self.text[i]

    def needle(self, value: str, before: int) -> int:
        """The first segment (before ``before``) whose visible ids hold the key."""
        return next(i for i in range(before) if value in self.tokenizer.decode(self.visible(i)))

    def span(self, i: int, choice: int) -> str:
        """The text of the span that candidate ``choice`` (1 + its last text position) of segment i writes."""
        ids = self.visible(i)
        end = len(ids) - len(self.text[i]) + choice - 1
        return self.tokenizer.decode(ids[max(0, end - self.m + 1) : end + 1])


def write_of(weights: Tensor, text: RowText, i: int) -> dict[str, Any]:
    """The heaviest candidate of segment i's span write: stay or a span (its last text position and text)."""
    choice = int(weights.argmax())
    if choice == 0:
        return {"choice": "stay", "weight": float(weights[0])}
    return {"choice": choice - 1, "weight": float(weights[choice]), "span": text.span(i, choice)}


def answering_segment(targets: Tensor) -> int:
    """The first segment of a row's (n, S) targets that scores an answer token."""
    return int((targets != IGNORE).any(-1).nonzero()[0])


@torch.inference_mode()
def exact_answers(model: Any, batch: Any) -> list[bool]:
    """Each row's answer, teacher-forced greedy, exact or not: eval-qa's pass (the tracer records it)."""
    _, predicted = answer_pass(model, model, batch)
    return exact_rows(batch, predicted).cpu().tolist()


def memories_holding(value: str, writes: list[dict[str, Any]], recalls: list[Tensor], capacity: int) -> list[bool]:
    """Per segment before the answer: whether its memory holds ``value``, following ``stay`` (a memory that keeps
    what it recalled holds the value if the memory its recall weighted most does)."""
    holds: list[bool] = []
    for i, write in enumerate(writes):
        if write["choice"] == "stay":  # the memory read: recalled (segment 0 reads the blank memory)
            holds.append(i > 0 and holds[slot_segment(int(recalls[i - 1].argmax()), i, capacity)])
        else:
            holds.append(value in write["span"])
    return holds


def trace_row(row: int, value: str, text: RowText, targets: Tensor, tracer: Tracer, capacity: int,
              others: tuple[str, ...] = ()) -> dict[str, Any]:
    """One sample's trace (see the module docstring) from its ids and the tracer's weights; ``others``: the facts
    not asked (multi-fact), whose memories the answering segment may recall instead."""
    answering = answering_segment(targets)
    needle = text.needle(value, answering)
    writes = [write_of(tracer.writes[i][row], text, i) for i in range(answering)]
    recalls = [tracer.recalls[i][row] for i in range(answering)]
    holds = memories_holding(value, writes, recalls, capacity)
    recall = recalls[-1]  # the answering segment's
    slots = [s for s in range(min(capacity, answering)) if holds[slot_segment(s, answering, capacity)]]
    top = slot_segment(int(recall.argmax()), answering, capacity)
    other = [memories_holding(v, writes, recalls, capacity) for v in others]
    return {
        **({"recall_top_holds": "asked" if holds[top] else "other" if any(h[top] for h in other) else "none"}
           if others else {}),
        "needle_segment": needle, "answering_segment": answering, "segments": len(text.text),
        "write": writes[needle], "write_holds_key": holds[needle],
        "memories_holding_key": sum(holds),
        "recall_weight_on_key": float(recall[slots].sum()) if slots else 0.0,
        "recall_weight_on_needle": float(recall[needle % capacity]) if answering - needle <= capacity else 0.0,
        "recall_finds_key": bool(slots) and int(recall.argmax()) in slots,
        "recall_top_segment": slot_segment(int(recall.argmax()), answering, capacity),
        "stays_after_needle": sum(w["choice"] == "stay" for w in writes[needle + 1 : answering]),
    }


@torch.inference_mode()
def fresh_writes(model: Any, batch: Any, texts: list[RowText], values: list[str], tracer: Tracer
                 ) -> list[dict[str, Any]]:
    """Each row's needle segment written from a fresh read: the blank memory (what segment 0 reads) with the
    segment's real sensory tokens, instead of the memory recalled in the long context. One backbone step."""
    rows = range(len(texts))
    answering = [answering_segment(batch.targets[r]) for r in rows]
    needles = [texts[r].needle(values[r], answering[r]) for r in rows]
    if min(needles) == 0:  # segment 0 reads the blank memory already, and no sensory tokens
        sys.exit("--fresh-write needs every key past segment 0: use a --depth above 0")
    pick = torch.tensor(needles, device=batch.segments.device)
    ids, lengths = batch.segments[rows, pick], batch.lengths[rows, pick]
    state = model.initial_state(len(texts))
    if model.sensory_tokens:
        before = (pick - 1).clamp(min=0)
        tails = model._tail_ids(batch.segments[rows, before], batch.lengths[rows, before])
        state = replace(state, sensory_ids=tails[:, tails.shape[1] - model.sensory_tokens :])
    tracer.reset()
    model(state, ids, lengths)
    found = []
    for r in rows:
        write = write_of(tracer.writes[0][r], texts[r], needles[r])
        found.append({"needle_segment": needles[r], "fresh_write": write,
                      "fresh_write_holds_key": "span" in write and values[r] in write["span"]})
    return found


def passkey_setup(args: argparse.Namespace, method: dict[str, Any], depths: list[float] | None
                  ) -> tuple[QAConfig, Any, list[Any], Any]:
    """eval-qa's samples (passkey, or ``args.task``) and the method around the backbone with ``args.checkpoint``, as
    eval-qa builds them (``args``: backbone, checkpoint, context_length, samples, device; ``depths`` None: the
    task's own)."""
    config: QAConfig = qa_configs({
        "backbone": args.backbone, "task": getattr(args, "task", "passkey"), "method": method,
        "checkpoint": args.checkpoint,
        "context_length": parse_counts(args.context_length, "--context-length")[0], "limit": args.samples,
        "depths": depths, "device": args.device})[0]
    backbone = load_backbone(config.backbone, dtype=config.dtype, device=config.device)
    options = TaskOptions(tokenizer=backbone.tokenizer, context_length=config.context_length, seed=config.seed,
                          limit=config.limit, depths=config.depths, filler=config.filler)
    task = task_factory(config.task)(options)
    prepared, _ = prepare_samples(task, task.load(), backbone.tokenizer, config.context_length)
    model = build_method(backbone, config.method, config.segment_length, seed=config.seed,
                         checkpoint=config.checkpoint).eval()
    return config, backbone, prepared, model


def passkey_batch(items: list[Any], model: Any, tokenizer: Any) -> tuple[Any, list[str], list[RowText]]:
    """A batch of prepared passkey samples in eval-qa's answer layout, their keys, and each row's text."""
    k = model.sensory_tokens
    batch = qa_batch([i.prompt_ids for i in items], [i.answer_ids for i in items], model.segment_tokens,
                     model.device, k)
    values = [item.sample.answers[0] for item in items]  # the key, or the asked fact's number
    texts = [RowText(batch.segments[r].cpu(), batch.lengths[r].cpu(), tokenizer, model.memory_tokens, k)
             for r in range(len(items))]
    return batch, values, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an HMT checkpoint trained with method.write=span")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--task", choices=("passkey", "multi-fact"), default="passkey")
    parser.add_argument("--context-length", default="16k")
    parser.add_argument("--depth", type=float, default=0.25, help="passkey's (multi-fact: its own three)")
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--span-choice", choices=("soft", "hard"), default="soft")
    parser.add_argument("--recall-choice", choices=("soft", "hard"), default="soft")
    parser.add_argument("--recall-context", type=int, default=None, help="N (default: the checkpoint's)")
    parser.add_argument("--oracle-recall", action="store_true", help="the answering segment recalls the needle's")
    parser.add_argument("--fresh-write", action="store_true",
                        help="only the needle segments' writes, each from a fresh read (the blank memory)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/cpu-memory-trace")
    args = parser.parse_args()
    started = run_start()

    method: dict[str, Any] = {"name": "hmt", "span_choice": args.span_choice, "recall_choice": args.recall_choice}
    if args.recall_context is not None:
        method["recall_context"] = args.recall_context
    multi = args.task == "multi-fact"
    config, backbone, prepared, model = passkey_setup(args, method, None if multi else [args.depth])
    if getattr(model, "span_write", None) is None or model.recall is None:
        sys.exit("memory_trace.py traces HMT (stage 2) with method.write=span; this checkpoint has no span write")
    tracer = Tracer(model)
    capacity = model.config.recall_context
    traces = []
    for indices in batches(prepared, args.batch_size):
        items = [prepared[i] for i in indices]
        batch, values, texts = passkey_batch(items, model, backbone.tokenizer)
        if args.fresh_write:  # the needle segments alone, one step: no pass over the context
            found = fresh_writes(model, batch, texts, values, tracer)
            traces += [{"id": item.sample.id, "key": value, **f} for item, value, f in zip(items, values, found,
                                                                                          strict=True)]
            continue
        tracer.reset()
        exact = exact_answers(model, batch)
        rows = [{"id": item.sample.id, "key": value, "exact": exact[row],
                 **trace_row(row, value, texts[row], batch.targets[row].cpu(), tracer, capacity,
                             tuple(v for v in item.sample.meta["values"] if v != value))}
                for row, (item, value) in enumerate(zip(items, values, strict=True))]
        if args.oracle_recall:  # the same batch again, the answering segment recalling each row's needle memory
            tracer.reset(one_hot_recall(rows, capacity))
            for row, forced in zip(rows, exact_answers(model, batch), strict=True):
                row["exact_oracle_recall"] = forced
        traces += rows
        print(f"{len(traces)}/{len(prepared)} samples, exact so far {sum(t['exact'] for t in traces)}", flush=True)
    summary = summarize(traces)
    name = (f"{config.context_length // 1024}k-{'multi-fact' if multi else f'depth{args.depth:g}'}-{args.span_choice}"
            + ("-recall-hard" if args.recall_choice == "hard" else "")
            + (f"-N{capacity}" if args.recall_context else "") + ("-oracle-recall" if args.oracle_recall else "")
            + ("-fresh-write" if args.fresh_write else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(t) + "\n" for t in traces)
    settings = {"task": args.task, "checkpoint": config.checkpoint, "context_length": config.context_length,
                "depth": None if multi else args.depth,
                "span_choice": args.span_choice, "recall_choice": args.recall_choice, "recall_context": capacity,
                "oracle_recall": args.oracle_recall,
                "fresh_write": args.fresh_write,
                "segment_length": config.segment_length, "device": str(model.device), "dtype": str(model.dtype)}
    record = {**provenance(started_at=started), "settings": settings, "summary": summary}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def one_hot_recall(rows: list[dict[str, Any]], capacity: int) -> Callable[[int], Tensor | None]:
    """Recall weights that put all weight on each row's needle segment, at the segment that answers."""
    answering = rows[0]["answering_segment"]
    if any(r["answering_segment"] != answering for r in rows):
        sys.exit("--oracle-recall needs every sample of a batch to answer in the same segment (one context length)")
    forced = torch.zeros(len(rows), capacity)
    for row, trace in enumerate(rows):
        forced[row, trace["needle_segment"] % capacity] = 1.0
    return lambda segment: forced if segment == answering else None


def summarize(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts with Wilson 95% intervals: exact; key written; recall finds it; exact given each stage held."""

    def share(selected: list[dict[str, Any]], key: str) -> dict[str, Any]:
        hits = sum(bool(t[key]) for t in selected)
        low, high = wilson_interval(hits, len(selected)) if selected else (None, None)
        return {"k": hits, "n": len(selected), "low": low, "high": high}

    if "fresh_write_holds_key" in traces[0]:
        return {"fresh_write_holds_key": share(traces, "fresh_write_holds_key")}
    written = [t for t in traces if t["memories_holding_key"]]
    found = [t for t in written if t["recall_finds_key"]]
    return {
        "exact": share(traces, "exact"),
        "needle_write_holds_key": share(traces, "write_holds_key"),
        "some_memory_holds_key": {"k": len(written), "n": len(traces)},
        "recall_finds_key_given_held": share(written, "recall_finds_key"),
        "exact_given_found": share(found, "exact"),
        "exact_given_held_not_found": share([t for t in written if not t["recall_finds_key"]], "exact"),
        "exact_given_not_held": share([t for t in traces if not t["memories_holding_key"]], "exact"),
        **({"exact_oracle_recall": share(traces, "exact_oracle_recall")} if "exact_oracle_recall" in traces[0] else {}),
        "mean_recall_weight_on_key": sum(t["recall_weight_on_key"] for t in traces) / max(1, len(traces)),
        **({f"recall_top_holds_{kind}": share([{"x": t["recall_top_holds"] == kind} for t in traces], "x")
            for kind in ("asked", "other", "none")} if "recall_top_holds" in traces[0] else {}),
    }


if __name__ == "__main__":
    main()
