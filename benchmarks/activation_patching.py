"""Time activation patching on a GPT-2-small-shaped random model (12 x 12, d_model 768).

    python benchmarks/activation_patching.py [--n-prompts 20] [--device cpu]

Builds the model in a temporary directory with the real GPT-2 tokenizer from
../shared/tokenizers/gpt2 (set CIRCUITX_SHARED where shared/ lives elsewhere), then times one clean forward pass (the floor) and a full
node-level activation-patching discovery on IOI, and prints both and their ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import tiny_gpt2  # noqa: E402  (the tests' model builder)

from circuitx.discovery import DiscoveryRequest, discover
from circuitx.models import load_model
from circuitx.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tiny_gpt2(Path(tmp), 12, 12, 768, seed=0)
        model = load_model(tmp, device=args.device)
        data = get_task("ioi").make_data(model, args.n_prompts, seed=0)
        model.run(data.clean, positions=data.positions["END"])  # warm-up
        start = time.perf_counter()
        model.run(data.clean, positions=data.positions["END"])
        floor = time.perf_counter() - start
        start = time.perf_counter()
        discover(model, DiscoveryRequest("ioi", "activation-patching", n_prompts=args.n_prompts))
        patching = time.perf_counter() - start
    print(
        f"device {args.device}, {torch.get_num_threads()} threads, {args.n_prompts} IOI prompts, "
        f"{data.clean.shape[1]} tokens"
    )
    print(f"one forward pass       {floor:8.3f} s")
    print(
        f"activation patching    {patching:8.3f} s  ({patching / floor:.0f} x the forward pass; "
        f"{model.n_layers * (model.n_heads + 1)} nodes)"
    )


if __name__ == "__main__":
    main()
