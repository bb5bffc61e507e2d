#!/usr/bin/env bash
# The training step replayed from CUDA graphs (`--cuda-graphs`, with `--compile`) at the 7B shape and SmolLM2's,
# random weights (no staging), in one device call; run from the checkout root. Records are packed into
# OUT/graphed-train.tgz after each step, so a call stopped at its limit keeps what ended.
#   bash scripts/gpu/graphed-train.sh OUT [WORK] [PART]   PART: tests | train (default) | eval | recompute | recompute-memory | ratio | summary | profile
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/root/work/graphed-train} part=${3:-train}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/bench" "$work/logs" "$out"
HMT=(--sensory-tokens 32 --recall-hidden-dim 1536)  # the paper's k; the reference scripts' h
FAST=(--compile --cuda-graphs)
B7=random:llama-7b
pack() { tar czf "$out/graphed-train-$part.tgz" -C "$work" bench logs $(cd "$work" && ls profile-*.json 2>/dev/null); }
SHOW="tok/s|skipped|failed|passed|ms,|% of the step|idle|capture" SHOW_LINES=24
source scripts/gpu/step.sh
hb=(python3 -m hmtbench)

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
case $part in
tests)
  step gpu-tests 90 python3 -m pytest -q -p no:cacheprovider tests/test_graphed_training.py tests/test_gpu_sync.py ;;
train)
  step train-smollm2 180 "${hb[@]}" bench --backbone random:smollm2-135m --method rmt,hmt --mode train --train memory \
    --bptt-depth 6 --batch-size 1,32,128 "${HMT[@]}" "${FAST[@]}" --repeat 3 --out "$work/bench/train-smollm2"
  step train-7b 200 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 6 \
    --batch-size 1,8,12 "${HMT[@]}" "${FAST[@]}" --repeat 2 --out "$work/bench/train-7b"
  step ckpt-7b 120 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 24 \
    --grad-checkpoint --batch-size 8 "${HMT[@]}" "${FAST[@]}" --repeat 2 --out "$work/bench/ckpt-7b" ;;
eval)
  step eval-7b-b1 330 "${hb[@]}" bench --backbone $B7 --method plain,hmt --mode eval --batch-size 1 --lengths 4k,1m \
    "${FAST[@]}" "${HMT[@]}" --repeat 1 --out "$work/bench/eval-7b-b1"
  step eval-7b-batch 200 "${hb[@]}" bench --backbone $B7 --method hmt --mode eval --batch-size 16,64 --lengths 16k \
    "${FAST[@]}" "${HMT[@]}" --repeat 1 --out "$work/bench/eval-7b-batch" ;;
recompute)  # D = 24 at B 8 with a share of the segments recomputed: the rest keep their activations
  for share in 0.6 0.55 0.5; do  # fewest kept first: the last may not fit
    step ckpt-7b-share-$share 130 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora \
      --bptt-depth 24 --grad-checkpoint --recompute-share $share --batch-size 8 "${HMT[@]}" "${FAST[@]}" --repeat 2 \
      --out "$work/bench/ckpt-7b-share"
  done ;;
recompute-memory)  # D = 24, B 8, share 0.6: as is, with expandable allocator segments, one segment's summaries per pass
  ckpt=(bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 24 --grad-checkpoint --batch-size 8
        "${HMT[@]}" "${FAST[@]}" --repeat 2 --out "$work/bench/ckpt-7b-memory")
  step ckpt-7b-0.6 130 "${hb[@]}" "${ckpt[@]}" --recompute-share 0.6
  step ckpt-7b-0.6-expandable 130 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "${hb[@]}" "${ckpt[@]}" \
    --recompute-share 0.6
  step ckpt-7b-0.6-rows 130 "${hb[@]}" "${ckpt[@]}" --recompute-share 0.6 --set method.summary_segments=1 ;;
ratio)  # one machine: D = 6 at B 8 (no checkpointing) against D = 24 at B 8 with share 0.55 (with expandable segments
  # too), and the 7B evaluation at B 1 with auto's summaries (ahead at 7B since INLINE_MAX_WORK)
  step train-7b-d6-b8 100 "${hb[@]}" bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 6 \
    --batch-size 8 "${HMT[@]}" "${FAST[@]}" --repeat 2 --out "$work/bench/ratio"
  ckpt=(bench --backbone $B7 --method hmt --mode train --train lora --bptt-depth 24 --grad-checkpoint --batch-size 8
        "${HMT[@]}" "${FAST[@]}" --repeat 2 --recompute-share 0.55 --out "$work/bench/ratio")
  step ckpt-7b-0.55 130 "${hb[@]}" "${ckpt[@]}"
  step eval-7b-b1-auto 200 "${hb[@]}" bench --backbone $B7 --method hmt --mode eval --batch-size 1 --lengths 4k,1m \
    "${FAST[@]}" "${HMT[@]}" --repeat 1 --out "$work/bench/eval-7b-b1-auto"
  step ckpt-7b-0.55-expandable 130 env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "${hb[@]}" "${ckpt[@]}" ;;
summary)  # HMT evaluation, summaries ahead (batched before the recurrence) or inline (side rows), by shape
  for shape in smollm2-135m qwen2.5-0.5b openllama-3b llama-7b; do
    for pass in ahead inline; do
      step summary-$shape-$pass 100 "${hb[@]}" bench --backbone random:$shape --method hmt --mode eval \
        --batch-size 1,2 --lengths 16k --summary-pass $pass "${FAST[@]}" "${HMT[@]}" --repeat 2 \
        --out "$work/bench/summary-pass"
    done
  done ;;
profile)
  step profile-7b-b8 120 python3 -m hmtbench profile --mode train --backbone $B7 --method hmt --train lora \
    --batch-size 8 --bptt-depth 6 --sensory-tokens 32 --recall-hidden-dim 1536 --warmup 2 --compile --cuda-graphs \
    --json "$work/profile-7b-hmt-lora-b8-graphs.json" ;;
esac
ls -la "$out"
