#!/usr/bin/env bash
# Every method on CUDA: the planted leaderboard at seed 0 on the GPU, to set beside the same
# cells on the CPU (`circuitx leaderboard ... --seeds 1 --device cpu`): each method must run
# there with its prompts and caches on the device, and find what it finds on the CPU.
#
#   bash benchmarks/gpu_methods.sh [OUTPUT_DIR]      (default: benchmarks/leaderboard-gpu)
#
# Two runs, each under its own time limit: every method but the learned masks on every
# planted task, then the learned masks (edge pruning, subnetwork probing), which train for
# hundreds of steps. Each run's results.md and its --json output go into OUTPUT_DIR as
# <run>.md and <run>.json, and its finished cells into <run>-cells.tar.gz (a run stopped by
# its limit leaves only those). Wheels as for benchmarks/gpu.sh (carry .whl).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/leaderboard-gpu}"
mkdir -p "$out"
source benchmarks/gpu_env.sh  # wheels, PYTHONPATH, tokenizer, CUDA
work=$(mktemp -d)

board() {  # seconds, run name, methods
    local limit="$1" name="$2" methods="$3" start=$SECONDS
    timeout "$limit" python3 -m circuitx leaderboard --tasks all --methods "$methods" \
        --model planted --seeds 1 --jobs 8 --device cuda --out "$work/$name" --json \
        >"$work/$name.out" 2>"$work/$name.err"
    echo "$name: exit $? after $((SECONDS - start)) s" | tee -a "$out/runs.txt"
    tail -n 3 "$work/$name.err" >>"$out/runs.txt"
    cp "$work/$name/results.md" "$out/$name.md" 2>/dev/null
    [ -s "$work/$name.out" ] && cp "$work/$name.out" "$out/$name.json"
    tar -czf "$out/$name-cells.tar.gz" -C "$work/$name" cells 2>/dev/null
}

: >"$out/runs.txt"
board 150 methods "activation-patching,path-patching,cdt,sae,transcoder,acdc,eap,eap-ig,atp,\
hisp,eap[qk-fix=on],eap-ig[ig-mode=activations]"
board 120 masks "subnetwork-probing,edge-pruning"
cat "$out/runs.txt"
