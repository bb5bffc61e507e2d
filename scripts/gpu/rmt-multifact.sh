#!/usr/bin/env bash
# The two rows issue 13's retrieval table still lacks: RMT trained on passkeys with its gradient cut after two
# segments (recipes/smollm2-135m-passkey-rmt-span-truncated.yaml), and HMT trained on multi-fact answers from the
# 32-64-segment passkey checkpoint (recipes/smollm2-135m-multifact-hmt-span.yaml), side by side on one GPU, then
# evaluated with the segmented baselines at the same segment length (256). In the foreground of device calls, from
# the checkout root on the GPU machine after staging SmolLM2 (scripts/gpu/README.md), with HMTBENCH_GIT_COMMIT /
# HMTBENCH_GIT_DIRTY set by the launching command; WORK outside the copy survives between calls while it stays warm:
#   bash scripts/gpu/rmt-multifact.sh train WORK MINUTES OUT  both trainings (each ends with its final checkpoint
#                                                             after MINUTES), each final checkpoint packed into OUT
#   bash scripts/gpu/rmt-multifact.sh eval WORK LENGTHS SECS  side by side, each under SECS: RMT passkey (n 125,
#                                                             depths 0-1); HMT multi-fact with hard and soft recall
#                                                             and plain / overlap on multi-fact (n 100, its three
#                                                             depths); full context at the lengths up to 4k
#   bash scripts/gpu/rmt-multifact.sh long WORK LENGTHS SECS  as eval, the trained methods alone (HMT: hard recall)
#   bash scripts/gpu/rmt-multifact.sh baselines WORK LENGTHS SECS  plain and overlap on multi-fact (n 100)
#   bash scripts/gpu/rmt-multifact.sh pack WORK OUT [NAME]    logs, records and training logs: OUT/NAME.tgz
# Environment: LIMIT (passkey 125, multi-fact 100), DEPTHS (passkey's), ONLY (rmt or hmt: `long` for one method),
# RMT_CKPT / HMT_CKPT (checkpoints carried to a fresh machine instead of WORK's), RMT_RECIPE (train: default the
# truncated-at-2 recipe; the next try: recipes/smollm2-135m-passkey-rmt-span-truncated3.yaml), RMT_INIT / HMT_INIT
# (train: a carried checkpoint to start from instead of the recipe's init_from, e.g. /root/ckpt/rmt).
set -euo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=${HMTBENCH_MODEL_DIR-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export OMP_NUM_THREADS=${THREADS:-4} MKL_NUM_THREADS=${THREADS:-4}
mkdir -p "$work/logs" "$work/results"
RMT_RUN=$work/runs/rmt-span-truncated HMT_RUN=$work/runs/hmt-multifact
RMT_CKPT=${RMT_CKPT:-$RMT_RUN/train/final} HMT_CKPT=${HMT_CKPT:-$HMT_RUN/stage2/final}  # or carried ones
QA=(--backbone smollm2-135m --segment-length 256)
passkey() {  # LENGTHS SECS NAME FLAGS...: passkey at n 125 (25 per depth, 0-1; DEPTHS, LIMIT)
  local n=${LIMIT:-125}
  timeout -k 5 "$2" python3 -m hmtbench eval-qa --task passkey "${QA[@]}" --limit "$n" --batch-size "$n" \
    --depth "${DEPTHS:-0,0.25,0.5,0.75,1}" --context-length "$1" "${@:4}" --out "$work/results/passkey-$3" \
    > "$work/logs/eval-passkey-$3.log" 2>&1 || echo "passkey-$3: stopped at its time limit or failed"
}
multifact() {  # LENGTHS SECS NAME FLAGS...: multi-fact at n 100 over the task's own three depths
  local n=${LIMIT:-100}
  timeout -k 5 "$2" python3 -m hmtbench eval-qa --task multi-fact "${QA[@]}" --limit "$n" --batch-size "$n" \
    --context-length "$1" "${@:4}" --out "$work/results/multi-fact-$3" \
    > "$work/logs/eval-multi-fact-$3.log" 2>&1 || echo "multi-fact-$3: stopped at its time limit or failed"
}
HMT_EVAL=(--method hmt --checkpoint "$HMT_CKPT" --recall-context 6000 --set method.span_choice=soft)

case $step in
train)
  minutes=$3 out=$4 limit=$(python3 -c "print(int($3 * 60 + 120))")
  rmt_init=() hmt_init=()
  [ -n "${RMT_INIT:-}" ] && rmt_init=(--init-from "$RMT_INIT")
  [ -n "${HMT_INIT:-}" ] && hmt_init=(--init-from "$HMT_INIT")
  timeout -k 5 "$limit" python3 -m hmtbench train \
    --recipe "${RMT_RECIPE:-recipes/smollm2-135m-passkey-rmt-span-truncated.yaml}" "${rmt_init[@]}" \
    --max-minutes "$minutes" --output-dir "$RMT_RUN" --out "$work/results/train" > "$work/logs/train-rmt.log" 2>&1 &
  timeout -k 5 "$limit" python3 -m hmtbench train --recipe recipes/smollm2-135m-multifact-hmt-span.yaml \
    "${hmt_init[@]}" --max-minutes "$minutes" --output-dir "$HMT_RUN" --out "$work/results/train" \
    > "$work/logs/train-hmt.log" 2>&1 &
  sleep 60; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
  wait || true  # in the foreground: a call that ends with a process running loses the next call
  for f in "$RMT_RUN"/*/log.jsonl "$HMT_RUN"/*/log.jsonl; do
    echo "$f: $(wc -l < "$f") lines; $(grep -o '"advanced_to": *[0-9]*' "$f" | tr '\n' ' ')"
    tail -2 "$f" | cut -c1-200
  done
  grep -h "rror" "$work"/logs/train-*.log | tail -5 || true
  (cd "$work" && for ckpt in "${RMT_CKPT#"$work"/}" "${HMT_CKPT#"$work"/}"; do
     [ -d "$ckpt" ] && tar czf "$out/ckpt-$(basename "$(dirname "$(dirname "$ckpt")")").tgz" "$ckpt"; done)
  ls -la "$out" ;;
