#!/usr/bin/env bash
# The GPU evidence of "What the memory does" (docs/results.md), in steps that fit the device tool's 10-minute calls.
# Run from the checkout root on the GPU machine after scripts/gpu/stage.sh; WORK survives between calls while
# the machine stays warm; `pack` leaves tarballs in OUT (what the device tool brings back).
#   bash scripts/gpu/evidence.sh train WORK MINUTES   the retrieval trainings (RMT, HMT; each ends with its
#                                                     final checkpoint after MINUTES) and the fair HMT-without-
#                                                     sensory LM ablation, side by side; returns when all have
#                                                     ended (a device call must not end with jobs running)
#   bash scripts/gpu/evidence.sh wait WORK SECONDS    progress of trainings started otherwise (at most SECONDS)
#   bash scripts/gpu/evidence.sh retrieval WORK SECS  passkey and multi-fact, 1k-64k, every method (n = 125 per
#                                                     length); then 256k and 1M for each trained memory method that
#                                                     retrieves at 64k, until SECS have passed
#   bash scripts/gpu/evidence.sh lm WORK              eval-ppl of the HMT-without-sensory ablation
#   bash scripts/gpu/evidence.sh lmeval WORK [CKPT]        an lm-eval passkey task through the retrieval-trained HMT
#   bash scripts/gpu/evidence.sh pack WORK OUT NAME   logs, records and the final checkpoints into OUT
set -euo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
hb() { python3 -m hmtbench "$@"; }
mkdir -p "$work/logs" "$work/results"
MODEL=smollm2-135m L=512
RMT_CKPT=$work/runs/passkey-rmt/train/final HMT_CKPT=$work/runs/passkey-hmt/stage2/final

case $step in
train)
  for m in rmt hmt; do
    python3 -m hmtbench train --recipe "recipes/smollm2-135m-passkey-$m.yaml" --max-minutes "$3" \
      --output-dir "$work/runs/passkey-$m" --out "$work/results/train-passkey" > "$work/logs/train-passkey-$m.log" 2>&1 &
  done
  bash "$0" train-lm "$work" &
  sleep 45; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
  wait
  bash "$0" wait "$work" 0 ;;
train-lm)  # the LM ablation's HMT without sensory memory, under the other rows' budget (stage 1 + stage 2)
  python3 -m hmtbench train --recipe recipes/smollm2-135m-stdlib-hmt-nosensory-ref.yaml \
    --output-dir "$work/runs/lm-hmt-nosensory" --out "$work/results/train-lm" > "$work/logs/train-lm-nosensory.log" 2>&1
  ;;
