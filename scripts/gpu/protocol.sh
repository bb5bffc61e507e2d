#!/usr/bin/env bash
# Issue 29's protocol on the GPU: the passkey rows' trainings at three seeds with their steps fixed, in chunks that
# fit device calls, then evaluations on the validation split (for the choices) and, once, on the test split. In the
# foreground of a device call, from the checkout root, after SmolLM2 is staged (scripts/gpu/README.md), with
# HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY exported:
#   bash scripts/gpu/protocol.sh train WORK CHAIN SEEDS MINUTES  CHAIN (hmt|rmt|full|armt|retrieval) at each of SEEDS
#                                                   side by side, each seed's levels in order within MINUTES: a level
#                                                   at its steps is skipped, one stopped short resumed (--resume), one
#                                                   out of memory before its first step run again alone afterwards
#   bash scripts/gpu/protocol.sh eval WORK SPLIT LENGTHS RUN METHOD [FLAGS...]  eval-qa of RUN's last level (LEVEL:
#                                                   that level's final, at its steps; none: untrained) on SPLIT, 125
#                                                   passkeys a length (25 at each depth 0, 0.25, 0.5, 0.75 and 1),
#                                                   into WORK/results/SPLIT/TASK-RUN-METHOD
#                                                   (TASK-NAME with NAME set: one folder for a grid of choices, each
#                                                   setting named by eval-qa --grid for scripts/pick_setting.py)
#   bash scripts/gpu/protocol.sh ppl WORK SPLIT RUN METHOD [FLAGS...]  eval-ppl of RUN's last level (none: untrained;
#                                                   METHOD may list several) on python-stdlib's SPLIT in fp32, 2,000
#                                                   tokens a document, into WORK/results/lm-SPLIT
#   bash scripts/gpu/protocol.sh pack WORK OUT      records, logs and training logs in OUT/protocol.tgz; the last
#                                                   finished final of each run matching PACK_RUN (a glob) in parts
#   bash scripts/gpu/protocol.sh unpack WORK DIR    the parts of an earlier pack (carried in DIR) back under WORK
#   bash scripts/gpu/protocol.sh adopt WORK DIR     a committed protocol folder (carried: results/h100-protocol) into
#                                                   WORK: its runs' finals and its validation records, none replaced
# The chains (RUN = CHAIN-sSEED, its levels in WORK/runs/RUN-LEVEL) repeat the committed checkpoints' budgets:
#   hmt   span (recipes/smollm2-135m-passkey-hmt-span.yaml, 70 steps: results/h200-retrieval-span/), long (8, 16 and
#         32 segments at lr 5e-4, 35 steps: results/h200-long-curriculum/), long64 (32 and 64 segments, 15 steps:
#         recipes/smollm2-135m-passkey-hmt-span-long.yaml)
#   rmt   truncated (recipes/smollm2-135m-passkey-rmt-span-truncated.yaml, 490 steps: results/h200-rmt-multifact/)
#   full  lora (recipes/smollm2-135m-passkey-full-lora.yaml, 120 steps: the hmt chain's)
#   armt  lora (recipes/smollm2-135m-passkey-armt.yaml with --train lora, 305 steps: results/h100-armt-seeds/)
#   retrieval  lora (recipes/smollm2-135m-passkey-retrieval-lora.yaml, 120 steps: the full chain's; BM25's reader)
#   lm-plain, lm-rmt, lm-hmt, lm-armt  lm (recipes/smollm2-135m-stdlib-METHOD-lora.yaml: the language-modelling rows'
#         LoRA trainings, 300 steps; HMT's 100 + 200 over its two stages), read by the ppl step
# With TASK=multi-fact every chain has one more level, mf: 90 steps of its multi-fact recipe
# (recipes/smollm2-135m-multifact-*.yaml) from its passkey final; eval then reads the mf level's final.
# Environment: BACKBONE (smollm2-135m; random:llama for a CPU smoke), MODEL_DIR (/root/models), STEPS_SCALE (1; a
# smoke's 0.05), STOP_AFTER (the level a chunk ends its chains with: finals travel between sessions, a level's
# resumable state does not), LEVEL (the level whose final eval reads; unset: the chain's last), LIMIT (125), TASK
# (passkey), EVAL_SECONDS (400), PACK_RUN (*), TRAIN_FLAGS / EVAL_FLAGS (added to every training started /
# evaluation), BUDGET (tokens: every training started gets train.max_tokens, the
# rule for equal budgets; a level is done at its steps or at the budget, and a chain ends with the level that spends
# it; give such chains a WORK of their own), MF_TOKENS (tokens the mf level may read beyond its passkey final's:
# train.max_tokens = that final's train_tokens + MF_TOKENS, the mf level's equal budget; the level is done at its
# steps or at that budget, BUDGET aside; a WORK of its own too). Each Python process runs under its own `timeout`
# (scripts/gpu/README.md, Rules).
set -uo pipefail
step=$1 work=$2
export HMTBENCH_MODEL_DIR=${MODEL_DIR:-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
mkdir -p "$work/logs" "$work/results" "$work/runs"
backbone=${BACKBONE:-smollm2-135m}
source scripts/gpu/parts.sh

levels() {  # chain -> "level|steps|flags" lines, its passkey levels and under TASK=multi-fact one more, from them
  passkey_levels "$1" || return
  [ "${TASK:-passkey}" != multi-fact ] || echo "mf|90|--recipe recipes/smollm2-135m-multifact-$(multifact_recipe "$1")\
.yaml --init-from {prev}"
}

multifact_recipe() {  # chain -> its multi-fact recipe's name part (90 steps each: HMT's committed facts-apart budget)
  case $1 in
  hmt) echo hmt-span ;;
  rmt) echo rmt-span-truncated ;;
  armt) echo armt ;;
  *) echo "$1-lora" ;;  # full, retrieval
  esac
}

