#!/usr/bin/env bash
# The official-budget trainings of issue 34 (recipes/smollm2-135m-passkey-{rmt,hmt}-official.yaml) in chunks that fit
# device calls, and the speed measurement they rest on. In the foreground of one device call, from the checkout root
# on the GPU machine, after scripts/gpu/stage.sh, with HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY exported:
#   bash scripts/gpu/official-chunks.sh speed-bench WORK    the full fine-tune's training step on SmolLM2 at batch 32
#                                                           of 2 x 512 positions (RMT, m 10): eager, --compile,
#                                                           --compile --cuda-graphs (~4 minutes)
#   bash scripts/gpu/official-chunks.sh speed-train WORK    the same in the training loop (60 optimizer steps of
#                                                           language modelling, --compile --cuda-graphs), then 90 s of
#                                                           the RMT recipe's answer training as a full fine-tune
#                                                           (--compile; CUDA graphs do not take answer training)
#                                                           (~5 minutes; the LoRA recipes' own speed is in the log of
#                                                           their first chunk)
#   bash scripts/gpu/official-chunks.sh train WORK METHOD MINUTES   one chunk of METHOD's (rmt | hmt) recipe: starts
#                                                           WORK/runs/METHOD-official (with --compile) or resumes it
#                                                           (COMPILE=0: this chunk eager; COMPILE=1: compiled)
#   bash scripts/gpu/official-chunks.sh pack WORK METHOD OUT        what the next chunk resumes from (the unfinished
#                                                           stage's last checkpoint, else the last stage's final), the
#                                                           run's config.yaml and log.jsonl files: one tarball in parts
#                                                           of 15 MiB; and in OUT/finals each level's final not packed
#                                                           before
#   bash scripts/gpu/official-chunks.sh pack-shared WORK OUT        what both runs write to one place: the records, the
#                                                           ledger and the logs (after the last pack of a call: it holds
#                                                           every chunk's line, whichever run packed last)
#   bash scripts/gpu/official-chunks.sh pack-final WORK METHOD STAGE OUT   one finished stage's final (e.g. level1),
#                                                           or a level's inside a stage (HMT: stage2/level1)
#   bash scripts/gpu/official-chunks.sh unpack PARTS WORK   the carried parts of a pack, back under WORK
#   bash scripts/gpu/official-chunks.sh adopt GOT DEST      here, after a call: GOT (the call's fetched OUT: METHOD/,
#                                                           METHOD/finals/, shared/) into the committed folder DEST
#                                                           (results/h200-official): its state parts replaced, each
#                                                           run's config.yaml and log.jsonl, the records, ledger and
#                                                           console logs, each level final under finals/; adopt the
#                                                           calls' OUTs in the order they ran
#   bash scripts/gpu/official-chunks.sh eval WORK METHOD STAGE LENGTHS   passkey at LENGTHS from STAGE's final, with
#                                                           the memory swap and read-slot attention on DIAGNOSE (25)
#                                                           samples of each length (0: off)
# A packed resumable state is ~24 MB for RMT and ~35 MB for HMT (2026-12-07), the shared part under 1 MB: all three
# travel in one call's carry, after the model's staging calls. Each Python process runs under its own `timeout` (scripts/gpu/README.md, Rules).
set -euo pipefail
step=$1
export HMTBENCH_MODEL_DIR=${HMTBENCH_MODEL_DIR:-/root/models} HF_HUB_OFFLINE=1 PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1
source scripts/gpu/parts.sh
SHAPE=(--backbone smollm2-135m --method rmt --memory-tokens 10 --segment-length 512)

case $step in
speed-bench)
  work=$2; mkdir -p "$work/logs"
  for fast in "" "--compile" "--compile --cuda-graphs"; do
    name=$(echo "eager ${fast}" | tr -d '-' | tr ' ' '_')
    # shellcheck disable=SC2086
    timeout -k 5 110 python3 -m hmtbench bench "${SHAPE[@]}" --mode train --train full --bptt-depth 2 \
      --batch-size 32 --warmup 2 --repeat 10 --max-seconds 30 $fast --out "$work/results/speed-bench" \
      > "$work/logs/bench-$name.log" 2>&1 || true
    grep -h "tok/s\|Error\|error" "$work/logs/bench-$name.log" | tail -2
  done ;;
