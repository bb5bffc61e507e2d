#!/usr/bin/env bash
# Continues the span-write HMT checkpoint (results/h200-retrieval-span) on passkey contexts of 8, 16 and 32
# segments (2k-8k tokens; the first training stopped at 8), then evaluates it at 16k and 64k with the soft and
# the hard choices. In the foreground of one device call, from the checkout root on the GPU machine, after
# scripts/gpu/stage.sh, with HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/long-curriculum.sh WORK MINUTES
set -euo pipefail
work=$1 minutes=$2
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
start=results/h200-retrieval-span/runs/hmt-span-lora/stage2/final
run=$work/runs/hmt-span-lora-long
mkdir -p "$work/logs" "$work/results"
python3 -m hmtbench train --recipe recipes/smollm2-135m-passkey-hmt-span.yaml --init-from "$start" \
  --curriculum 8,16,32 --lr 5e-4 --warmup-steps 5 --max-minutes "$minutes" --checkpoint-every 1000 \
  --output-dir "$run" --out "$work/results/train" 2>&1 | tee "$work/logs/train-long.log" | grep -v "^\s*$" | tail -8
grep -h "advanced_to" "$run"/*/log.jsonl | cut -c1-120 || true
for choice in soft hard; do
  python3 -m hmtbench eval-qa --task passkey --backbone smollm2-135m --segment-length 256 --limit 125 \
    --batch-size 125 --depth 0,0.25,0.5,0.75,1 --context-length 16k,64k --method hmt --checkpoint "$run/stage2/final" \
    --set method.span_choice=$choice --set method.recall_choice=$choice --recall-context 6000 \
    --out "$work/results/passkey-hmt-long-$choice" 2>&1 | tee "$work/logs/eval-long-$choice.log" | grep "accuracy"
done
