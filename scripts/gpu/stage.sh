#!/usr/bin/env bash
# On the GPU machine, from the checkout root, in the call that carries .carry/smollm2-4 and .carry/gguf (right
# after the calls that copied parts 00-02 to /root/models): joins the model, checks it, installs the wheels
# carried (.carry/gguf, and .carry/wheels when carried too).
set -euo pipefail
mkdir -p /root/models
want=$(cat .carry/smollm2-4/sha256)
model=/root/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$model" ] || [ "$(sha256sum "$model" | cut -d' ' -f1)" != "$want" ]; then
  for p in 00 01 02; do
    [ -f /root/models/part$p ] || { echo "stage.sh: /root/models/part$p is missing: copy it again" >&2; exit 3; }
  done
  cat /root/models/part00 /root/models/part01 /root/models/part02 .carry/smollm2-4/part03 > "$model"
  [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$want" ] || { echo "stage.sh: checksum mismatch" >&2; exit 4; }
fi
for folder in .carry/gguf .carry/wheels; do
  [ -d "$folder" ] || continue
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --find-links "$folder" \
    $(ls "$folder"/*.whl "$folder"/*.tar.gz "$folder"/*.zip 2>/dev/null) 2>&1 | grep -v -i warning || true
done
echo "staged: $model"
