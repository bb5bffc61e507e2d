#!/usr/bin/env bash
# On the GPU machine, from the checkout root, in the call that carries .carry/smollm2-b and .carry/wheels
# (right after a call that copied part00 to /root/models): joins the model, checks it, installs the wheels.
set -euo pipefail
mkdir -p /root/models
want=$(cat .carry/smollm2-b/sha256)
model=/root/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$want" ]; then
  [ -f /root/models/part00 ] || { echo "stage.sh: /root/models/part00 is missing: run the first call again" >&2; exit 3; }
  cat /root/models/part00 .carry/smollm2-b/part01 > "$model"
  [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$want" ] || { echo "stage.sh: checksum mismatch" >&2; exit 4; }
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation --find-links .carry/wheels .carry/wheels/*.whl .carry/wheels/*.tar.gz \
  2>&1 | grep -v -i warning || true
echo "staged: $model"
