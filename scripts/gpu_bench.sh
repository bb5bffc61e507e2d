#!/usr/bin/env bash
# GPU evidence for issue 7 (one H100, SmolLM2-135M in bf16, segment length 256): the speed and memory table
# before (the eager engine) and after (--compile --cuda-graphs), for evaluation and one training step (D = 6),
# and eval-ppl of plain/full/RMT/HMT on python-stdlib's held-out files under both engines (their ppl must agree).
# At most 8 minutes: every step has a time limit, and each case is written as soon as it is measured, so a slow
# step loses only its own remaining cases.
#
# Usage, from the checkout root, with the model staged as in shared/device/README.md (call 1 copies part00):
#   bash .carry/smollm2-b/stage.sh && bash scripts/gpu_bench.sh "$OUT/bench"
# The steps take about 21 minutes; to split them over three or four calls of a 10-minute limit on one warm machine, keep
# the work folder and name the steps:
#   GPU_BENCH_WORK=/root/gpu_bench GPU_BENCH_STEPS="after profile memory-order" bash scripts/gpu_bench.sh "$OUT/bench"
#   GPU_BENCH_WORK=/root/gpu_bench GPU_BENCH_STEPS="ppl-fast before ppl-eager" bash scripts/gpu_bench.sh "$OUT/bench"
#   GPU_BENCH_WORK=/root/gpu_bench GPU_BENCH_STEPS="ppl-inline-eager ppl-inline-fast ppl-fp32-eager ppl-fp32-fast" ...
# OUTDIR receives two files (the device tool returns at most 8): gpu_bench.tar.gz (results/*/*.parquet and
# logs/*.log, repacked after every step) and summary.txt (the table and the targets, also printed last).
# Unpack with: tar xzf gpu_bench.tar.gz -C results/h100-bench  (then `hmtbench compare results/h100-bench/results`).
set -uo pipefail  # no -e: a step that fails or runs out of time must not stop the others
out=${1:?usage: scripts/gpu_bench.sh OUTDIR}
mkdir -p "$out"
work=${GPU_BENCH_WORK:-$(mktemp -d /tmp/gpu_bench.XXXXXX)}
mkdir -p "$work/results" "$work/logs"
export HMTBENCH_MODEL_DIR=${HMTBENCH_MODEL_DIR:-/root/models}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/hmtbench-inductor}  # shared: later steps reuse kernels
start=$SECONDS

pack() {
  tar czf "$out/gpu_bench.tar.gz.tmp" -C "$work" results logs && mv "$out/gpu_bench.tar.gz.tmp" "$out/gpu_bench.tar.gz"
  local tables  # the table's own records: not memory-order's (same cases, other order)
  tables=$(ls -d "$work"/results/{bench-after,bench-before,eval-ppl} 2>/dev/null)
  [ -n "$tables" ] && python3 -m hmtbench.benchmark.report $tables > "$out/summary.txt" 2> "$work/logs/report.err"
}

steps=" ${GPU_BENCH_STEPS:-after profile memory-order equal-segments ppl-fast before ppl-eager ppl-inline-eager
  ppl-inline-fast ppl-fp32-eager ppl-fp32-fast ppl-fp32-ahead-eager ppl-fp32-ahead-fast} "
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to logs/NAME.log, show its result lines
  local name=$1 limit=$2
  shift 2
  [[ $steps == *" $name "* ]] || return 0
  echo "== $name: limit ${limit}s, starting at $((SECONDS - start))s"
  timeout --signal=INT --kill-after=15 "$limit" "$@" > "$work/logs/$name.log" 2>&1
  echo "   exit $? at $((SECONDS - start))s"
  grep -E "tok/s|skipped|failed|ppl [0-9]|error|Error|CUDA graph capture|^==|^variant|^plain|^rmt|^hmt" \
    "$work/logs/$name.log" | tail -n 60
  pack
}

hb=(python3 -m hmtbench)
# bench: the issue's setting (segment length 256, every other setting the CLI default: HMT k = 0, so S is
# 254-256 for every memory method); eval-ppl: scripts/gpu_smollm2_evidence.sh's untrained run (k = 32,
# h = 1536, 45 held-out files, batch 8), whose eager-engine records of 2026-11-24 are committed: same ppl expected
model=(--backbone smollm2-135m --segment-length 256)
hmt_recipe=(--sensory-tokens 32 --recall-hidden-dim 1536)
lengths_after=2k,4k,8k,16k,32k,64k lengths_before=2k,8k,64k batches_after=1,64,256 batches_before=1,64
profile_lengths=2k,64k equal_lengths=2032
if [ -n "${GPU_BENCH_SMOKE:-}" ]; then  # the script's logic on a CPU in two minutes: tiny model, tiny sizes
  model=(--backbone random:llama --segment-length 64 --recall-hidden-dim 16 --device cpu)
  hmt_recipe=(--sensory-tokens 8)
  lengths_after=256,512 lengths_before=256 batches_after=1,4 batches_before=1 profile_lengths=512 equal_lengths=496
