#!/usr/bin/env bash
# The GPU evidence run for issues 3 and 4 (one H100/H200, SmolLM2-135M, python-stdlib corpus):
#   1. eval-ppl of plain / full / untrained RMT / untrained HMT on 2000-token held-out documents;
#   2. RMT and HMT (stages 1+2) trained with the same 300-step budget on the train split (in parallel);
#   3. eval-ppl of plain, trained RMT and trained HMT on the same held-out documents.
# Usage: HMTBENCH_MODEL_DIR=/root/models scripts/gpu_smollm2_evidence.sh OUTDIR
set -euo pipefail
out=${1:?output folder}
mkdir -p "$out"
hb() { python3 -m hmtbench "$@"; }
common=(--backbone smollm2-135m --dataset python-stdlib --split test --test-length 2000 --batch-size 8)
hb eval-ppl "${common[@]}" --method plain,full,rmt,hmt --sensory-tokens 32 --recall-hidden-dim 1536 \
   --out "$out/results/eval-untrained" 2>&1 | tail -15
hb train --recipe recipes/smollm2-135m-stdlib-rmt.yaml --output-dir "$out/runs/rmt" --out "$out/results/train" \
   > "$out/train-rmt.log" 2>&1 &
hb train --recipe recipes/smollm2-135m-stdlib-hmt.yaml --output-dir "$out/runs/hmt" --out "$out/results/train" \
   > "$out/train-hmt.log" 2>&1 &
wait
tail -n 3 "$out/train-rmt.log" "$out/train-hmt.log"
hb eval-ppl "${common[@]}" --method plain --out "$out/results/eval-trained" 2>&1 | tail -3
hb eval-ppl "${common[@]}" --method rmt --checkpoint "$out/runs/rmt/train/final" --out "$out/results/eval-trained" 2>&1 | tail -3
hb eval-ppl "${common[@]}" --method hmt --checkpoint "$out/runs/hmt/stage2/final" --out "$out/results/eval-trained" 2>&1 | tail -3
hb eval-ppl "${common[@]}" --method hmt --checkpoint "$out/runs/hmt/stage1/final" --out "$out/results/eval-trained" 2>&1 | tail -3
