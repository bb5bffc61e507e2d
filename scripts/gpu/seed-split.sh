#!/usr/bin/env bash
# Issue 29's seed question: under the protocol, HMT and RMT learned the passkey at training seed 2 only (seeds 1 and
# 3 stay on a plateau from the first level on: results/h100-protocol/README.md). Does that come from the
# initialisation or from the training data? Each chain's first level again, with the data seed
# (train.data_seed) crossed with the initialisation seed (--seed): a run whose data seed differs from its --seed
# reads the other seed's windows and samples in the same order, from its own initial tensors. The diagonal (data
# seed = --seed) repeats a committed run: the check that training is reproducible on this machine.
# In the foreground of a device call, from the checkout root, after SmolLM2 is staged (scripts/gpu/README.md), with
# HMTBENCH_GIT_COMMIT / HMTBENCH_GIT_DIRTY exported:
#   bash scripts/gpu/seed-split.sh train WORK CHAIN MINUTES  CHAIN's first level (hmt: span, 70 steps; rmt:
#                                                 truncated, 490 steps, stopped by MINUTES) for every cell of the
#                                                 grid, side by side, in WORK/dataD (protocol.sh names runs by their
#                                                 --seed alone); resumes cells stopped short
#   bash scripts/gpu/seed-split.sh eval WORK CHAIN LENGTHS  eval-qa of each cell's first-level final on the
#                                                 validation split (protocol.sh eval with LEVEL set to that level)
#   bash scripts/gpu/seed-split.sh pack WORK OUT  each data folder's records and logs in OUT/dataD/protocol.tgz
# GRID: "DATA:SEEDS ..." cells (default: the full 3 x 3 grid on a GPU of 100 GB or more, else the four crossed
# cells that pair the learning seed 2 with seeds 1 and 3: one HMT run at 8 segments needs ~21 GB).
set -uo pipefail
step=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)

grid() {
  if [ -n "${GRID:-}" ]; then echo "$GRID"; return; fi
  local memory
  memory=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
  if [ "${memory:-0}" -ge 100000 ]; then echo "1:1,2,3 2:1,2,3 3:1,2,3"; else echo "1:2 2:1,3 3:2"; fi
}

first_level() {  # chain -> its first level's name
  case $1 in hmt) echo span ;; rmt) echo truncated ;; *) echo "seed-split: hmt or rmt, not '$1'" >&2; return 2 ;; esac
}

case $step in
train)
  chain=$3 minutes=$4
  level=$(first_level "$chain") || exit 2
  for cell in $(grid); do
    data=${cell%%:*} seeds=${cell#*:}
    TRAIN_FLAGS="${TRAIN_FLAGS:-} --set train.data_seed=$data" STOP_AFTER=$level \
      bash "$here/protocol.sh" train "$work/data$data" "$chain" "$seeds" "$minutes" \
      > "$work-train-$chain-data$data.out" 2>&1 &
  done
  wait
  for cell in $(grid); do
    echo "data seed ${cell%%:*}:"; grep -v "^ *$" "$work-train-$chain-data${cell%%:*}.out"
  done ;;
eval)
  chain=$3 lengths=$4
  level=$(first_level "$chain") || exit 2
  for cell in $(grid); do
    data=${cell%%:*} seeds=${cell#*:}
    for seed in ${seeds//,/ }; do
      (LEVEL=$level bash "$here/protocol.sh" eval "$work/data$data" validation "$lengths" "$chain-s$seed" \
         "$chain" > "$work-eval-data$data-s$seed.out" 2>&1) &
    done
  done
  wait
  for cell in $(grid); do
    data=${cell%%:*} seeds=${cell#*:}
    for seed in ${seeds//,/ }; do echo "data $data seed $seed:"; cat "$work-eval-data$data-s$seed.out"; done
  done ;;
pack)
  out=$3
  for cell in $(grid); do
    data=${cell%%:*}
    mkdir -p "$out/data$data"
    PACK_RUN=none bash "$here/protocol.sh" pack "$work/data$data" "$out/data$data" > /dev/null
  done
  ls -la "$out"/data* ;;
*)
  echo "usage: bash scripts/gpu/seed-split.sh train WORK hmt|rmt MINUTES | eval WORK hmt|rmt LENGTHS" \
    "| pack WORK OUT" >&2
  exit 2 ;;
esac
