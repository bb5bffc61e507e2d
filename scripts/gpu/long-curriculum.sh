#!/usr/bin/env bash
# Continues the span-write HMT checkpoint (results/h200-retrieval-span) on passkey contexts of 8, 16 and 32
# segments (2k-8k tokens; the first training stopped at 8), then evaluates it. In the foreground of one device
# call, from the checkout root on the GPU machine, after scripts/gpu/stage.sh, with HMTBENCH_GIT_COMMIT /
# HMTBENCH_GIT_DIRTY set by the launching command:
#   bash scripts/gpu/long-curriculum.sh train WORK MINUTES [RECIPE] the training (its final checkpoint in WORK/runs);
#                                                                   RECIPE: a recipe holding every setting instead
#                                                                   (recipes/smollm2-135m-passkey-hmt-span-long.yaml)
#   bash scripts/gpu/long-curriculum.sh eval WORK LENGTHS CHOICE [FLAGS...]  passkey at LENGTHS, span and recall
#                                                                   CHOICE; FLAGS go to eval-qa (e.g. --compile
#                                                                   --cuda-graphs for 1M within one call)
#   Environment: RUN (hmt-span-lora-long: the run folder in WORK/runs), TASK (passkey; multi-fact for a checkpoint
#   of recipes/smollm2-135m-multifact-hmt-span.yaml), LIMIT (125), DEPTHS (passkey: 0,0.25,0.5,0.75,1; multi-fact:
#   the task's own three),
#   EVAL_SECONDS (400), RECALL (CHOICE: recall's choice apart from the span write's, e.g. RECALL=hard with soft
#   spans, the choice that recall dilution cannot touch: results/cpu-recall-dilution). 1M at 100 samples of depths
#   0-0.75 reads 100M tokens (~7.5 minutes at 235k tokens/s): LIMIT=100 DEPTHS=0,0.25,0.5,0.75 EVAL_SECONDS=560.
# Each Python process runs under its own `timeout` (a call that ends with a process still running loses the next
# device call; `timeout` on this script would stop bash and leave its Python running).
set -euo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=/root/models HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
run=$work/runs/${RUN:-hmt-span-lora-long}
mkdir -p "$work/logs" "$work/results"
case $step in
train)
  if [ -n "${4:-}" ]; then
    flags=(--recipe "$4")
  else  # the first runs' settings (results/h200-long-curriculum/)
    flags=(--recipe recipes/smollm2-135m-passkey-hmt-span.yaml --init-from
           results/h200-retrieval-span/runs/hmt-span-lora/stage2/final --curriculum 8,16,32 --lr 5e-4 --set train.warmup_steps=5
           --set train.checkpoint_every=1000)
  fi
  timeout -k 5 "$(python3 -c "print(int($3 * 60 + 90))")" python3 -m hmtbench train "${flags[@]}" \
    --max-minutes "$3" --output-dir "$run" --out "$work/results/train" > "$work/logs/train-long.log" 2>&1 || true
  grep -v "^\s*$" "$work/logs/train-long.log" | tail -4
  cut -c1-120 "$run/stage2/log.jsonl" | tail -3 ;;
eval)
  lengths=$3 choice=$4 recall=${RECALL:-$4}
  name=$choice$([ "$recall" = "$choice" ] || echo "-recall-$recall")
  limit=${LIMIT:-125} task=${TASK:-passkey} depth=()
  if [ "$task" = passkey ] || [ -n "${DEPTHS:-}" ]; then  # multi-fact: its own three depths unless DEPTHS says
    depth=(--depth "${DEPTHS:-0,0.25,0.5,0.75,1}")
  fi
  timeout -k 5 "${EVAL_SECONDS:-400}" python3 -m hmtbench eval-qa --task "$task" --backbone smollm2-135m \
    --segment-length 256 --limit "$limit" --batch-size "$limit" "${depth[@]}" \
    --context-length "$lengths" --method hmt \
    --checkpoint "$run/stage2/final" --set method.span_choice="$choice" --set method.recall_choice="$recall" \
    --recall-context 6000 "${@:5}" --out "$work/results/$task-hmt-long-$name" \
    > "$work/logs/eval-long-$task-$name.log" 2>&1 || true
  grep -h "accuracy\|Error" "$work/logs/eval-long-$task-$name.log" ;;
esac
