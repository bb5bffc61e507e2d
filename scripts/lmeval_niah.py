#!/usr/bin/env python3
"""Write offline needle-in-a-haystack tasks for `lm_eval --model hmtbench` (passkey retrieval at given lengths).

Each context length gets <out>/hmtbench_passkey_<length>.jsonl (eval-qa's passkey samples, sized in
the backbone's tokens) and a task YAML that scores generate_until by exact match of the first number.

    python scripts/lmeval_niah.py --backbone llama2-7b --context-length 4096,16384 --out lmeval_tasks
    python -m hmtbench.lmeval --model hmtbench \
        --model_args backbone=llama2-7b,method=hmt,checkpoint=CKPT,segment_length=1024,dtype=bf16 \
        --include_path lmeval_tasks --tasks hmtbench_passkey_4096,hmtbench_passkey_16384 --output_path results/lmeval
"""

from __future__ import annotations

import argparse
import shlex

from hmtbench.lmeval.passkey import write_needle_task


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True, help="the backbone whose tokens size the contexts")
    parser.add_argument("--context-length", required=True, help="prompt tokens, one or a comma list: 4096,16384")
    parser.add_argument("--task", default="passkey", help="passkey or multi-fact (hmtbench's needle tasks)")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--depths", default=None, help="where the needle goes, fractions: 0,0.25,0.5,0.75,1")
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--filler", default="pydoc-topics", help="the local corpus the needle hides in")
    parser.add_argument("--out", default="lmeval_tasks", help="folder for the JSONL and YAML files (--include_path)")
    args = parser.parse_args(argv)
    depths = [float(d) for d in args.depths.split(",")] if args.depths else None
    names = []
    for length in (int(n) for n in args.context_length.split(",")):
        name, path = write_needle_task(args.out, args.backbone, length, task=args.task, samples=args.samples,
                                       seed=args.seed, depths=depths, filler=args.filler)
        print(f"wrote {path}")
        names.append(name)
    command = ["python", "-m", "hmtbench.lmeval", "--model", "hmtbench", "--model_args",
               f"backbone={args.backbone},method=hmt,checkpoint=CKPT,segment_length=1024",
               "--include_path", args.out, "--tasks", ",".join(names), "--output_path", "results/lmeval"]
    print("run with:", shlex.join(command))
    return names


if __name__ == "__main__":
    main()
