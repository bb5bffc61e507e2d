#!/usr/bin/env bash
# The span-write HMT checkpoint (results/h200-retrieval-span) evaluated with both hard choices, in the foreground
# of one device call (a call that leaves jobs running loses the next call). From the checkout root on the GPU
# machine, after scripts/gpu/stage.sh, with HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/hard-choices.sh WORK LENGTHS [LIMIT DEPTHS] [trace]
#     passkey at LENGTHS (e.g. 1k,4k,16k,64k), LIMIT samples (125) cycling through DEPTHS (0,0.25,0.5,0.75,1);
#     with `trace`, also the memory trace of 25 samples at 16k, depth 0.25, soft and hard, in the GPU's bf16.
# Records and logs go to WORK/results and WORK/logs; pack them with `tar` into the device tool's OUT.
set -euo pipefail
work=$1 lengths=$2 limit=${3:-125} depths=${4:-0,0.25,0.5,0.75,1} trace=${5:-}
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
ckpt=results/h200-retrieval-span/runs/hmt-span-lora/stage2/final
hard=(--set method.span_choice=hard --set method.recall_choice=hard)
mkdir -p "$work/logs" "$work/results"
tag=${lengths//,/-}
python3 -m hmtbench eval-qa --task passkey --backbone smollm2-135m --segment-length 256 --limit "$limit" \
  --batch-size "$limit" --depth "$depths" --context-length "$lengths" --method hmt --checkpoint "$ckpt" \
  "${hard[@]}" --recall-context 6000 --out "$work/results/passkey-hmt-hard" 2>&1 \
  | tee "$work/logs/eval-passkey-hmt-hard-$tag.log" | grep -v "^\s*$" | tail -30
if [ "$trace" = trace ]; then
  for choice in soft hard; do
    python3 scripts/memory_trace.py --checkpoint "$ckpt" --context-length 16k --depth 0.25 --samples 25 \
      --span-choice $choice --recall-choice $choice --out "$work/results/trace-16k-$choice" 2>&1 \
      | tee "$work/logs/trace-16k-$choice.log" | tail -12
  done
fi