passkey_levels() {  # chain -> "level|steps|flags" lines; {prev} stands for the previous level's final
  case $1 in
  hmt) echo "span|70|--recipe recipes/smollm2-135m-passkey-hmt-span.yaml"
       echo "long|35|--recipe recipes/smollm2-135m-passkey-hmt-span.yaml --init-from {prev} --curriculum 8,16,32 \
--lr 5e-4 --set train.warmup_steps=5"
       echo "long64|15|--recipe recipes/smollm2-135m-passkey-hmt-span-long.yaml --init-from {prev}" ;;
  rmt) echo "truncated|490|--recipe recipes/smollm2-135m-passkey-rmt-span-truncated.yaml" ;;
  full) echo "lora|120|--recipe recipes/smollm2-135m-passkey-full-lora.yaml" ;;
  armt) echo "lora|305|--recipe recipes/smollm2-135m-passkey-armt.yaml --train lora" ;;
  retrieval) echo "lora|120|--recipe recipes/smollm2-135m-passkey-retrieval-lora.yaml" ;;
  lm-hmt) echo "lm|200|--recipe recipes/smollm2-135m-stdlib-hmt-lora.yaml --stage1-steps $(scaled 100)" ;;
  lm-plain | lm-rmt | lm-armt) echo "lm|300|--recipe recipes/smollm2-135m-stdlib-${1#lm-}-lora.yaml" ;;
  *) echo "unknown chain '$1': hmt | rmt | full | armt | retrieval | lm-plain | lm-rmt | lm-hmt | lm-armt" >&2
     return 2 ;;
  esac
}

final_of() {  # a level's run folder -> its final checkpoint folder: its last stage's, not a curriculum level's
  find "$1" -path '*/final/checkpoint.json' -not -path '*/level*/final/*' 2>/dev/null | sort | tail -1 \
    | xargs -r dirname  # RUN/STAGE/levelK/final holds the stage at the end of curriculum level K
}

meta_value() {  # a final checkpoint folder, a Python expression over its checkpoint.json (m) -> its value
  python3 -c "import json,sys; m=json.load(open(sys.argv[1])); print($2)" "$1/checkpoint.json"
}

final_step() {  # a final checkpoint folder -> the step it holds (0 when none)
  [ -n "$1" ] && meta_value "$1" "m['step']" || echo 0
}

train_tokens_of() {  # a final checkpoint folder -> the tokens its tensors have read
  meta_value "$1" "int(m.get('train_tokens') or 0)"
}

spent() {  # a final checkpoint folder -> true when BUDGET is set and its tensors have read that many tokens
  [ -n "${BUDGET:-}" ] && [ -n "$1" ] && [ "$(train_tokens_of "$1")" -ge "$BUDGET" ]
}

own_budget_spent() {  # a final checkpoint folder -> true when it was trained to a train.max_tokens and read it
  local budget
  [ -n "$1" ] && budget=$(meta_value "$1" "m.get('config', {}).get('train', {}).get('max_tokens') or 0") \
    && [ "$budget" -gt 0 ] && [ "$(train_tokens_of "$1")" -ge "$budget" ]
}

finished() {  # a final checkpoint folder, its level's steps -> true when it holds them or spent BUDGET (or its own)
  [ -n "$1" ] && { [ "$(final_step "$1")" -ge "$2" ] || spent "$1" || own_budget_spent "$1"; }
}

