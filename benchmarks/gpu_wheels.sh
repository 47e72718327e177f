#!/usr/bin/env bash
# Fetch, here, the wheels benchmarks/gpu.sh needs on the device machine (Python 3.12,
# x86-64; its torch, transformers, numpy and the rest are already there) into .whl, and
# copy the GPT-2 tokenizer from ../shared (which does not travel) into ./shared (which
# does); git ignores both through .git/info/exclude. Then run there with .whl carried:
#
#   bash benchmarks/gpu_wheels.sh && <device run, carry .whl>: bash benchmarks/gpu.sh $OUT/gpu.md
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
grep -qx '/shared/' .git/info/exclude || echo '/shared/' >>.git/info/exclude
mkdir -p shared/tokenizers && cp -r ../shared/tokenizers/gpt2 shared/tokenizers/
# transformer-lens and what it imports beyond that machine's image (its package list in
# /work/.library/device/KINDS.md); circuitx itself runs from the checkout (PYTHONPATH)
for wheel in transformer-lens==4.3.0 beartype datasets dill multiprocess fancy-einsum \
    transformers-stream-generator typeguard; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "$wheel" || echo "could not fetch $wheel" >&2
done
ls .whl
