#!/usr/bin/env bash
# The training step compiled (`--compile`: the backbone's blocks, with their LoRA layers, and the loss through
# torch.compile) against eager, at the 7B shape and SmolLM2's, in one device call; run from the checkout root.
# Records are packed into OUT/compiled-train.tgz after each step, so a call stopped at its limit keeps what ended.
#   bash scripts/gpu/compiled-train.sh OUT [WORK]
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/tmp/compiled-train}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/bench" "$work/logs"
HMT=(--method hmt --sensory-tokens 32 --recall-hidden-dim 1536 --mode train --repeat 2)
step() {
  local name=$1; shift
  echo "== $name: $*"
  timeout -k 5 170 python3 -m hmtbench "$@" --out "$work/bench/$name" > "$work/logs/$name.log" 2>&1; echo "   exit $?"
  grep -E "tok/s|skipped|failed|rror" "$work/logs/$name.log" | cut -c1-200 | tail -n 8
  tar czf "$out/compiled-train.tgz" -C "$work" bench logs
}
step train-7b-compiled bench --backbone random:llama-7b --train lora --bptt-depth 6 --batch-size 1,8 --compile "${HMT[@]}"
step ckpt-7b-compiled bench --backbone random:llama-7b --train lora --bptt-depth 24 --grad-checkpoint --batch-size 4 \
  --compile "${HMT[@]}"
step train-smollm2-compiled bench --backbone random:smollm2-135m --train memory --bptt-depth 6 --batch-size 1,32 \
  --compile "${HMT[@]}"
ls -la "$out"
