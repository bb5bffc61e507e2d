#!/usr/bin/env bash
# Free-form answers against the short-answer path on the same prompts (issue 30), in one device call: SmolLM2-135M's
# shape with random weights (speed does not depend on the weights; no staging), HMT with k 32 at L 256, 100 samples
# read as one batch, --compile --cuda-graphs. Each command evaluates 8k first (compilation and graph capture happen
# there: the same step shapes as 32k) and then the 32k record that counts. Run from the checkout root:
#   bash scripts/gpu/freeform-bench.sh OUT [WORK]      (STEPS=passkey-free,freeform-free: only those steps)
# Needs rouge_score (eval-qa refuses to start without it): carry .carry/rouge and install it first.
# Smaller settings (a CPU): BACKBONE=smollm2-135m LENGTHS=1k,4k LIMIT=16 FAST= DEVICE=cpu bash ... OUT WORK
set -uo pipefail  # one failing step must not lose the others
out=$1 work=${2:-/root/work/freeform}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_OFFLINE=1
mkdir -p "$work/results" "$work/logs" "$out"
pack() { tar czf "$out/freeform-bench.tgz" -C "$work" results logs; }
SHOW="samples in" SHOW_LINES=6
source scripts/gpu/step.sh
# 100 free-form samples: contexts of ~40k characters of the Python docs (the byte tokenizer: one token per byte), a
# question, an answer of several words; eval-qa cuts each context in the middle to --context-length.
python3 - "$work/freeform.jsonl" <<'PY'
import json, sys
from pydoc_data.topics import topics
text = "\n\n".join(topics[k] for k in sorted(topics))
with open(sys.argv[1], "w") as f:
    for i in range(100):
        start = (i * 9973) % (len(text) - 40000)
        f.write(json.dumps({"id": f"doc{i}", "context": text[start:start + 40000],
                            "question": "Summarise the passage in one sentence.",
                            "answer": "The passage documents part of the Python language reference."}) + "\n")
PY
limit=${LIMIT:-100}
qa=(${PYTHON:-python3} -m hmtbench eval-qa --backbone "${BACKBONE:-random:smollm2-135m}" --method hmt --sensory-tokens 32
    --segment-length 256 --limit "$limit" --batch-size "$limit" --context-length "${LENGTHS:-8k,32k}"
    --device "${DEVICE:-auto}" ${FAST---compile --cuda-graphs})
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
step passkey-teacher-forced 200 "${qa[@]}" --task passkey --no-decode --out "$work/results/passkey-teacher-forced"
step passkey-free 200 "${qa[@]}" --task passkey --out "$work/results/passkey-free"
step freeform-free 200 "${qa[@]}" --task "$work/freeform.jsonl" --max-new-tokens 64 --out "$work/results/freeform-free"
step freeform-teacher-forced 150 "${qa[@]}" --task "$work/freeform.jsonl" --no-decode \
  --out "$work/results/freeform-teacher-forced"