eval)
  lengths=$3 secs=$4
  passkey "$lengths" "$secs" rmt --method rmt --checkpoint "$RMT_CKPT" &
  multifact "$lengths" "$secs" hmt-hard-recall "${HMT_EVAL[@]}" --set method.recall_choice=hard &
  multifact "$lengths" "$secs" hmt-soft-recall "${HMT_EVAL[@]}" --set method.recall_choice=soft &
  multifact "$lengths" "$secs" baselines --method plain,overlap --sensory-tokens 32 &
  short=$(python3 -c "import sys; print(','.join(x for x in sys.argv[1].split(',') if x in ('1k', '2k', '4k')))" "$lengths")
  [ -n "$short" ] && multifact "$short" "$secs" full --method full &
  wait
  grep -h "accuracy" "$work"/logs/eval-*.log | cut -c1-160 || true ;;
long)
  lengths=$3 secs=$4
  [ "${ONLY:-hmt}" = hmt ] && multifact "$lengths" "$secs" hmt-hard-recall "${HMT_EVAL[@]}" \
    --set method.recall_choice=hard &
  [ "${ONLY:-rmt}" = rmt ] && passkey "$lengths" "$secs" rmt --method rmt --checkpoint "$RMT_CKPT" &
  wait
  grep -h "accuracy" "$work"/logs/eval-*.log | cut -c1-160 || true ;;
baselines)
  multifact "$3" "$4" baselines --method plain,overlap --sensory-tokens 32
  grep -h "accuracy" "$work/logs/eval-multi-fact-baselines.log" | cut -c1-160 || true ;;
pack)  # one tarball: the device tool brings back a few files per call only (the rest: "count")
  cd "$work"
  tar czf "$3/${4:-records}.tgz" logs results $(ls runs/*/*/log.jsonl 2>/dev/null || true)
  ls -la "$3" ;;
esac
