#!/usr/bin/env bash
# Every timing benchmark on CUDA, the GPT-2-small-shaped model at 100 and 1,000 prompts:
# wall time and peak GPU memory per step, as tables in one markdown file.
#
#   bash benchmarks/gpu.sh [OUTPUT.md]          (default: benchmarks/gpu.md)
#
# Made for the device machine (an H200 lent to some sessions): its python3 has torch with
# CUDA but not transformer-lens and a few of our other needs, which travel as wheels in
# .whl (benchmarks/gpu_wheels.sh fetches them here; name .whl in the run's carry). Each
# benchmark gets its own time limit so that the whole stays under 9 minutes; one that
# runs out says so in the table file and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/gpu.md}"
source benchmarks/gpu_env.sh  # wheels, PYTHONPATH, tokenizer, CUDA

bench() {  # seconds, title, command...
    local limit="$1" title="$2"
    shift 2
    local start=$SECONDS
    echo "## $title" >>"$out"
    echo >>"$out"
    echo "\`$*\`" >>"$out"
    echo >>"$out"
    if timeout "$limit" "$@" >>"$out" 2>/tmp/gpu-bench.err; then
        echo >>"$out"
        echo "($((SECONDS - start)) s)" >>"$out"
    else
        echo "(stopped or failed after $((SECONDS - start)) s; its last lines:" >>"$out"
        echo >>"$out"
        grep -v '^Loading\|^Writing' /tmp/gpu-bench.err | tail -n 6 | sed 's/^/    /' >>"$out"
        echo ")" >>"$out"
    fi
    echo >>"$out"
    { echo "== $title"; cat /tmp/gpu-bench.err; } >>"${out%.md}.log"  # each step's stderr
}

{
    echo "# Timing benchmarks on CUDA"
    echo
    python3 -c "import torch; print(f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}, started', end=' ')"
    date -u +"%Y-%m-%d %H:%M UTC"
    echo
} >"$out"
: >"${out%.md}.log"
bench 150 "Edge methods, 100 prompts" python3 benchmarks/edge_methods.py --device cuda --n-prompts 100
bench 90 "CD-T, 100 prompts" python3 benchmarks/cdt.py --device cuda --skip-planted --n-prompts 100
bench 120 "Edge methods, 1,000 prompts" \
    python3 benchmarks/edge_methods.py --device cuda --n-prompts 1000 --skip-acdc
bench 50 "Discrete-SAE overlap, 1,000 prompts" python3 benchmarks/sae.py --device cuda \
    --n-prompts 1000 --skip-planted --skip-examples --skip-settings --skip-health \
    --skip-histograms --skip-separability
bench 70 "Transcoders" python3 benchmarks/transcoder.py --device cuda --skip-planted
bench 40 "Loading a model: peak and held GPU memory" python3 benchmarks/load_memory.py --device cuda
cat "$out"
