#!/usr/bin/env bash
# Retrieval training: several trainings side by side on one GPU, each evaluated on passkey as soon as it ends, plus
# the segmented baselines at the same segment length. SWEEP=a, b: the third try (the paper's write); SWEEP=c: the
# span write (method.write: span), RMT and HMT with LoRA, with the baselines up to 1M tokens.
# Run from the checkout root on the GPU machine after scripts/gpu/stage.sh, in steps that fit 10-minute calls:
#   bash scripts/gpu/retrieval-sweep.sh launch WORK MINUTES  every variant side by side (train for MINUTES, then
#                                                            eval-qa passkey 1k-64k, n = 125) and the baselines;
#                                                            returns when all have ended (keep MINUTES + their
#                                                            evaluations within one call: see scripts/gpu/README.md)
#   bash scripts/gpu/retrieval-sweep.sh wait WORK SECONDS    progress of jobs started otherwise (at most SECONDS)
#   bash scripts/gpu/retrieval-sweep.sh long WORK SECONDS    256k and 1M for each variant that retrieves at 64k
#                                                            (side by side; at most SECONDS)
#   bash scripts/gpu/retrieval-sweep.sh pack WORK OUT        logs, records and the LoRA checkpoints into OUT
set -euo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
# a few CPU threads per job: seven jobs at 16 threads each on 16 cores left the machine unresponsive (two device
# calls lost right after a launch)
export OMP_NUM_THREADS=${THREADS:-3} MKL_NUM_THREADS=${THREADS:-3}
mkdir -p "$work/logs" "$work/results"
# Round a (SWEEP=a): 256-position segments, the recipes' LoRA and full fine-tunes at lr 1e-4 (results/h200-retrieval-v3/).
# Round b (SWEEP=b): 96-position segments (64 text tokens beside RMT's 2 x 16 memory), higher learning rates.
# name | recipe (recipes/smollm2-135m-passkey-RECIPE.yaml; its first word is the method) | extra train flags
LONG_BASELINES=""
HARD=""  # also evaluate each variant with the span write's hard choice (--set method.span_choice=hard)
if [ "${SWEEP:-a}" = c ]; then
  L=256
  VARIANTS=(
    "rmt-span-lora|rmt-span|"
    "hmt-span-lora|hmt-span|"
  )
  LONG_BASELINES=",256k,1m"
  HARD=1
elif [ "${SWEEP:-a}" = a ]; then
  L=256
  VARIANTS=(
    "rmt-lora|rmt|"
    "rmt-full-1e-4|rmt|--train full --lr 1e-4"
    "hmt-lora|hmt|"
    "hmt-full-1e-4|hmt|--train full --lr 1e-4"
  )
else
  L=96
  VARIANTS=(
    "rmt-full-1e-4|rmt|--train full --lr 1e-4 --segment-length 96"
    "rmt-full-3e-4|rmt|--train full --lr 3e-4 --segment-length 96"
    "rmt-full-1e-3|rmt|--train full --lr 1e-3 --segment-length 96"
    "rmt-lora-2e-3|rmt|--lr 2e-3 --segment-length 96"
    "hmt-full-3e-4-k8|hmt|--train full --lr 3e-4 --segment-length 96 --set method.sensory_tokens=8"
  )
fi
if [ -n "${ONLY:-}" ]; then  # a regex on the variants' names: run (or evaluate, pack) those alone
  for i in "${!VARIANTS[@]}"; do [[ ${VARIANTS[$i]%%|*} =~ $ONLY ]] || unset "VARIANTS[$i]"; done
fi
EVAL=(--task passkey --backbone smollm2-135m --segment-length $L --limit 125 --batch-size 125
      --depth 0,0.25,0.5,0.75,1)
