#!/usr/bin/env bash
# ARMT's trained rows (issue 35), in the foreground of device calls, from the checkout root on the GPU machine, after
# SmolLM2 is staged (scripts/gpu/README.md), with HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/armt-train.sh passkey WORK MINUTES [FLAGS...]  recipes/smollm2-135m-passkey-armt.yaml (FLAGS: e.g.
#                                                                   --train lora) into WORK/runs/armt-passkey
#   bash scripts/gpu/armt-train.sh lm WORK MINUTES [FLAGS...]       recipes/smollm2-135m-stdlib-armt-lora.yaml (300
#                                                                   steps) into WORK/runs/armt-lm
#   bash scripts/gpu/armt-train.sh eval WORK LENGTHS [FLAGS...]     the passkey checkpoint on the headline's test
#                                                                   samples (seed 3407, 125 per length: 25 at each of
#                                                                   depths 0-0.75 and 1); FLAGS go to eval-qa
#   bash scripts/gpu/armt-train.sh pack WORK OUT                    records, logs and training logs in OUT/armt.tgz;
#                                                                   each run's final checkpoint under 100 MB (LoRA)
#                                                                   in OUT/RUN-final.tgz.part-* (15 MiB each: larger
#                                                                   files do not come back); a full fine-tune's
#                                                                   (560 MB) stays on the machine
# Environment: MODEL_DIR (/root/models), LIMIT (125), EVAL_SECONDS (300).
# Each Python process runs under its own `timeout` (a call that ends with a process still running loses the next
# device call; `timeout` on this script would stop bash and leave its Python running).
set -uo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=${MODEL_DIR:-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$work/logs" "$work/results"
train() {  # name recipe minutes flags...
  local name=$1 recipe=$2 minutes=$3; shift 3
  timeout -k 5 "$(python3 -c "print(int($minutes * 60 + 120))")" ${PYTHON:-python3} -m hmtbench train \
    --recipe "$recipe" --max-minutes "$minutes" --output-dir "$work/runs/$name" --out "$work/results/train" "$@" \
    > "$work/logs/train-$name.log" 2>&1; echo "$name: train exit $?"
  grep -v "^\s*$" "$work/logs/train-$name.log" | tail -3
  cut -c1-160 "$work/runs/$name/train/log.jsonl" | tail -2
}
case $step in
passkey) train armt-passkey recipes/smollm2-135m-passkey-armt.yaml "${@:3}" ;;
lm) train armt-lm recipes/smollm2-135m-stdlib-armt-lora.yaml "${@:3}" ;;
eval)
  limit=${LIMIT:-125} name=passkey-armt-$(echo "$3" | tr , -)
  timeout -k 5 "${EVAL_SECONDS:-300}" ${PYTHON:-python3} -m hmtbench eval-qa --task passkey --method armt \
    --backbone smollm2-135m --segment-length 256 --checkpoint "$work/runs/armt-passkey/train/final" \
    --limit "$limit" --batch-size "$limit" --depth 0,0.25,0.5,0.75,1 --context-length "$3" "${@:4}" \
    --out "$work/results/passkey-armt" > "$work/logs/eval-$name.log" 2>&1; echo "eval exit $?"
  grep -h "accuracy\|exact\|rror" "$work/logs/eval-$name.log" | cut -c1-200 | tail -n 12 ;;
pack)
  tar czf "$3/armt.tgz" -C "$work" results logs $(cd "$work" && ls runs/*/*/log.jsonl 2>/dev/null)
  for final in "$work"/runs/*/train/final; do
    [ -d "$final" ] && [ "$(du -sm "$final" | cut -f1)" -lt 100 ] || continue
    name=$(basename "$(dirname "$(dirname "$final")")")
    tar czf - -C "$work" "runs/$name/train/final" | split -b 15M - "$3/$name-final.tgz.part-"
  done ;;
esac
