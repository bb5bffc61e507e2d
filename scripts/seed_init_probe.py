"""What a training seed's initialisation does at step 0: the span writer's choice and the first gradient, per seed.

    python scripts/seed_init_probe.py --recipe recipes/smollm2-135m-passkey-rmt-span-truncated.yaml \
        --seeds 1,2,3,4,5,6,7,8 --data-seed 2 --rows 32 --out results/cpu-seed-init/rmt.csv

Under the protocol some training seeds never pass the passkey curriculum's first level, and crossing one seed's
initialisation with another's data (``results/h100-seed-split/``) put RMT's block in the initialisation. This builds
each seed's method exactly as ``hmtbench train`` does (the recipe's first stage, LoRA drawn from the seed), reads the
first training batch of ``--data-seed`` (the level's 2-segment samples: the key in segment 1, the question in
segment 2), and measures, before any update:

- ``stay``: the writer's weight on keeping the memory read instead of writing a span (mean over rows);
- ``key_mass``: its weight on the spans that hold the whole key (the m input embeddings ending at a position hold
  every digit of the key), and ``uniform_key_mass``, that mass under uniform weights over the segment's positions;
- ``entropy``: the entropy of its weights over the segment's positions, in nats, against ``log(positions)``;
- ``loss`` and the gradient norms at step 0: of all trainable tensors, of the writer's, and of LoRA's (under
  LoRA's dropout, drawn as training draws it: its own gradient varies with those draws, the writer's does not).

The first training batch (``--rows``, the recipes' 32), one forward and backward per seed, in fp32 on the CPU (the
GPU runs trained in bf16).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
from pathlib import Path

import torch

from hmtbench.answer_layout import answer_first_segments
from hmtbench.backbones import load_backbone
from hmtbench.commands.train import build_for_training, train_config
from hmtbench.config import load_yaml
from hmtbench.results.provenance import git_state
from hmtbench.training.objectives import make_objective
from hmtbench.training.plan import plan_stages


def key_positions(sample, tokenizer) -> tuple[int, int]:
    """[start, end) of the key's digits in the prompt: the value's tokens found inside its needle."""
    value = tokenizer(sample.meta["values"][0], add_special_tokens=False)["input_ids"]
    start, end = sample.meta["needle_starts"][0], sample.meta["needle_ends"][0]
    ids = list(sample.prompt_ids[start:end])
    for offset in range(len(ids) - len(value) + 1):
        if ids[offset:offset + len(value)] == value:
            return start + offset, start + offset + len(value)
    raise ValueError(f"key {sample.meta['values'][0]!r} not found in its needle")


def record_writes(model) -> list[torch.Tensor]:
    """Records the writer's (B, 1 + S) weights at each call, in call order."""
    calls: list[torch.Tensor] = []
    inner = model.span_write.weights

    def recording(*args, **kwargs):
        weights = inner(*args, **kwargs)
        calls.append(weights.detach().float())
        return weights

    model.span_write.weights = recording
    return calls


