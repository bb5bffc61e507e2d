#!/usr/bin/env bash
# ARMT's trained rows (issue 35), in the foreground of device calls, from the checkout root on the GPU machine, after
# SmolLM2 is staged (scripts/gpu/README.md), with HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/armt-train.sh passkey WORK MINUTES [FLAGS...]  recipes/smollm2-135m-passkey-armt.yaml (FLAGS: e.g.
#                                                                   --train lora --seed 2 --set train.steps=305) into
#                                                                   WORK/runs/$RUN (armt-passkey)
#   bash scripts/gpu/armt-train.sh lm WORK MINUTES [FLAGS...]       recipes/smollm2-135m-stdlib-armt-lora.yaml (300
#                                                                   steps) into WORK/runs/$RUN (armt-lm)
#   bash scripts/gpu/armt-train.sh multifact WORK MINUTES [FLAGS...]  recipes/smollm2-135m-multifact-armt.yaml from
#                                                                   the passkey run's final checkpoint ($FROM, default
#                                                                   WORK/runs/armt-passkey/train/final) into
#                                                                   WORK/runs/$RUN (armt-multifact)
#   bash scripts/gpu/armt-train.sh eval WORK LENGTHS [FLAGS...]     the passkey checkpoint ($CKPT, default
#                                                                   WORK/runs/armt-passkey/train/final) on the
#                                                                   headline's test samples (seed 3407, 125 per length:
#                                                                   25 at each of depths 0-0.75 and 1); FLAGS go to
#                                                                   eval-qa
#   bash scripts/gpu/armt-train.sh eval-multifact WORK LENGTHS [FLAGS...]  the multi-fact checkpoint ($CKPT, default
#                                                                   WORK/runs/armt-multifact/train/final) on 100
#                                                                   multi-fact samples per length (the task's depths)
#   bash scripts/gpu/armt-train.sh pack WORK OUT                    records, logs and training logs in OUT/armt.tgz;
#                                                                   each run's final checkpoint under 100 MB (LoRA)
#                                                                   in OUT/RUN-final.tgz.0, .1, ... (15 MiB each: larger
#                                                                   files do not come back, nor more than ~64 MB a
#                                                                   call); a full fine-tune's (560 MB) stays on the
#                                                                   machine
# Environment: MODEL_DIR (/root/models), LIMIT (125 passkey, 100 multi-fact), EVAL_SECONDS (300), RUN, FROM, CKPT,
# NAME (an evaluation's results folder under WORK/results), PACK_RUN (pack one run's final; ~64 MB come back a call).
# Each Python process runs under its own `timeout` (a call that ends with a process still running loses the next
# device call; `timeout` on this script would stop bash and leave its Python running).
set -uo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=${MODEL_DIR:-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
source scripts/gpu/parts.sh
mkdir -p "$work/logs" "$work/results"
train() {  # name recipe minutes flags...
  local name=$1 recipe=$2 minutes=$3; shift 3
  timeout -k 5 "$(python3 -c "print(int($minutes * 60 + 120))")" ${PYTHON:-python3} -m hmtbench train \
    --recipe "$recipe" --max-minutes "$minutes" --output-dir "$work/runs/$name" --out "$work/results/train" "$@" \
    > "$work/logs/train-$name.log" 2>&1; echo "$name: train exit $?"
  grep -v "^\s*$" "$work/logs/train-$name.log" | tail -3
  cut -c1-160 "$work/runs/$name/train/log.jsonl" | tail -2
}
qa() {  # task name checkpoint lengths flags...
  local task=$1 name=$2 checkpoint=$3 lengths=$4; shift 4
  local log=$work/logs/eval-$name-${lengths//,/-}.log
  timeout -k 5 "${EVAL_SECONDS:-300}" ${PYTHON:-python3} -m hmtbench eval-qa --task "$task" --method armt \
    --backbone smollm2-135m --segment-length 256 --checkpoint "$checkpoint" --context-length "$lengths" "$@" \
    --out "$work/results/$name" > "$log" 2>&1; echo "eval exit $?"
  grep -h "accuracy\|exact\|rror" "$log" | cut -c1-200 | tail -n 12
}
case $step in
passkey) train "${RUN:-armt-passkey}" recipes/smollm2-135m-passkey-armt.yaml "${@:3}" ;;
lm) train "${RUN:-armt-lm}" recipes/smollm2-135m-stdlib-armt-lora.yaml "${@:3}" ;;
multifact) train "${RUN:-armt-multifact}" recipes/smollm2-135m-multifact-armt.yaml "$3" \
  --init-from "${FROM:-$work/runs/armt-passkey/train/final}" "${@:4}" ;;
eval)
  limit=${LIMIT:-125}
  qa passkey "${NAME:-passkey-armt}" "${CKPT:-$work/runs/armt-passkey/train/final}" "$3" --limit "$limit" \
    --batch-size "$limit" --depth 0,0.25,0.5,0.75,1 "${@:4}" ;;
eval-multifact)
  limit=${LIMIT:-100}
  qa multi-fact "${NAME:-multi-fact-armt}" "${CKPT:-$work/runs/armt-multifact/train/final}" "$3" --limit "$limit" \
    --batch-size "$limit" "${@:4}" ;;
pack)
  out=$(cd "$3" && pwd)  # absolute: the parts are written from inside WORK
  tar czf "$out/armt.tgz" -C "$work" results logs $(cd "$work" && ls runs/*/*/log.jsonl 2>/dev/null)
  for final in "$work"/runs/${PACK_RUN:-*}/train/final; do  # PACK_RUN: one run's final only
    [ -d "$final" ] && [ "$(du -sm "$final" | cut -f1)" -lt 100 ] || continue
    name=$(basename "$(dirname "$(dirname "$final")")")
    (cd "$work" && pack_parts "$out" "$name-final" "runs/$name/train/final")
  done ;;
esac
