# Sourced by gpu.sh and gpu_methods.sh from the repository's root, on the device machine:
# the carried wheels (.whl, from gpu_wheels.sh) installed beside the image's packages,
# circuitx from the checkout, the GPT-2 tokenizer from ./shared (../shared does not travel
# there; gpu_wheels.sh copies it, git ignores it), and a CUDA device checked for.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
[ -d shared/tokenizers/gpt2 ] && export CIRCUITX_SHARED="$PWD/shared"
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
export PYTHONUNBUFFERED=1
