"""Scale check: EAP and EAP-IG at 50 IOI prompts on two larger shapes, within this
machine's memory. Time and peak memory as ratios to one forward+backward pass.

    python benchmarks/scale.py [--n-prompts 50] [--device cpu]

Models (seeded random weights, the word-level tokenizer over the tasks' words, so the
embeddings are small and the layers carry the size):
- GPT-2-medium-shaped: 24 layers x 16 heads, d_model 1024, MLPs 4096.
- Qwen2.5-0.5B's layout at half width: 24 layers, 14 query heads sharing 2 key/value
  heads (grouped-query; ungrouped at load), d_model 448 (Qwen's 896 / 2), MLPs 2432
  (4864 / 2), RMSNorm, rotary positions, gated MLPs.
Each step runs in a fresh process through benchmarks/edge_methods.py's step runner
(a warm-up pass on two prompts first; peak memory is the rise of the peak resident size).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from edge_methods import _table, in_fresh_process  # noqa: E402  (the step runner)

from circuitx.builtin.hf import save_causal_lm, word_level_tokenizer
from circuitx.layout import Layout
from circuitx.tasks import task_vocabulary

# name -> (family, layers, heads, d_model, d_mlp)
SHAPES = {
    "GPT-2-medium-shaped (24 x 16, d_model 1024)": ("gpt2", 24, 16, 1024, 4096),
    "Qwen2.5-0.5B layout at half width (24 x 14, 2 kv heads, d_model 448)": (
        "qwen2", 24, 14, 448, 2432,
    ),
}  # fmt: skip
STEPS = ("floor", "engine", "eap", "eap-ig")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    options = ["--n-prompts", str(args.n_prompts), "--device", args.device]
    runner = str(HERE / "edge_methods.py")
    tokenizer = word_level_tokenizer(task_vocabulary())
    print(
        f"{platform.machine()}, device {args.device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; {args.n_prompts} IOI prompts; each step in a fresh process"
    )
    for title, (family, layers, heads, d_model, d_mlp) in SHAPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            save_causal_lm(Path(tmp), family, tokenizer, layers, heads, d_model, 0, d_mlp=d_mlp)
            results = {step: in_fresh_process(runner, step, tmp, options) for step in STEPS}
        n, width = results["floor"]["shape"]
        edges = int(Layout(layers, heads, True).valid.sum())
        print(f"\n## {title}: {edges} edges, {n} prompts x {width} tokens\n")
        _table([(step, results[step]) for step in STEPS], results["floor"])


if __name__ == "__main__":
    main()
