"""Every method on the ACDC paper's two tracr models, under zero and corrupted ablation,
next to the paper's numbers (Conmy et al. 2023, arXiv 2304.14997, Appendix E).

    python benchmarks/tracr_paper.py [--out benchmarks/tracr.md] [--seed 0]

Each run is ``circuitx discover --task tracr --model M --method X --ablation A`` (metric
l2, every input for tracr-reverse, 50 of the 256 for tracr-proportion), scored against
both circuits the models ship: the one read from the compiled weights
(``--reference tracr:weights``) and ACDC's edge list, their default ground truth. sae
needs prompts the model cannot answer and refuses the task; its row says so. The paper's
AUCs are its pessimistic staircase (tied scores count as misses), so the ACDC list's are
given that way too, and a last table sets ACDC's, HISP's and SP's beside the paper's
(HISP and SP score nodes; as in the paper, an edge is in their circuit when both its ends
are, so an edge scores the smaller |score| of its ends there).
(Not named tracr.py: a script of that name would shadow the tracr package it imports.)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import networkx as nx

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.leaderboard.cells import machine
from circuitx.methods import METHODS

MODELS = ("tracr-reverse", "tracr-proportion")
ABLATIONS = ("zero", "corrupted")
# The paper's Table (Appendix E): edge ROC AUC of ACDC / HISP / SP, and ACDC's node AUC
# (each its pessimistic AUC).
PAPER_EDGE_AUC = {
    ("tracr-reverse", "zero"): {"ACDC": 1.000, "HISP": 0.577, "SP": 0.801},
    ("tracr-reverse", "corrupted"): {"ACDC": 0.200, "HISP": 0.577, "SP": 0.193},
    ("tracr-proportion", "zero"): {"ACDC": 1.000, "HISP": 0.679, "SP": 0.829},
    ("tracr-proportion", "corrupted"): {"ACDC": 0.679, "HISP": 0.679, "SP": 0.525},
}
BASELINES = (("ACDC", "acdc"), ("HISP", "hisp"), ("SP", "subnetwork-probing"))
PAPER_ACDC_NODE_AUC = {
    ("tracr-reverse", "zero"): 1.000,
    ("tracr-reverse", "corrupted"): 0.312,
    ("tracr-proportion", "zero"): 1.000,
    ("tracr-proportion", "corrupted"): 0.750,
}


def edges_from_nodes(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A node-level graph with each edge scored the smaller |score| of its two ends (the
    input and the logits, which every circuit has, count as infinite)."""
    graph = graph.copy()
    size = {
        node: math.inf if data["kind"] in ("input", "logits") else abs(data["score"])
        for node, data in graph.nodes(data=True)
    }
    for sender, receiver, data in graph.edges(data=True):
        data["score"] = min(size[sender], size[receiver])
    return graph


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "tracr.md"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = [
        "| model | ablation | method | node AUC | edge AUC | node AUC (ACDC list) "
        "| edge AUC (ACDC list) | pessimistic node / edge AUC (ACDC list) | edges kept "
        "| time (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours: dict[tuple[str, str, str], dict] = {}  # (model, ablation, method): ACDC-list metrics
    for name in MODELS:
        model = load_model(name)
        truths = {
            "weights": ground_truth(name, "tracr:weights"),
            "acdc": ground_truth(name, "tracr:acdc"),
        }
        for ablation in ABLATIONS:
            for method in METHODS:
                request = DiscoveryRequest("tracr", method, name, seed=args.seed, ablation=ablation)
                start = time.perf_counter()
                try:
                    graph = discover(model, request)
                except CircuitxError as error:
                    lines.append(f"| {name} | {ablation} | {method} | {error} ||||||||")
                    continue
                took = time.perf_counter() - start
                scores = {
                    key: report(graph, truth, key)["metrics"] for key, truth in truths.items()
                }
                kept = report(graph, None, None)["n_edges_in_circuit"]
                acdc = scores["acdc"]
                ours[name, ablation, method] = acdc
                if acdc["edge_auc"] is None and method in dict(BASELINES).values():
                    ours[name, ablation, method] = report(
                        edges_from_nodes(graph), truths["acdc"], "acdc"
                    )["metrics"]
                lines.append(
                    f"| {name} | {ablation} | {method} | {cell(scores['weights']['node_auc'])} "
                    f"| {cell(scores['weights']['edge_auc'])} | {cell(acdc['node_auc'])} "
                    f"| {cell(acdc['edge_auc'])} | {cell(acdc['node_auc_pessimistic'])} / "
                    f"{cell(acdc['edge_auc_pessimistic'])} | {kept} | {took:.1f} |"
                )
                print(lines[-1], flush=True)
    paper = [
        "| model | ablation | ACDC edge AUC | HISP edge AUC | SP edge AUC | ACDC node AUC |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, ablation), row in PAPER_EDGE_AUC.items():
        paper.append(
            f"| {name} | {ablation} | {row['ACDC']:.3f} | {row['HISP']:.3f} | {row['SP']:.3f} "
            f"| {PAPER_ACDC_NODE_AUC[name, ablation]:.3f} |"
        )
    side = [
        "| model | ablation | ACDC edge AUC | HISP edge AUC | SP edge AUC | ACDC node AUC |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, ablation), row in PAPER_EDGE_AUC.items():
        here = {label: ours.get((name, ablation, method), {}) for label, method in BASELINES}
        edges = " | ".join(
            f"{cell(here[label].get('edge_auc_pessimistic'))} ({row[label]:.3f})"
            for label, _ in BASELINES
        )
        node = cell(here["ACDC"].get("node_auc_pessimistic"))
        paper_node = PAPER_ACDC_NODE_AUC[name, ablation]
        side.append(f"| {name} | {ablation} | {edges} | {node} ({paper_node:.3f}) |")
    text = (
        f"Written by `python benchmarks/tracr_paper.py --seed {args.seed}` on {machine()}.\n\n"
        "### circuitx\n\n"
        + "\n".join(lines)
        + "\n\n### The ACDC paper (Appendix E)\n\n"
        + "\n".join(paper)
        + "\n\n### Side by side: circuitx's pessimistic AUC against ACDC's list (the paper's in brackets)\n\n"
        + "\n".join(side)
        + "\n"
    )
    with atomic_open(Path(args.out)) as handle:
        handle.write(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
