"""CD-T: time against one forward pass, and what it finds on the planted models.

    python benchmarks/cdt.py [--n-prompts 100] [--device cpu] [--skip-timing] [--skip-planted]

Part 1: the GPT-2-small-shaped random model (12 x 12, d_model 768, the real GPT-2
tokenizer) on IOI. The unit is one forward pass of the plain model over the clean
prompts (no gradients). CD-T's time is its scoring on an engine whose clean and
corrupted runs are cached (the caching is its own row); faithfulness is not included.
Each step runs in a fresh process after a warm-up pass (see benchmarks/edge_methods.py);
the forward pass, the unit, is the median of three.

Part 2: ``circuitx discover --method cdt`` on every planted model (clean and hard) for
its task(s), scored against the planted ground truth, on 50 prompts (whatever
``--n-prompts``, which sizes Part 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import tiny_gpt2  # noqa: E402  (the tests' model builder)
from edge_methods import (  # noqa: E402
    gpt2_small_heading,
    in_fresh_process,
    measure,
    measure_unit,
    method_step,
    one_batch,
)

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.planted import PLANTED
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.tasks import get_task

STEPS = ("forward", "engine", "cdt")


def run_step(step: str, model_dir: str, args: argparse.Namespace) -> dict:
    """One step in this (fresh) process: its time and peak memory, and the batch shape."""
    task = get_task("ioi")
    model = load_model(model_dir, device=args.device)
    data = task.make_data(model, args.n_prompts, seed=0)
    end = data.positions["END"]
    model.run(task.make_data(model, 2, seed=1).clean)  # warm-up, small batch
    if step == "forward":
        action = lambda: model.run(data.clean, positions=end)
    elif step == "engine":
        action = lambda: one_batch(model, task, data)
    else:
        action = method_step(one_batch(model, task, data), step)
    seconds, mib = (measure_unit if step == "forward" else measure)(
        action, torch.device(args.device)
    )
    return {"seconds": seconds, "mib": mib, "shape": list(data.clean.shape)}


def timing(args: argparse.Namespace) -> None:
    options = ["--n-prompts", str(args.n_prompts), "--device", args.device]
    with tempfile.TemporaryDirectory() as tmp:
        tiny_gpt2(Path(tmp), 12, 12, 768, seed=0)
        results = {step: in_fresh_process(__file__, step, tmp, options) for step in STEPS}
    print(gpt2_small_heading(results["forward"]["shape"], args.device))
    labels = {
        "forward": "one forward pass (unit)",
        "engine": "engine: cache clean + corrupted runs",
        "cdt": "cdt: 158 decompositions + discovery",
    }
    unit = results["forward"]
    print("| step | time (s) | x forward | peak memory (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for step in STEPS:
        seconds, mib = results[step]["seconds"], results[step]["mib"]
        memory = "-" if mib is None else f"{mib:.0f}"
        print(f"| {labels[step]} | {seconds:.2f} | {seconds / unit['seconds']:.1f} | {memory} |")


def planted(args: argparse.Namespace) -> None:
    print("\n## planted models, 50 prompts, against the planted ground truth\n")
    print(
        "| model | task | node AUC | edge AUC | node P | node R | faithfulness | CPR | CMD "
        "| time (s) |"
    )
    print("|" + " --- |" + " ---: |" * 9)
    for name, spec in PLANTED.items():
        model = load_model(name, device=args.device)
        for task in spec.circuits():
            graph = discover(model, DiscoveryRequest(task, "cdt", n_prompts=50))
            summary = report(graph, ground_truth(name, task), "truth")
            m = summary["metrics"]
            print(
                f"| {name} | {task} | {m['node_auc']:.3f} | {m['edge_auc']:.3f} "
                f"| {m['node_precision']:.2f} | {m['node_recall']:.2f} "
                f"| {summary['faithfulness']:.2f} | {summary['cpr']:.3f} | {summary['cmd']:.3f} "
                f"| {summary['discovery_s']:.1f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # internal
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.step:
        print(json.dumps(run_step(args.step, args.model_dir, args)))
        return
    if not args.skip_timing:
        timing(args)
    if not args.skip_planted:
        planted(args)


if __name__ == "__main__":
    main()