def probe_seed(recipe: str, seed: int, data_seed: int, rows: int, backbone_spec: str | None,
               chunk: int = 4) -> dict:
    """One seed's measures on the first ``rows`` samples, read ``chunk`` rows at a time (the gradient summed over
    the chunks, each weighted by its share of the answer tokens: the whole batch's gradient, in a CPU's memory)."""
    given = load_yaml(recipe)
    given["train"] = {**given.get("train", {}), "seed": seed, "data_seed": data_seed, "batch_size": chunk,
                      "grad_checkpoint": False}
    if backbone_spec:
        given["backbone"] = backbone_spec
    config = train_config(given, recipe)
    stage = plan_stages(config)[0]
    backbone = load_backbone(config.backbone, dtype="fp32", device="cpu")  # fresh: LoRA goes into it in place
    model = build_for_training(backbone, dataclasses.replace(config, method=stage.method), None)
    objective = make_objective(config, model, backbone, None, stage.level)
    batches = [objective.batch(index, chunk) for index in range(-(-rows // chunk))]  # rows index * chunk + r
    answer_tokens = sum(int(batch[2].sum()) for batch in batches)
    calls = record_writes(model)
    model.train()
    loss, writes = 0.0, []
    for batch in batches:
        calls.clear()
        step = objective.loss(model, *batch)
        share = int(batch[2].sum()) / answer_tokens
        (step.loss * share).backward()
        loss += step.loss.item() * share
        writes.append(calls[0])  # segment 1's write: the memory segment 2 reads

    segment, tokenizer, m = model.segment_tokens, backbone.tokenizer, model.memory_tokens
    prompts = torch.cat([batch[3] for batch in batches])
    first = answer_first_segments(prompts, segment, model.sensory_tokens)
    stay, key_mass, uniform, entropy, log_positions = [], [], [], [], []
    for row in range(len(prompts)):
        weights = writes[row // chunk][row % chunk]
        sample = objective.sampler.sample(row, objective.segments)
        start, end = key_positions(sample, tokenizer)
        size = int(first[row])
        if end > size:
            continue  # the key is in the question's segment (question_segment_share): no write needed
        text = weights[1:size + 1]
        holding = torch.arange(size)
        holds = (holding >= end - 1) & (holding - (m - 1) <= start)  # the span ending there covers every digit
        stay.append(float(weights[0]))
        key_mass.append(float(text[holds].sum()))
        uniform.append(float(holds.sum()) / size * (1 - float(weights[0])))
        spread = text / text.sum()
        entropy.append(float(-(spread * spread.clamp_min(1e-30).log()).sum()))
        log_positions.append(math.log(size))

    def norm(named) -> float:
        return float(torch.sqrt(sum(p.grad.float().pow(2).sum() for _, p in named if p.grad is not None)))

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    mean = statistics.fmean
    return {"seed": seed, "data_seed": data_seed, "rows": len(prompts), "rows_with_earlier_key": len(stay),
            "loss": loss, "stay": mean(stay), "key_mass": mean(key_mass), "uniform_key_mass": mean(uniform),
            "entropy": mean(entropy), "log_positions": mean(log_positions),
            "grad_norm": norm(trainable), "grad_norm_writer": norm([x for x in trainable if "span_write" in x[0]]),
            "grad_norm_lora": norm([x for x in trainable if "lora_" in x[0]])}


MEASURES = {"loss": "loss", "stay": "stay", "key_ratio": "key mass / uniform", "entropy": "entropy",
            "grad_norm": "grad norm", "grad_norm_writer": "writer's", "grad_norm_lora": "LoRA's"}


def table(path: Path, learned: set[int]) -> str:
    """A probe's CSV as a markdown table, with each measure's exact two-sided Mann-Whitney p, seeds that learned
    (``learned``) against the rest."""
    import pandas as pd
    from scipy.stats import mannwhitneyu

    runs = pd.read_csv(path).assign(learned=lambda d: d.seed.isin(learned))
    runs["key_ratio"] = runs.key_mass / runs.uniform_key_mass
    formats = {"loss": ".3f", "stay": ".4f", "key_ratio": ".2f", "entropy": ".3f", "grad_norm": ".1f",
               "grad_norm_writer": ".1f", "grad_norm_lora": ".2f"}
    lines = ["| seed | learned | " + " | ".join(MEASURES.values()) + " |", "| --: | :-: |" + " --: |" * len(MEASURES)]
    for _, run in runs.iterrows():
        cells = [format(run[key], formats[key]) for key in MEASURES]
        lines.append(f"| {run.seed} | {'yes' if run.learned else 'no'} | " + " | ".join(cells) + " |")
    yes, no = runs[runs.learned], runs[~runs.learned]
    tests = [f"{label} p = {mannwhitneyu(yes[key], no[key], method='exact').pvalue:.2g}"
             for key, label in MEASURES.items()]
    return "\n".join(lines) + (f"\n\nMann-Whitney, exact, two-sided, learned (n = {len(yes)}) against not "
                               f"(n = {len(no)}): " + ", ".join(tests) + f"; entropy of at most "
                               f"{runs.log_positions.mean():.3f} (uniform); code {', '.join(runs.git_commit.unique())}"
                               f" (dirty: {', '.join(map(str, runs.git_dirty.unique()))})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", help="a span-write passkey recipe (RMT or HMT)")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7,8")
    parser.add_argument("--data-seed", type=int, default=None, help="every seed reads this seed's data (unset: own)")
    parser.add_argument("--rows", type=int, default=32, help="rows of the first batch (the recipes' batch: 32)")
    parser.add_argument("--backbone", default=None, help="instead of the recipe's (random:llama for a smoke run)")
    parser.add_argument("--out", type=Path, help="CSV, one row per seed (with the code's commit)")
    parser.add_argument("--table", type=Path, help="instead of probing: this CSV as a table, with --learned")
    parser.add_argument("--learned", default="", help="with --table: the seeds whose training passed the level")
    args = parser.parse_args()
    if args.table:
        if not args.table.is_file():
            parser.error(f"--table {args.table}: no such file")
        print(table(args.table, {int(s) for s in args.learned.split(",") if s}))
        return
    if not (args.recipe and args.out):
        parser.error("--recipe and --out are required (or --table CSV --learned SEEDS)")

    torch.use_deterministic_algorithms(True)
    commit, dirty = git_state()
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        row = {**probe_seed(args.recipe, seed, args.data_seed or seed, args.rows, args.backbone),
               "recipe": args.recipe, "git_commit": commit, "git_dirty": dirty}
        print(", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)


if __name__ == "__main__":
    main()
