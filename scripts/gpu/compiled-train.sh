#!/usr/bin/env bash
# The training step compiled (`--compile`: the backbone's blocks, with their LoRA layers, and the loss through
# torch.compile) against eager, at the 7B shape and SmolLM2's, in one device call; run from the checkout root.
# Records are packed into OUT/compiled-train.tgz after each step, so a call stopped at its limit keeps what ended.
#   bash scripts/gpu/compiled-train.sh OUT [WORK]
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/tmp/compiled-train}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/bench" "$work/logs" "$out"
HMT=(--method hmt --sensory-tokens 32 --recall-hidden-dim 1536 --mode train --repeat 2)
pack() { tar czf "$out/compiled-train.tgz" -C "$work" bench logs; }
SHOW="tok/s|skipped|failed" SHOW_LINES=8
source scripts/gpu/step.sh
hb=(python3 -m hmtbench bench)
step train-7b-compiled 170 "${hb[@]}" --backbone random:llama-7b --train lora --bptt-depth 6 --batch-size 1,8 \
  --compile "${HMT[@]}" --out "$work/bench/train-7b-compiled"
step ckpt-7b-compiled 170 "${hb[@]}" --backbone random:llama-7b --train lora --bptt-depth 24 --grad-checkpoint \
  --batch-size 4 --compile "${HMT[@]}" --out "$work/bench/ckpt-7b-compiled"
step train-smollm2-compiled 170 "${hb[@]}" --backbone random:smollm2-135m --train memory --bptt-depth 6 \
  --batch-size 1,32 --compile "${HMT[@]}" --out "$work/bench/train-smollm2-compiled"
ls -la "$out"
