#!/usr/bin/env bash
# The GPU evidence of "What the memory does" (README), in steps that fit the device tool's 10-minute calls.
# Run from the checkout root on the GPU machine after scripts/gpu/stage.sh; WORK survives between calls while
# the machine stays warm; each step leaves a tarball in OUT (what the device tool brings back).
#   bash scripts/gpu/evidence.sh train WORK [FROM]     start every training in the background (returns at once);
#                                                      FROM: retrieval checkpoints of an earlier call to go on from
#   bash scripts/gpu/evidence.sh wait WORK SECONDS     wait for them (at most SECONDS), show their progress
#   bash scripts/gpu/evidence.sh retrieval WORK [RUNS] passkey (1k..1M tokens) and multi-fact (1k..64k), every method
#   bash scripts/gpu/evidence.sh lm WORK               eval-ppl of the LM ablations and of the committed checkpoints
#   bash scripts/gpu/evidence.sh pack WORK OUT NAME    logs, records and small checkpoints into OUT/NAME.tgz
set -euo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
hb() { python3 -m hmtbench "$@"; }
mkdir -p "$work/logs" "$work/results"
MODEL=smollm2-135m
ABLATIONS="plain overlap rmt hmt hmt-nosensory hmt-norecall"

case $step in
train)
  from=${3:-}
  for m in rmt hmt; do
    more=()  # going on from an earlier call's checkpoint: its level onwards, 350 more steps (HMT: stage 2)
    [ -n "$from" ] && more=(--init-from "$(ls -d "$from/passkey-$m"/*/final | tail -1)" --curriculum 2,3,4
                            --steps 350 --warmup-steps 0)
    [ -n "$from" ] && [ $m = hmt ] && more+=(--stage 2)
    setsid nohup python3 -m hmtbench train --recipe "recipes/smollm2-135m-passkey-$m.yaml" "${more[@]}" \
      --output-dir "$work/runs/passkey-$m" --out "$work/results/train-passkey" > "$work/logs/train-passkey-$m.log" 2>&1 &
  done
  for v in $ABLATIONS; do
    setsid nohup python3 -m hmtbench train --recipe "recipes/smollm2-135m-stdlib-$v-ref.yaml" \
      --output-dir "$work/runs/lm-$v" --out "$work/results/train-lm" > "$work/logs/train-lm-$v.log" 2>&1 &
  done
  sleep 20; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv ;;
wait)
  deadline=$((SECONDS + $3))
  while pgrep -f "hmtbench train" > /dev/null && [ $SECONDS -lt $deadline ]; do sleep 15; done
  for f in "$work"/logs/train-*.log; do echo "== $f"; tail -c 400 "$f" | tr '\r' '\n' | tail -3; done
  for f in "$work"/runs/*/*/log.jsonl; do echo "$f: $(tail -1 "$f")"; done
  pgrep -f "hmtbench train" > /dev/null && echo "still training" || echo "all trainings ended" ;;
retrieval)
  common=(--backbone "$MODEL" --segment-length 1024 --limit 100 --batch-size 100 --depth 0,0.25,0.5,0.75,1)
  runs=${3:-$work/runs}  # where the retrieval checkpoints are
  rk="$runs/passkey-rmt/train/final" hk="$runs/passkey-hmt/stage2/final"
  lengths=1k,4k,16k,64k,256k,1m
  for task in passkey multi-fact; do
    [ $task = multi-fact ] && lengths=1k,4k,16k,64k
    out="$work/results/$task"
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method plain,overlap,full \
      --sensory-tokens 32 --out "$out" > "$work/logs/eval-$task-baselines.log" 2>&1 &
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method rmt --checkpoint "$rk" \
      --out "$out" > "$work/logs/eval-$task-rmt.log" 2>&1 &
    hb eval-qa --task $task "${common[@]}" --context-length $lengths --method hmt --checkpoint "$hk" \
      --out "$out" > "$work/logs/eval-$task-hmt.log" 2>&1 &
    [ $task = passkey ] && hb eval-qa --task $task "${common[@]}" --context-length $lengths --method hmt \
      --checkpoint "$hk" --recall-context 2048 --out "$out" > "$work/logs/eval-$task-hmt-n2048.log" 2>&1 &
  done
  wait; grep -h "accuracy\|error" "$work"/logs/eval-*.log | tail -40 || true ;;
lmeval)  # one lm-eval long-context task, generated offline (needs the lm-eval wheels)
  tasks="$work/lmeval-tasks"
  python3 scripts/lmeval_niah.py --backbone "$MODEL" --context-length 4096,16384 --samples 50 --out "$tasks"
  python3 -m hmtbench.lmeval --model hmtbench --device cuda --batch_size 1 --include_path "$tasks" \
    --model_args "backbone=$MODEL,method=hmt,checkpoint=$work/runs/passkey-hmt/stage2/final,dtype=bf16" \
    --tasks hmtbench_passkey_4096,hmtbench_passkey_16384 --output_path "$work/results/lmeval" \
    > "$work/logs/lmeval.log" 2>&1 || tail -20 "$work/logs/lmeval.log"
  tail -15 "$work/logs/lmeval.log" ;;
lm)
  common=(--backbone "$MODEL" --dataset python-stdlib --split test --segment-length 1024 --test-length 8192
          --batch-size 8 --out "$work/results/lm-ablation")
  for v in $ABLATIONS; do
    name=${v%%-*}; final=$(ls -d "$work/runs/lm-$v"/*/final | tail -1)
    hb eval-ppl "${common[@]}" --method "$name" --checkpoint "$final" > "$work/logs/eval-lm-$v.log" 2>&1 &
  done
  hb eval-ppl "${common[@]}" --method plain,full > "$work/logs/eval-lm-untrained.log" 2>&1 &
  # the committed LoRA checkpoints, re-evaluated where the code's commit is recorded (the README's first table)
  old=(--backbone "$MODEL" --dataset python-stdlib --split test --test-length 2000 --batch-size 8
       --out "$work/results/committed")
  for c in plain-lora rmt-lora hmt-lora/stage1 hmt-lora/stage2; do
    name=${c%%-*}
    hb eval-ppl "${old[@]}" --method "$name" --checkpoint "results/checkpoints/smollm2-135m-stdlib-$c" \
      > "$work/logs/eval-committed-${c//\//-}.log" 2>&1 &
  done
  hb eval-ppl "${old[@]}" --method plain,full,overlap,rmt,hmt --sensory-tokens 32 --recall-hidden-dim 1536 \
    > "$work/logs/eval-committed-untrained.log" 2>&1 &
  wait; grep -h " ppl " "$work"/logs/eval-lm-*.log "$work"/logs/eval-committed-*.log || true ;;
pack)  # logs and records in one tarball; the last final checkpoint of each run in tarballs of at most 16 MiB
  out=$3 name=$4
  cd "$work"
  tar czf "$out/$name.tgz" logs results $(ls -d runs/*/*/log.jsonl runs/*/*/final/*.json 2>/dev/null)
  finals() { for run in "$@"; do ls -d runs/$run/*/final 2>/dev/null | tail -1; done; }
  for group in "passkey-rmt" "passkey-hmt" "lm-plain lm-overlap lm-rmt lm-hmt-norecall" "lm-hmt" "lm-hmt-nosensory"; do
    list=$(finals $group)
    [ -n "$list" ] && tar czf "$out/ckpt-${group%% *}.tgz" $list
  done
  ls -la "$out" ;;
esac