wait)
  deadline=$((SECONDS + $3))
  while pgrep -f "hmtbench train" > /dev/null && [ $SECONDS -lt $deadline ]; do sleep 10; done
  for f in "$work"/runs/*/*/log.jsonl; do echo "$f: $(tail -1 "$f" | cut -c1-160)"; done
  grep -h "advanced_to" "$work"/runs/passkey-*/*/log.jsonl | cut -c1-100 || true
  pgrep -f "hmtbench train" > /dev/null && echo "still training" || echo "all trainings ended" ;;
retrieval)
  deadline=$((SECONDS + $3))
  common=(--backbone "$MODEL" --segment-length $L --limit 125 --batch-size 125 --depth 0,0.25,0.5,0.75,1)
  for task in passkey multi-fact; do
    out="$work/results/$task" lengths=1k,4k,16k,64k
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method plain,overlap,full \
      --sensory-tokens 32 --out "$out" > "$work/logs/eval-$task-baselines.log" 2>&1 &
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method rmt --checkpoint "$RMT_CKPT" \
      --out "$out" > "$work/logs/eval-$task-rmt.log" 2>&1 &
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method hmt --checkpoint "$HMT_CKPT" \
      --out "$out" > "$work/logs/eval-$task-hmt.log" 2>&1 &
  done
  wait
  grep -h "accuracy\|rror" "$work"/logs/eval-*.log | cut -c1-160 | tail -40 || true
  # 256k and 1M only for a trained memory method that retrieves at 64k (depth < 1): elsewhere it is at chance
  retrieves() {  # method -> exit 0 when its passkey accuracy at 64k, depth < 1, is at least 50%
    python3 - "$work/results/passkey" "$1" <<'PY'
import sys, glob, pandas as pd
rows = pd.concat(pd.read_parquet(f) for f in glob.glob(sys.argv[1] + "/*.parquet"))
row = rows[(rows.method == sys.argv[2]) & (rows.context_length == 65536)]
if row.empty: sys.exit(1)
deep = [d for d in row.iloc[-1].by_depth if d["depth"] < 1]
share = sum(d["accuracy"] * d["n"] for d in deep) / sum(d["n"] for d in deep)
print(f"{sys.argv[2]}: passkey at 64k, depth < 1: {share:.2f}"); sys.exit(0 if share >= 0.5 else 1)
PY
  }
  for m in rmt hmt; do
    ckpt=$RMT_CKPT; [ $m = hmt ] && ckpt=$HMT_CKPT
    left=$((deadline - SECONDS))
    if retrieves $m && [ $left -gt 60 ]; then
      timeout $left python3 -m hmtbench eval-qa --task passkey "${common[@]}" --context-length 256k,1m --method $m \
        --checkpoint "$ckpt" --out "$work/results/passkey" > "$work/logs/eval-passkey-$m-long.log" 2>&1 \
        || echo "$m at 256k/1M: stopped at the time limit or failed (see its log)"
      grep -h "accuracy" "$work/logs/eval-passkey-$m-long.log" | cut -c1-160 || true
    fi
  done ;;
lm)
  final=$(ls -d "$work/runs/lm-hmt-nosensory"/*/final | tail -1)
  hb eval-ppl --backbone "$MODEL" --dataset python-stdlib --split test --segment-length 1024 --test-length 8192 \
    --batch-size 8 --method hmt --checkpoint "$final" --out "$work/results/lm-ablation" \
    > "$work/logs/eval-lm-hmt-nosensory.log" 2>&1
  grep -h " ppl " "$work/logs/eval-lm-hmt-nosensory.log" || tail -5 "$work/logs/eval-lm-hmt-nosensory.log" ;;
lmeval)  # one lm-eval long-context task, generated offline (needs the lm-eval wheels); [CKPT]: another HMT
  tasks="$work/lmeval-tasks" args="checkpoint=$HMT_CKPT,segment_length=$L"
  [ -n "${3:-}" ] && args="checkpoint=$3"  # its own segment length
  python3 scripts/lmeval_niah.py --backbone "$MODEL" --context-length 4096,16384 --samples 50 --out "$tasks"
  python3 -m hmtbench.lmeval --model hmtbench --device cuda --batch_size 1 --include_path "$tasks" \
    --model_args "backbone=$MODEL,method=hmt,$args,dtype=bf16" \
    --tasks hmtbench_passkey_4096,hmtbench_passkey_16384 --output_path "$work/results/lmeval" \
    > "$work/logs/lmeval.log" 2>&1 || tail -20 "$work/logs/lmeval.log"
  tail -15 "$work/logs/lmeval.log" ;;
pack)  # logs and records in one tarball; each final checkpoint in its own (at most 16 MiB each)
  out=$3 name=$4
  cd "$work"
  tar czf "$out/$name.tgz" logs results $(ls -d runs/*/*/log.jsonl runs/*/*/final/*.json runs/*/config.yaml 2>/dev/null || true)
  for run in passkey-rmt passkey-hmt lm-hmt-nosensory; do
    final=$(ls -d runs/$run/*/final 2>/dev/null | tail -1 || true)
    [ -n "$final" ] && tar czf "$out/ckpt-$run.tgz" "$final"
  done
  ls -la "$out" ;;
esac
