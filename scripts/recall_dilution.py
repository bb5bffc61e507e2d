"""Does HMT's soft recall lose a passkey to the sheer number of cached memories? A dilution test on short contexts.

    python scripts/recall_dilution.py --checkpoint results/h200-long-curriculum/runs/hmt-span-lora-long/stage2/final \
        --context-length 4k --depths 0.25,0.5,0.75 --samples 24 --cache 16,64,256,1024,4096,16384 \
        --out results/cpu-recall-dilution

At 1M tokens recall weighs 5,461 cached memories (192 text tokens a segment), 171 times the 32 of the longest
training context. Evaluating at 1M
costs ~9 minutes of H200 per 125 samples; this test asks the same question on a 4k context (one pass over it per
sample): the context is read once, then the answering segment(s) recall from the cache as if it held N memories,
the needle segment's memory and N - 1 copies of the context's other memories (each of the n - 1 others counted
(N - 1) / (n - 1) times: a log-count added to its recall score, which is exactly the softmax over those copies).
If dilution alone explains the fall from 256k to 1M, accuracy here falls at the same N (1,365 and 5,461). Per N:
exact answers (eval-qa's teacher-forced greedy), Wilson 95%, the mean recall weight on the needle memory, and
whether that memory has the largest score (what ``recall_choice=hard`` takes, at any N: copies tie their originals;
so the sweep is for soft recall, ``--recall-choice hard`` only checks the hard answers), and how far the needle's
score stands above the others (the margin over the best, and z over their spread: for N *different* memories
scoring like these, normal scores keep the needle on top with probability Phi(z)^(N-1), an estimate for hard recall
at 256k and 1M). A run writes ``<name>.jsonl``
(a line per sample and N) and ``<name>.json`` (counts, settings, commit) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_trace import answering_segment, passkey_batch, passkey_setup  # noqa: E402

from hmtbench.methods.choice import chosen  # noqa: E402
from hmtbench.qa.answers import exact_rows  # noqa: E402
from hmtbench.qa.runner import batches  # noqa: E402
from hmtbench.results.provenance import provenance, run_start  # noqa: E402
from hmtbench.stats import wilson_interval  # noqa: E402


class DilutedRecall:
    """Replaces ``model.recall.forward``: with ``cached`` set, every valid slot but each row's needle slot counts as
    many times as makes ``cached`` memories in all (soft recall; hard recall's argmax is the same at any count)."""

    def __init__(self, recall: Any) -> None:
        self.recall = recall
        self.needle_slots: Tensor | None = None  # (B,) long
        self.cached = 0  # N to emulate; 0 = the model's own recall
        self.last: tuple[Tensor, Tensor] | None = None  # (weights, undiluted scores) of the last call
        recall.forward = self

    def __call__(self, summary: Tensor, cache: Any) -> tuple[Tensor, Tensor]:
        scores = self.recall.scores(summary, cache)
        biased = scores
        if self.cached and self.recall.choice == "soft":  # hard: copies tie their originals, the argmax stays
            others = int(cache.valid.sum()) - 1
            bias = torch.full_like(scores, math.log(max(self.cached - 1, 1) / max(others, 1)))
            bias.scatter_(1, self.needle_slots[:, None], 0.0)
            biased = scores + bias
        weights = chosen(biased.softmax(dim=-1), self.recall.choice)
        self.last = (weights, scores)
        return self.recall.read(weights, cache), weights


@torch.inference_mode()
def context_state(model: Any, batch: Any, first: int) -> tuple[Any, Tensor | None]:
    """The state after the context segments (before the first answering one), and every segment's summary."""
    summaries = model.summarize(batch.segments, batch.known)
    state = model.initial_state(batch.segments.shape[0])
    for i in range(first):
        summary = None if summaries is None else summaries[:, i]
        _, state = model.score(state, batch.segments[:, i], batch.lengths[:, i], None, summary)
    return state, summaries


@torch.inference_mode()
def answer_from(model: Any, batch: Any, state: Any, summaries: Tensor | None, first: int) -> list[bool]:
    """Each row's answer from ``state`` on (the answering segments only), exact or not."""
    predicted = torch.full_like(batch.targets, -1)
    for i in range(first, batch.segments.shape[1]):
        summary = None if summaries is None else summaries[:, i]
        _, predicted[:, i], state = model.predict(state, batch.segments[:, i], batch.lengths[:, i],
                                                  batch.targets[:, i], summary)
    return exact_rows(batch, predicted).cpu().tolist()


def needle_margins(scores: Tensor, needle_slots: Tensor) -> list[dict[str, float]]:
    """Per row: the needle's recall score above the best other memory's, and in standard deviations of the other
    memories' scores above their mean (z). For hard recall among M different memories whose scores spread as these
    do, the needle stays on top with probability Phi(z)^M (normal scores, an estimate)."""
    rows = []
    for row, slot in enumerate(needle_slots.tolist()):
        valid = torch.isfinite(scores[row])
        others = scores[row][valid & (torch.arange(scores.shape[1], device=scores.device) != slot)].float()
        needle = float(scores[row, slot])
        z = (needle - float(others.mean())) / max(float(others.std()), 1e-6)
        rows.append({"needle_margin": needle - float(others.max()), "needle_z": z})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an HMT checkpoint (stage 2)")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--context-length", default="4k")
    parser.add_argument("--depths", default="0.25,0.5,0.75")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--cache", default="16,64,256,1024,4096,16384", help="the N memories to emulate")
    parser.add_argument("--recall-choice", choices=("soft", "hard"), default="soft")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="results/cpu-recall-dilution")
    args = parser.parse_args()
    started = run_start()
    sizes = [int(n) for n in args.cache.split(",")]
    config, backbone, prepared, model = passkey_setup(args, {"name": "hmt", "recall_choice": args.recall_choice},
                                                      [float(d) for d in args.depths.split(",")])
    if model.recall is None:
        sys.exit("recall_dilution.py needs HMT with recall (stage 2)")
    recall = DilutedRecall(model.recall)
    capacity = model.config.recall_context
    lines = []
    for indices in batches(prepared, args.batch_size):
        items = [prepared[i] for i in indices]
        batch, values, texts = passkey_batch(items, model, backbone.tokenizer)
        first = answering_segment(batch.targets[0].cpu())
        if first >= capacity:
            sys.exit(f"the context has {first} segments before the answer, more than the cache's {capacity}")
        needles = [text.needle(value, first) for text, value in zip(texts, values, strict=True)]
        recall.needle_slots = torch.tensor(needles, device=model.device) % capacity
        state, summaries = context_state(model, batch, first)
        for cached in [0, *sizes]:
            recall.cached = cached
            exact = answer_from(model, batch, state, summaries, first)
            weights, scores = recall.last
            on_needle = weights.gather(1, recall.needle_slots[:, None])[:, 0].float().cpu()
            top = (scores.argmax(1) == recall.needle_slots).cpu()  # copies tie their originals: hard recall at any N
            margins = needle_margins(scores, recall.needle_slots)
            lines += [{"id": item.sample.id, "depth": item.sample.meta["depth"], "needle_segment": needles[r],
                       "memories": cached or first, "emulated": bool(cached), "exact": exact[r],
                       "weight_on_needle": float(on_needle[r]), "needle_is_top": bool(top[r]), **margins[r]}
                      for r, item in enumerate(items)]
        print(f"{len(lines) // (len(sizes) + 1)}/{len(prepared)} samples", flush=True)
    summary = summarize(lines)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{config.context_length // 1024}k-{args.recall_choice}"
    with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    settings = {"checkpoint": config.checkpoint, "context_length": config.context_length, "depths": config.depths,
                "recall_choice": args.recall_choice, "cache": sizes, "samples": len(prepared),
                "segment_length": config.segment_length, "device": str(model.device), "dtype": str(model.dtype)}
    (out / f"{name}.json").write_text(json.dumps({**provenance(started_at=started), "settings": settings,
                                                  "summary": summary}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def summarize(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per emulated N (the model's own cache first): exact with its Wilson 95%, mean weight on the needle, top."""
    rows = []
    for key in dict.fromkeys((line["emulated"], line["memories"]) for line in lines):
        selected = [line for line in lines if (line["emulated"], line["memories"]) == key]
        hits = sum(line["exact"] for line in selected)
        low, high = wilson_interval(hits, len(selected))
        rows.append({"memories": key[1] if key[0] else "own cache", "exact": hits, "n": len(selected),
                     "low": low, "high": high,
                     "mean_weight_on_needle": sum(line["weight_on_needle"] for line in selected) / len(selected),
                     "needle_is_top": sum(line["needle_is_top"] for line in selected)})
    own = [line for line in lines if not line["emulated"]]
    z = sorted(line["needle_z"] for line in own)
    rows.append({"needle_z_min": z[0], "needle_z_median": z[len(z) // 2],
                 "needle_margin_min": min(line["needle_margin"] for line in own),
                 "estimated_hard_top_among": {m: sum(NormalDist().cdf(v) ** (m - 1) for v in z) / len(z)
                                              for m in (1365, 5461)}})
    return rows


if __name__ == "__main__":
    main()
