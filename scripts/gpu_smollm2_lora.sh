#!/usr/bin/env bash
# GPU evidence for issue 4: plain, RMT and HMT each trained with LoRA for the same 300-step budget on the
# python-stdlib train split (three processes share the GPU), then eval-ppl on the held-out test split.
# Usage: HMTBENCH_MODEL_DIR=/root/models scripts/gpu_smollm2_lora.sh OUTDIR
set -euo pipefail
out=${1:?output folder}
mkdir -p "$out"
hb() { python3 -m hmtbench "$@"; }
for m in plain rmt hmt; do
  hb train --recipe "recipes/smollm2-135m-stdlib-$m-lora.yaml" --output-dir "$out/runs/$m" --out "$out/results/train-lora" \
     > "$out/train-$m.log" 2>&1 &
done
wait
grep -h "success\|error" "$out"/train-*.log
common=(--backbone smollm2-135m --dataset python-stdlib --split test --test-length 2000 --batch-size 8
        --out "$out/results/eval-trained-lora")
hb eval-ppl "${common[@]}" --method plain --checkpoint "$out/runs/plain/train/final" 2>&1 | grep "ppl "
hb eval-ppl "${common[@]}" --method rmt --checkpoint "$out/runs/rmt/train/final" 2>&1 | grep "ppl "
hb eval-ppl "${common[@]}" --method hmt --checkpoint "$out/runs/hmt/stage2/final" 2>&1 | grep "ppl "
hb eval-ppl "${common[@]}" --method hmt --checkpoint "$out/runs/hmt/stage1/final" 2>&1 | grep "ppl "