done_from() {  # chain seed -> the index of its last level that is finished (-1: none); the levels before it need
  local i=0 last=-1 level steps final  # not be there (a carried chain brings its last final only)
  while IFS='|' read -r level steps _; do
    final=$(final_of "$work/runs/$1-s$2-$level")
    if finished "$final" "$(scaled "$steps")"; then last=$i; fi
    if spent "$final"; then break; fi
    i=$((i + 1))
  done < <(levels "$1")
  echo "$last"
}

chain() {  # chain seed deadline: the seed's levels in order, each within the time left
  local name=$1 seed=$2 deadline=$3 prev="" level steps flags run final left i=-1 last
  last=$(done_from "$name" "$seed")
  while IFS='|' read -r level steps flags; do
    i=$((i + 1))
    steps=$(scaled "$steps")
    run=$work/runs/$name-s$seed-$level
    final=$(final_of "$run")
    if [ "$i" -le "$last" ]; then
      echo "$name-s$seed-$level: done (step $steps)"
    else
      left=$((deadline - $(date +%s)))
      if [ "$left" -lt 150 ]; then echo "$name-s$seed-$level: no time left (${left}s)"; return 0; fi
      if [ -f "$run/config.yaml" ]; then
        args=(--resume "$run")
      else
        # shellcheck disable=SC2206
        args=(${flags//\{prev\}/$prev} --backbone "$backbone" --seed "$seed" --set "train.steps=$steps"
              --output-dir "$run" --out "$work/results/train" ${TRAIN_FLAGS:-})  # a resumed run keeps its own
        if [ "$level" = mf ] && [ -n "${MF_TOKENS:-}" ]; then  # the mf level's own budget, not BUDGET
          args+=(--set "train.max_tokens=$(( $(train_tokens_of "$prev") + MF_TOKENS ))")
        elif [ -n "${BUDGET:-}" ]; then
          args+=(--set "train.max_tokens=$BUDGET")
        fi
      fi
      timeout -k 5 $((left - 10)) ${PYTHON:-python3} -m hmtbench train "${args[@]}" \
        --max-minutes "$(python3 -c "print(round(($left - 100) / 60, 2))")" >> "$work/logs/train-$name-s$seed.log" 2>&1
      echo "$name-s$seed-$level: train exit $?"
      final=$(final_of "$run")
      if ! finished "$final" "$steps"; then
        echo "$name-s$seed-$level: stopped at step $(final_step "$final") of $steps; the next chunk resumes it"
        return 0
      fi
    fi
    prev=$final
    if own_budget_spent "$final" && ! spent "$final"; then echo "$name-s$seed-$level: its token budget \
(train.max_tokens) spent at step $(final_step "$final")"; fi
    if spent "$final"; then echo "$name-s$seed: BUDGET ($BUDGET tokens) spent at $level, step $(final_step "$final")"
      return 0; fi
    if [ "$level" = "${STOP_AFTER:-}" ]; then echo "$name-s$seed: stops after $level (STOP_AFTER)"; return 0; fi
  done < <(levels "$name")
}

scaled() {  # a level's steps under STEPS_SCALE
  python3 -c "print(max(1, round($1 * ${STEPS_SCALE:-1})))"
}

last_final() {  # RUN (CHAIN-sSEED) -> the final its chain ends with: its last level's at its steps, or the one
  local name=${1%-s*} level final  # that spent BUDGET
  while IFS='|' read -r level _; do
    final=$(final_of "$work/runs/$1-$level")
    if spent "$final"; then echo "$final"; return 0; fi
  done < <(levels "$name")
  level_final "$1" "$(levels "$name" | tail -1 | cut -d'|' -f1)"
}

level_final() {  # RUN (CHAIN-sSEED) LEVEL -> that level's final, if it holds the level's steps (or spent a budget)
  local steps final
  steps=$(levels "${1%-s*}" | awk -F'|' -v level="$2" '$1 == level {print $2}')
  [ -n "$steps" ] || { echo "$1: its chain has no level '$2'" >&2; return 1; }
  final=$(final_of "$work/runs/$1-$2")
  finished "$final" "$(scaled "$steps")" && echo "$final"
}

checkpoint_of() {  # RUN -> checkpoint=(--checkpoint FINAL) of its last level, or of LEVEL where set ((): none, the
  local final      # untrained method)
  checkpoint=()
  [ "$1" != none ] || return 0
  if [ -n "${LEVEL:-}" ]; then final=$(level_final "$1" "$LEVEL"); else final=$(last_final "$1"); fi
  [ -n "$final" ] || { echo "$1: its ${LEVEL:-last} level has not reached its steps under $work/runs" >&2; return 1; }
  checkpoint=(--checkpoint "$final")
}

case $step in
train)
  name=$3 seeds=$4 minutes=$5
  levels "$name" > /dev/null || exit 2
  deadline=$(( $(date +%s) + $(python3 -c "print(int($minutes * 60))") ))
  for seed in ${seeds//,/ }; do
    chain "$name" "$seed" "$deadline" > "$work/logs/chain-$name-s$seed.out" 2>&1 &
  done
  wait
  for seed in ${seeds//,/ }; do  # a level that ran out of memory beside the others, before its first step: alone
    chain_log=$work/logs/chain-$name-s$seed.out train_log=$work/logs/train-$name-s$seed.log
    if grep -q "stopped at step 0 of" "$chain_log" && tail -n 5 "$train_log" | grep -q "out of memory"; then
      echo "$name-s$seed: out of device memory beside the other seeds; again, alone" >> "$chain_log"
      chain "$name" "$seed" "$deadline" >> "$chain_log" 2>&1
    fi
  done
  for seed in ${seeds//,/ }; do cat "$work/logs/chain-$name-s$seed.out"; done
  ledger=$work/results/train/ledger.csv  # absent where every level was carried in, done
  [ ! -f "$ledger" ] || tail -n "$(( $(echo "${seeds//,/ }" | wc -w) + 1 ))" "$ledger" | cut -d, -f2-9 ;;
eval)
  split=$3 lengths=$4 run=$5 method=$6
  checkpoint_of "$run" || exit 1
  task=${TASK:-passkey} limit=${LIMIT:-125} depth=()
  [ "$task" = multi-fact ] || depth=(--depth "${DEPTHS:-0,0.25,0.5,0.75,1}")
  log=$work/logs/eval-$split-$run-$method-${lengths//,/-}-$(date +%H%M%S).log  # one per evaluation of a grid
  # shellcheck disable=SC2086
  timeout -k 5 "${EVAL_SECONDS:-400}" ${PYTHON:-python3} -m hmtbench eval-qa --task "$task" --split "$split" \
    --backbone "$backbone" --method "$method" --segment-length 256 --limit "$limit" --batch-size "$limit" \
    "${depth[@]}" --context-length "$lengths" "${checkpoint[@]}" "${@:7}" ${EVAL_FLAGS:-} \
    --out "$work/results/$split/$task-${NAME:-$run-$method}" > "$log" 2>&1; echo "eval exit $?"
  grep -h "accuracy\|rror" "$log" | cut -c1-200 | tail -n 12 ;;
ppl)
  split=$3 run=$4 method=$5
  checkpoint_of "$run" || exit 1
  log=$work/logs/ppl-$split-$run-${method//,/-}.log
  # shellcheck disable=SC2086
  timeout -k 5 "${EVAL_SECONDS:-400}" ${PYTHON:-python3} -m hmtbench eval-ppl --backbone "$backbone" \
    --dataset python-stdlib --split "$split" --test-length 2000 --batch-size 8 --dtype float32 --method "$method" \
    "${checkpoint[@]}" "${@:6}" ${EVAL_FLAGS:-} --out "$work/results/lm-$split" > "$log" 2>&1; echo "ppl exit $?"
  grep -h "ppl\|rror" "$log" | cut -c1-200 | tail -n 8 ;;
pack)
  out=$(cd "$3" && pwd)  # absolute: the parts are written from inside WORK
  tar czf "$out/protocol.tgz" -C "$work" results logs $(cd "$work" && ls runs/*/*/log.jsonl 2>/dev/null)
  for run in "$work"/runs/${PACK_RUN:-*}; do
    final=$(final_of "$run")
    [ -n "$final" ] || continue
    (cd "$work" && pack_parts "$out" "$(basename "$run")-final" "${final#"$work"/}")
  done
  ls -la "$out" ;;
unpack)
  unpack_parts "$3" "$work"
  find "$work/runs" -path '*/final/checkpoint.json' | sort ;;
adopt)
  for part in runs results/validation; do
    [ ! -d "$3/$part" ] || { mkdir -p "$work/$part" && cp -rn "$3/$part/." "$work/$part/"; }
  done
  find "$work/runs" -path '*/final/checkpoint.json' | sort
  find "$work/results/validation" -name '*.parquet' 2>/dev/null | wc -l | sed 's/$/ validation records/' ;;
*)
  echo "usage: bash scripts/gpu/protocol.sh train|eval|ppl|pack|unpack|adopt WORK ..." >&2
  exit 2 ;;
esac