speed-train)
  work=$2; mkdir -p "$work/logs"
  timeout -k 5 200 python3 -m hmtbench train "${SHAPE[@]}" --train full --bptt-depth 2 --batch-size 32 \
    --set train.loss_on=all --lr 1e-4 --steps 60 --set train.log_every=10 --compile --cuda-graphs \
    --dataset python-stdlib --output-dir "$work/runs/speed-lm" --out "$work/results/speed-train" \
    > "$work/logs/speed-lm.log" 2>&1 || true
  cut -c1-200 "$work/runs/speed-lm/train/log.jsonl" | tail -2
  timeout -k 5 200 python3 -m hmtbench train --recipe recipes/smollm2-135m-passkey-rmt-official.yaml --train full \
    --compile --max-minutes 1.5 --output-dir "$work/runs/speed-rmt-full" --out "$work/results/speed-train" \
    > "$work/logs/speed-rmt-full.log" 2>&1 || true
  cut -c1-200 "$work/runs/speed-rmt-full"/*/log.jsonl | tail -1 ;;
train)
  work=$2 method=$3 minutes=$4
  run=$work/runs/$method-official
  mkdir -p "$work/logs"
  compile=()  # COMPILE=0 runs this chunk eager, COMPILE=1 compiled; unset: a new run compiles, a resumed one as it ran
  case ${COMPILE:-} in 1) compile=(--compile) ;; 0) compile=(--no-compile) ;; esac
  if [ -f "$run/config.yaml" ]; then
    flags=(--resume "$run" "${compile[@]}")
  else
    flags=(--recipe "recipes/smollm2-135m-passkey-$method-official.yaml" "${compile[@]:---compile}"
           --output-dir "$run" --out "$work/results/train")
  fi
  # loading, compiling and the final saves: up to ~2 minutes beyond --max-minutes
  timeout -k 5 "$(python3 -c "print(int($minutes * 60 + 120))")" python3 -m hmtbench train "${flags[@]}" \
    --max-minutes "$minutes" >> "$work/logs/train-$method.log" 2>&1 || true
  grep -v "^\s*$" "$work/logs/train-$method.log" | tail -4
  tail -3 "$work/results/train/ledger.csv" ;;
pack | pack-final)
  work=$2 method=$3
  run=runs/$method-official
  cd "$work"
  finals=()
  if [ "$step" = pack-final ]; then
    stage=$4 out=$5 name=$method-${4//\//-}-final
    keep=("$run/$stage/final")
  else
    out=$4 name=$method-state
    # one walk over the run's stages: what the next chunk resumes from, and each level final not packed before (a
    # later pack would not keep it), which travels in parts of its own
    found=$(python3 - "$run" <<'PY'
import sys
from pathlib import Path
from hmtbench.commands.train import load_run_config
from hmtbench.training.plan import pending_stages, plan_stages, stage_complete
run = Path(sys.argv[1])
config = load_run_config(str(run))
plan, budget = plan_stages(config), config.train.max_tokens
pending, previous = pending_stages(plan, run, budget), None  # the stage that resumes, as train picks it
for stage in plan:
    folder = run / stage.folder
    complete = stage_complete(folder / "final", stage.steps, budget)
    for level in [folder / "final"] * complete + sorted(folder.glob("level*/final")):  # levels inside a stage too
        if not (level / ".packed").exists():
            print("final", level)
    if pending and stage is pending[0]:  # not begun: it starts from the last final
        print("resume", folder / "last" if (folder / "last").is_dir() else previous)
    previous = folder / "final" if complete else previous
if not pending:
    print("resume", previous)
PY
)
    keep=("$(sed -n 's/^resume //p' <<< "$found")" "$run/config.yaml" "$run"/*/log.jsonl)
    mapfile -t finals < <(sed -n 's/^final //p' <<< "$found")
  fi
  mkdir -p "$out"
  pack_parts "$out" "$name" "${keep[@]}"
  for final in "${finals[@]}"; do
    mkdir -p "$out/finals"
    pack_parts "$out/finals" "$method-$(echo "${final#"$run"/}" | tr / -)" "$final" && touch "$final/.packed"
    echo "packed $final (a level's final) in $out/finals"
  done
  ls -la "$out" ;;
pack-shared)
  work=$2 out=$3
  mkdir -p "$out" "$work/logs" "$work/results"
  (cd "$work" && pack_parts "$out" shared results logs)
  ls -la "$out" ;;
adopt)
  got=$2 dest=$3
  for dir in "$got"/*/; do
    name=$(basename "$dir")
    if compgen -G "$dir*.tgz.0" > /dev/null; then  # a run's state, or the shared part
      rm -rf "$dest/state/$name" && mkdir -p "$dest/state/$name" && cp "$dir"*.tgz.* "$dest/state/$name/"
      scratch=$(mktemp -d)
      unpack_parts "$dest/state/$name" "$scratch"
      (cd "$scratch" && find . \( -path ./results -o -path ./logs -o -name config.yaml -o -name log.jsonl \) \
         -prune -print | sed 's|^\./||' | while read -r path; do
           mkdir -p "$dest/$(dirname "$path")" && cp -r "$path" "$dest/$(dirname "$path")/"; done)
      rm -rf "$scratch"
      echo "adopted $name"
    fi
    for part in "$dir"finals/*.tgz.0; do
      [ -e "$part" ] || continue
      final=$(basename "$part" .tgz.0)
      mkdir -p "$dest/finals/${final%-final}" && cp "$dir"finals/"$final".tgz.* "$dest/finals/${final%-final}/"
      echo "adopted finals/${final%-final}"
    done
  done ;;
unpack)
  parts=$2 work=$3
  unpack_parts "$parts" "$work"
  if [ -d "$work/runs" ]; then find "$work/runs" -maxdepth 4 -name checkpoint.json | sort; fi ;;
eval)
  work=$2 method=$3 stage=$4 lengths=$5
  mkdir -p "$work/logs"
  timeout -k 5 "${EVAL_SECONDS:-400}" python3 -m hmtbench eval-qa --task passkey --backbone smollm2-135m \
    --method "$method" --segment-length 512 --limit "${LIMIT:-125}" --batch-size "${LIMIT:-125}" \
    --depth "${DEPTHS:-0,0.25,0.5,0.75,1}" --context-length "$lengths" \
    --checkpoint "$work/runs/$method-official/$stage/final" --out "$work/results/passkey-$method-official-${stage//\//-}" \
    --set memory_swap="${DIAGNOSE:-25}" --set memory_attention="${DIAGNOSE:-25}" \
    > "$work/logs/eval-$method-${stage//\//-}.log" 2>&1 || true
  grep -h "accuracy\|memory swap\|read slot\|Error" "$work/logs/eval-$method-${stage//\//-}.log" ;;
*)
  echo "usage: bash scripts/gpu/official-chunks.sh speed-bench|speed-train|train|pack|pack-final|pack-shared|unpack|adopt|eval ..." >&2
  exit 2 ;;
esac
