"""Circuits over token positions against circuits over components: wall time and what
each method finds, on the planted IOI and greater-than models.

    python benchmarks/positions.py [--n-prompts 20] [--methods ...]

Each row runs ``discover`` twice on the same prompts, with ``--positions none`` and
``--positions named``, and reports the discovery's wall time (faithfulness off), the
universe's size, the node AUC against the planted circuit (at its positions for the
position run) and whether the position circuit's heads are exactly the planted heads at
their positions. The unit is one forward and one backward pass of the same prompts,
measured in the same process (the floor EAP's cost is a multiple of).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import circuitx as cx
from circuitx.models import EMBED_OUTPUT_HOOK
from circuitx.tasks import get_task

METHODS = ("activation-patching", "eap", "eap-ig", "cdt", "path-patching")


def unit_seconds(model, task: str, n_prompts: int) -> float:
    """One forward and one backward pass of the clean prompts (the END logits' sum as the
    loss, the gradient taken back to the embeddings' output), the best of three."""
    data = get_task(task).make_data(model, n_prompts, 0)

    def leaf(x: torch.Tensor) -> torch.Tensor:
        return x.detach().requires_grad_(True)

    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        logits = model.run(data.clean, [(EMBED_OUTPUT_HOOK, leaf)], data.positions["END"], True)
        logits.sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def _verdict(kept: set[str], planted: set[str]) -> str:
    """Whether the circuit's heads are the planted ones, and if not, how they differ."""
    if kept == planted:
        return "yes"
    if not kept:
        return "no (no head kept: every score below the default threshold)"
    differences = [
        f"{what} {', '.join(sorted(heads))}"
        for what, heads in (("missed", planted - kept), ("also kept", kept - planted))
        if heads
    ]
    return f"no ({'; '.join(differences)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=20)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tasks", default="ioi,greater-than")
    args = parser.parse_args()
    rows = []
    for task in args.tasks.split(","):
        model = cx.load_model("planted", task=task)
        unit = unit_seconds(model, task, args.n_prompts)
        for method in args.methods.split(","):
            row = {"task": task, "method": method, "unit_s": unit}
            for mode in ("none", "named"):
                graph = cx.discover(
                    model, task, method, n_prompts=args.n_prompts, positions=mode,
                    faithfulness=False,
                )  # fmt: skip
                reference, _ = cx.reference_circuit(graph)
                truth = {n for n, d in reference.nodes(data=True) if d["in_circuit"]}
                kept = {n for n, d in graph.nodes(data=True) if d["in_circuit"]}
                heads = {n for n in kept | truth if graph.nodes[n]["kind"] == "head"}
                row[mode] = {
                    "discovery_s": graph.graph["discovery_s"],
                    "nodes": graph.number_of_nodes(),
                    "edges": graph.number_of_edges(),
                    "node_auc": cx.score(graph)["node_auc"],
                    "exact_heads": heads & kept == heads & truth,
                    "heads_verdict": _verdict(heads & kept, heads & truth),
                }
            rows.append(row)
            none, named = row["none"], row["named"]
            print(
                f"| {task} | {method} | {none['discovery_s']:.2f} s "
                f"({none['discovery_s'] / unit:.0f}x) | {named['discovery_s']:.2f} s "
                f"({named['discovery_s'] / unit:.0f}x) | {none['node_auc']:.3f} | "
                f"{named['node_auc']:.3f} | {named['heads_verdict']} |",
                flush=True,
            )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