final() { ls -d "$work/runs/$1"/*/final 2>/dev/null | tail -1 || true; }

case $step in
launch)
  for variant in "${VARIANTS[@]}"; do
    IFS='|' read -r name recipe flags <<< "$variant"
    method=${recipe%%-*}
    # shellcheck disable=SC2086  # flags are words
    bash -c "python3 -m hmtbench train --recipe recipes/smollm2-135m-passkey-$recipe.yaml $flags \
        --max-minutes $3 --set train.checkpoint_every=100 --output-dir $work/runs/$name --out $work/results/train \
      && python3 -m hmtbench eval-qa ${EVAL[*]} --context-length 1k,4k,16k,64k --method $method \
        --checkpoint \$(ls -d $work/runs/$name/*/final | tail -1) --out $work/results/passkey-$name \
      && { [ -z '$HARD' ] || python3 -m hmtbench eval-qa ${EVAL[*]} --context-length 1k,4k,16k,64k --method $method \
        --checkpoint \$(ls -d $work/runs/$name/*/final | tail -1) --set method.span_choice=hard \
        --out $work/results/passkey-$name-hard; }" \
      > "$work/logs/$name.log" 2>&1 &
  done
  if [ -z "${ONLY:-}" ]; then  # the baselines run with the round's first launch
    python3 -m hmtbench eval-qa "${EVAL[@]}" --context-length 1k,4k,16k,64k$LONG_BASELINES --method plain,overlap \
      --sensory-tokens 32 --out "$work/results/passkey-baselines" > "$work/logs/baselines.log" 2>&1 &
    python3 -m hmtbench eval-qa "${EVAL[@]}" --context-length 1k,4k --method full \
      --out "$work/results/passkey-baselines" > "$work/logs/baselines-full.log" 2>&1 &
  fi
  sleep 20; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
  wait  # in the foreground: a device call that ends with jobs still running loses the next call
  for f in "$work"/runs/*/*/log.jsonl; do echo "$f: $(tail -1 "$f" | cut -c1-150)"; done
  grep -h "accuracy" "$work"/logs/*.log | cut -c1-160 || true ;;
wait)
  deadline=$((SECONDS + $3))
  while pgrep -f "hmtbench (train|eval-qa)" > /dev/null && [ $SECONDS -lt $deadline ]; do sleep 15; done
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
  for f in "$work"/runs/*/*/log.jsonl; do
    echo "$f: $(wc -l < "$f") logs; last: $(tail -1 "$f" | cut -c1-140)"
    grep -h "advanced_to" "$f" | cut -c1-60 | tr '\n' ' '; echo
  done
  grep -h "accuracy" "$work"/logs/*.log | cut -c1-160 || true
  pgrep -f "hmtbench (train|eval-qa)" > /dev/null && echo "still running" || echo "all jobs ended" ;;
long)
  deadline=$((SECONDS + $3))
  retrieves() {  # variant -> its passkey accuracy at 64k over depths < 1; exit 0 when at least 10%
    python3 - "$work/results/passkey-$1" <<'PY'
import sys, glob, pandas as pd
rows = pd.concat(pd.read_parquet(f) for f in glob.glob(sys.argv[1] + "/*.parquet"))
row = rows[rows.context_length == 65536]
if row.empty: sys.exit(1)
deep = [d for d in row.iloc[-1].by_depth if d["depth"] < 1]
share = sum(d["accuracy"] * d["n"] for d in deep) / sum(d["n"] for d in deep)
print(f"{sys.argv[1]}: passkey at 64k, depth < 1: {share:.2f}"); sys.exit(0 if share >= 0.1 else 1)
PY
  }
  for variant in "${VARIANTS[@]}"; do
    IFS='|' read -r name recipe _ <<< "$variant"
    method=${recipe%%-*}
    for choice in soft ${HARD:+hard}; do
      folder=$name; extra=()
      [ $choice = hard ] && folder=$name-hard extra=(--set method.span_choice=hard)
      left=$((deadline - SECONDS))
      if retrieves "$folder" && [ $left -gt 60 ]; then  # side by side on the GPU
        { timeout $left python3 -m hmtbench eval-qa "${EVAL[@]}" --context-length 256k,1m --method "$method" \
            --checkpoint "$(final "$name")" "${extra[@]}" --out "$work/results/passkey-$folder" \
            > "$work/logs/$folder-long.log" 2>&1 || echo "$folder at 256k/1M: stopped at the time limit or failed"
          grep -h "accuracy" "$work/logs/$folder-long.log" | cut -c1-160 || true; } &
      fi
    done
  done
  wait ;;
pack)  # one tarball of logs, records and run configs; the LoRA checkpoints (a full fine-tune's is 540 MB: left)
  out=$3
  cd "$work"
  tar czf "$out/sweep.tgz" logs results $(ls -d runs/*/*/log.jsonl runs/*/*/final/*.json runs/*/config.yaml 2>/dev/null || true)
  for variant in "${VARIANTS[@]}"; do
    IFS='|' read -r name _ flags <<< "$variant"
    [[ $flags == *full* ]] && continue
    ckpt=$(final "$name"); [ -n "$ckpt" ] && tar czf "$out/ckpt-$name.tgz" "${ckpt#"$work"/}"
  done
  ls -la "$out" ;;
esac
