#!/usr/bin/env bash
# ARMT's speed and memory rows beside plain, RMT and HMT (issue 35), in one device call: SmolLM2-135M's shape with
# random weights (speed and memory do not depend on the weights; no staging), --compile --cuda-graphs, each method
# with its recipe's settings (HMT k 32; ARMT 10 memory tokens, d_key 64). Records are packed into OUT/armt-bench.tgz
# after each step, so a call stopped at its limit keeps what ended. Run from the checkout root:
#   bash scripts/gpu/armt-bench.sh OUT [WORK]        (STEPS=eval,train-lora: only those steps)
# Smaller settings (a CPU): BACKBONE=random:llama LENGTHS=1k,4k FAST= DEVICE=cpu bash ... OUT WORK
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/root/work/armt-bench}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/bench" "$work/logs" "$out"
pack() { tar czf "$out/armt-bench.tgz" -C "$work" bench logs; }
SHOW="tok/s|skipped" SHOW_LINES=16
source scripts/gpu/step.sh
hb=(${PYTHON:-python3} -m hmtbench bench --backbone "${BACKBONE:-random:smollm2-135m}" --segment-length 256
    --sensory-tokens 32 --device "${DEVICE:-auto}" ${FAST---compile --cuda-graphs})
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
step eval 240 "${hb[@]}" --method plain,rmt,hmt,armt --mode eval --batch-size 1,64 --lengths "${LENGTHS:-4k,64k}" \
  --repeat 2 --out "$work/bench/eval"
step train-lora 120 "${hb[@]}" --method rmt,hmt,armt --mode train --train lora --bptt-depth 6 --batch-size 1,32 \
  --repeat 2 --out "$work/bench/train"
step train-full 120 "${hb[@]}" --method rmt,hmt,armt --mode train --train full --bptt-depth 6 --batch-size 32 \
  --repeat 2 --out "$work/bench/train"
