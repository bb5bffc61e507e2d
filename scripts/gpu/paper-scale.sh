#!/usr/bin/env bash
# Speed and memory at the paper's scale (random weights of published shapes: no download), on one GPU, in one
# device call; run from the checkout root. After each step the records so far are packed into OUT/paper-scale.tgz,
# so a call stopped at its time limit still brings back what finished.
#   bash scripts/gpu/paper-scale.sh OUT [WORK]
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/tmp/paper-scale}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/bench" "$work/logs" "$out"
HMT=(--sensory-tokens 32 --recall-hidden-dim 1536)  # the paper's k; the reference scripts' h
B7=random:llama-7b
pack() { tar czf "$out/paper-scale.tgz" -C "$work" bench logs $(cd "$work" && ls profile-*.json 2>/dev/null); }
SHOW="tok/s|skipped|failed|passed|ms,|% of the step|idle" SHOW_LINES=24
source scripts/gpu/step.sh
hb=(python3 -m hmtbench)

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
step sync 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_sync.py
# 7B training (LoRA r 8 on q/v, peft's default for Llama; D = 6), RMT and HMT, batch 1 to 16
step train-7b 200 "${hb[@]}" bench --backbone $B7 --method rmt,hmt --mode train --train lora --bptt-depth 6 \
  --batch-size 1,4,8,16 "${HMT[@]}" --repeat 2 --out "$work/bench/train-7b"
# activation checkpointing: D = 24 at the batches where D = 6 fits without it, and D = 6 with it (its own cost)
step ckpt-7b-d24 150 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 24 \
  --grad-checkpoint --batch-size 4,16 "${HMT[@]}" --repeat 2 --out "$work/bench/ckpt-7b"
step ckpt-7b-d6 100 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 6 \
  --grad-checkpoint --batch-size 16 "${HMT[@]}" --repeat 2 --out "$work/bench/ckpt-7b"
step profile-7b-b4 120 python3 -m hmtbench profile --mode train --backbone $B7 --method hmt --train lora \
  --batch-size 4 --bptt-depth 6 --sensory-tokens 32 --recall-hidden-dim 1536 --warmup 2 \
  --json "$work/profile-7b-hmt-lora-b4.json"
step profile-7b-b1 120 python3 -m hmtbench profile --mode train --backbone $B7 --method hmt --train lora \
  --batch-size 1 --bptt-depth 6 --sensory-tokens 32 --recall-hidden-dim 1536 --warmup 2 \
  --json "$work/profile-7b-hmt-lora-b1.json"
# 7B evaluation at batch 1 (graphed steps) from 4k to 1M tokens, and at large batches
step eval-7b-b1 330 "${hb[@]}" bench --backbone $B7 --method plain,hmt --mode eval --batch-size 1 \
  --lengths 4k,1m --cuda-graphs --no-compile "${HMT[@]}" --repeat 1 --out "$work/bench/eval-7b-b1"
step eval-7b-batch 200 "${hb[@]}" bench --backbone $B7 --method hmt --mode eval --batch-size 16,64 --lengths 16k \
  "${HMT[@]}" --repeat 1 --out "$work/bench/eval-7b-batch"
# SmolLM2-135M's shape: memory training, batch 1 to 256
step train-smollm2 180 "${hb[@]}" bench --backbone random:smollm2-135m --method rmt,hmt --mode train --train memory \
  --bptt-depth 6 --batch-size 1,32,128,256 "${HMT[@]}" --repeat 2 --out "$work/bench/train-smollm2"
ls -la "$out"
