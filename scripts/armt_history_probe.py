"""How much history a memory's answer survives: the passkeys that sit in the question's own segment (depth 1), read
again with only the last K segments of their prompt, K from one segment to all of them.

Every K holds the key (it is in the last segment), so only the history before the question's segment changes: the
same samples, the same checkpoint, the same last segment. A method that reads the segment's own text answers at
every K; one whose memory drowns the segment fails from some K on. Answers are teacher-forced (exact: every answer
token the argmax, the answer's end included), so each K is one batched read of the cut prompts.

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python scripts/armt_history_probe.py RUN/train/final \\
        --filler results/cpu-protocol-baselines-paired/pydoc-topics-3.12.3.jsonl --context-length 16384 \\
        --history 1,2,4,8,16,32,0 --out results/cpu-armt-history/seed1-16k.csv

``--history 0`` reads the whole prompt. ``exact_samples`` names the samples each K answers, so two K's can be
compared paired (McNemar) on the same samples. The samples are eval-qa's (``--split``, seed 3407, 125 passkeys at depths
0, 0.25, 0.5, 0.75 and 1): with the GPU's filler file they are the protocol table's samples, whose depth-1 keys
this probe reads.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from hmtbench.answer_layout import ANSWER_ROOM
from hmtbench.backbones import load_backbone
from hmtbench.build import build_method
from hmtbench.checkpoints import read_meta, tensors_sha256
from hmtbench.config import SEED, method_config
from hmtbench.qa.answers import score_answers
from hmtbench.qa.runner import prepare_samples
from hmtbench.qa.tasks import TaskOptions, load_task
from hmtbench.results.provenance import git_state

DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]  # the protocol's: every fifth sample sits at depth 1


def history_prompt(prompt: torch.Tensor, segments: int, segment_tokens: int) -> torch.Tensor:
    """The prompt's last ``segments`` segments as the answer layout cuts them (the prompt ends ``ANSWER_ROOM``
    positions before its segment's end); 0 or more than it has: the whole prompt."""
    keep = segments * segment_tokens - ANSWER_ROOM
    return prompt if segments < 1 or keep >= len(prompt) else prompt[-keep:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a final checkpoint folder written by hmtbench train")
    parser.add_argument("--context-length", type=int, default=16384)
    parser.add_argument("--history", default="1,2,4,8,16,32,0", help="segments kept before the answer (0: all)")
    parser.add_argument("--filler", default="pydoc-topics")
    parser.add_argument("--split", default="test")
    parser.add_argument("--segment-length", type=int, default=256)
    parser.add_argument("--out", required=True, help="CSV: one row per history")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    meta = read_meta(args.checkpoint)
    backbone = load_backbone(meta["backbone"], dtype="fp32", device="cpu")
    trained = dict(meta["method"])
    config = method_config(trained.pop("name"), trained)
    options = TaskOptions(tokenizer=backbone.tokenizer, context_length=args.context_length, seed=SEED, limit=125,
                          data=None, depths=DEPTHS, filler=args.filler, split=args.split)
    task = load_task("passkey", options)
    prepared, _ = prepare_samples(task, task.load(), backbone.tokenizer, args.context_length)
    local = [p for p in prepared if p.sample.meta["depth"] == 1.0]
    longest = max(len(p.prompt_ids) + len(p.answer_ids) for p in local)
    model = build_method(backbone, config, args.segment_length, seed=SEED, document_length=longest,
                         checkpoint=args.checkpoint, most_tokens=longest)
    model.eval()
    commit, dirty = git_state()
    checkpoint = tensors_sha256(args.checkpoint)[:16]
    answers = [p.answer_ids for p in local]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["history_segments", "prompt_tokens", "samples", "exact", "answer_nll_per_token", "seconds",
                         "context_length", "checkpoint_sha256", "git_commit", "git_dirty", "exact_samples"])
        for segments in (int(s) for s in args.history.split(",")):
            prompts = [history_prompt(p.prompt_ids, segments, model.segment_tokens) for p in local]
            began = time.perf_counter()
            scores = score_answers(model, model, prompts, answers)
            right = [p.sample.id for p, score in zip(local, scores, strict=True) if score.exact(p.answer_ids)]
            exact = len(right)
            nll = sum(s.nll for s in scores) / sum(s.tokens for s in scores)
            row = [segments or "all", max(len(p) for p in prompts), len(local), exact, f"{nll:.4f}",
                   f"{time.perf_counter() - began:.1f}"]
            writer.writerow([*row, args.context_length, checkpoint, commit, dirty, ";".join(right)])
            handle.flush()
            print(dict(zip(["history_segments", "prompt_tokens", "samples", "exact", "nll", "seconds"], row,
                           strict=True)), flush=True)


if __name__ == "__main__":
    main()
