#!/usr/bin/env bash
# ARMT trained on passkey under the RMT/HMT protocol (recipes/smollm2-135m-passkey-armt.yaml), then evaluated on the
# headline's test samples (seed 3407, 125 per length: 25 at each of depths 0-0.75 and 1), in the foreground of one
# device call, from the checkout root on the GPU machine, after SmolLM2 is staged (scripts/gpu/README.md), with
# HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/armt-train.sh train WORK MINUTES [RECIPE [FLAGS...]]  its final checkpoint in WORK/runs/armt/train/final
#   bash scripts/gpu/armt-train.sh eval WORK LENGTHS [FLAGS...]  passkey at LENGTHS; FLAGS go to eval-qa
#   bash scripts/gpu/armt-train.sh pack WORK OUT                 records and logs in OUT/armt.tgz; a LoRA final
#                                                                checkpoint in OUT/armt-final.tgz.part-* (15 MiB
#                                                                each: larger files do not come back); a full
#                                                                fine-tune's (560 MB) stays on the machine
# Environment: MODEL_DIR (/root/models), LIMIT (125), EVAL_SECONDS (300).
# Each Python process runs under its own `timeout` (a call that ends with a process still running loses the next
# device call; `timeout` on this script would stop bash and leave its Python running).
set -uo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=${MODEL_DIR:-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
run=$work/runs/armt
mkdir -p "$work/logs" "$work/results"
case $step in
train)
  timeout -k 5 "$(python3 -c "print(int($3 * 60 + 120))")" ${PYTHON:-python3} -m hmtbench train \
    --recipe "${4:-recipes/smollm2-135m-passkey-armt.yaml}" --max-minutes "$3" --output-dir "$run" \
    --out "$work/results/train" "${@:5}" > "$work/logs/train.log" 2>&1; echo "train exit $?"
  grep -v "^\s*$" "$work/logs/train.log" | tail -4
  cut -c1-160 "$run/train/log.jsonl" | tail -3 ;;
eval)
  limit=${LIMIT:-125} name=passkey-armt-$(echo "$3" | tr , -)
  timeout -k 5 "${EVAL_SECONDS:-300}" ${PYTHON:-python3} -m hmtbench eval-qa --task passkey --method armt \
    --backbone smollm2-135m --segment-length 256 --checkpoint "$run/train/final" --limit "$limit" \
    --batch-size "$limit" --depth 0,0.25,0.5,0.75,1 --context-length "$3" "${@:4}" --out "$work/results/passkey-armt" \
    > "$work/logs/eval-$name.log" 2>&1; echo "eval exit $?"
  grep -h "accuracy\|exact\|rror" "$work/logs/eval-$name.log" | cut -c1-200 | tail -n 12 ;;
pack)
  tar czf "$3/armt.tgz" -C "$work" results logs $(cd "$work" && ls runs/*/*/log.jsonl 2>/dev/null)
  if [ -d "$run/train/final" ] && [ "$(du -sm "$run/train/final" | cut -f1)" -lt 100 ]; then
    tar czf - -C "$work" runs/armt/train/final | split -b 15M - "$3/armt-final.tgz.part-"
  fi ;;
esac