fi
bench=(bench "${model[@]}" --method plain,full,rmt,hmt --bptt-depth 6 --max-batch-tokens 524288 --repeat 3)
ppl_data=(--dataset python-stdlib --split test --test-length 2000 --batch-size 8)
ppl=(eval-ppl "${model[@]}" "${hmt_recipe[@]}" --method plain,full,rmt,hmt "${ppl_data[@]}")
# batch 8 x L 256 runs HMT's summaries ahead (auto); these runs read them inline, and fp32 takes bf16 rounding out
ppl_inline=(eval-ppl "${model[@]}" "${hmt_recipe[@]}" --method hmt --summary-pass inline "${ppl_data[@]}")
ppl_fp32=(eval-ppl "${model[@]}" "${hmt_recipe[@]}" --method plain,rmt,hmt --summary-pass inline --dtype float32
          "${ppl_data[@]}")
ppl_fp32_ahead=(eval-ppl "${model[@]}" "${hmt_recipe[@]}" --method hmt --summary-pass ahead --dtype float32
                "${ppl_data[@]}")

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__)"
} 2>&1 | tee "$work/logs/machine.log"

# after: the fast path, every length at batch 1, larger batches up to 512k tokens a batch; compilation and
# graph capture happen in each case's warm-up call, outside the timed calls
step after 230 "${hb[@]}" "${bench[@]}" --compile --cuda-graphs --lengths "$lengths_after" \
  --batch-size "$batches_after" --train-batch-size 1,8 --warmup 1 --max-seconds 2 --out "$work/results/bench-after"
# where the time goes at batch 1 (HMT with its summaries ahead and inline): device timers and kernel counts
step profile 90 python3 -m hmtbench.benchmark.profile "${model[@]}" --length "$profile_lengths" --compile --cuda-graphs \
  --json "$work/results/profile.json"
# peak memory does not depend on what ran before in the process: 64k first, then 2k (compare with "after")
step memory-order 60 "${hb[@]}" bench "${model[@]}" --method plain,rmt,hmt --lengths 64k,2k --batch-size 1 --mode eval \
  --compile --cuda-graphs --warmup 1 --max-seconds 2 --out "$work/results/memory-order"
# documents of 8 x 254 tokens: 8 segment steps for plain (S = 256), RMT and HMT (S = 254) alike, where a 2k-token
# document takes RMT and HMT 9 (the time per token at 2k above then includes a ninth step)
step equal-segments 90 "${hb[@]}" bench "${model[@]}" --method plain,rmt,hmt --lengths "$equal_lengths" \
  --batch-size 1,256 --mode eval --compile --cuda-graphs --warmup 1 --max-seconds 2 --out "$work/results/equal-segments"
# eval-ppl under the fast path (its wall time includes compiling and capturing)
step ppl-fast 95 "${hb[@]}" "${ppl[@]}" --compile --cuda-graphs --out "$work/results/eval-ppl"
# before: the eager engine (no warm-up call: the median of three calls sets the first, cold one aside)
step before 105 "${hb[@]}" "${bench[@]}" --lengths "$lengths_before" --batch-size "$batches_before" \
  --train-batch-size 1,8 --warmup 0 --max-seconds 2 --out "$work/results/bench-before"
step ppl-eager 55 "${hb[@]}" "${ppl[@]}" --out "$work/results/eval-ppl"
step ppl-inline-eager 60 "${hb[@]}" "${ppl_inline[@]}" --out "$work/results/eval-ppl"
step ppl-inline-fast 90 "${hb[@]}" "${ppl_inline[@]}" --compile --cuda-graphs --out "$work/results/eval-ppl"
step ppl-fp32-eager 90 "${hb[@]}" "${ppl_fp32[@]}" --out "$work/results/eval-ppl"
step ppl-fp32-fast 120 "${hb[@]}" "${ppl_fp32[@]}" --compile --cuda-graphs --out "$work/results/eval-ppl"
step ppl-fp32-ahead-eager 60 "${hb[@]}" "${ppl_fp32_ahead[@]}" --out "$work/results/eval-ppl"
step ppl-fp32-ahead-fast 90 "${hb[@]}" "${ppl_fp32_ahead[@]}" --compile --cuda-graphs --out "$work/results/eval-ppl"

echo "== done at $((SECONDS - start))s; $out: $(ls "$out" | tr '\n' ' ')"
cat "$out/summary.txt"
