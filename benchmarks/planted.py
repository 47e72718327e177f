"""Certificates of the planted-circuit models, and activation patching against their ground truth.

    python benchmarks/planted.py [--n-prompts 50]

Prints a Markdown table: one row per (planted model, task).
"""

from __future__ import annotations

import argparse
import time

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.planted import PLANTED
from circuitx.certificate import certify
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.progress import fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-prompts", type=int, default=50)
    args = parser.parse_args()
    print(
        "| model | task | clean metric | corrupted | clean acc | faithfulness (rest patched) "
        "| circuit patched | max effect outside | min effect inside | norm ratio "
        "| activation patching node AUC | time |"
    )
    print("|" + "---|" * 12)
    for name, spec in PLANTED.items():
        model = load_model(name)
        for task in spec.circuits():
            start = time.perf_counter()
            truth = ground_truth(name, task)
            cert = certify(model, task, truth, args.n_prompts)
            graph = discover(
                model, DiscoveryRequest(task, "activation-patching", n_prompts=args.n_prompts)
            )
            auc = report(graph, truth, "truth")["metrics"]["node_auc"]
            print(
                f"| {name} | {task} | {fixed(cert.clean_metric)} | {fixed(cert.corrupted_metric)} "
                f"| {cert.clean_accuracy:.2f} | {fixed(cert.complement_faithfulness, 4)} "
                f"| {fixed(cert.circuit_patched, 4)} | {fixed(cert.max_outside_effect, 5)} "
                f"| {cert.min_inside_effect:.3f} | {cert.norm_ratio:.2f} | {auc:.3f} "
                f"| {time.perf_counter() - start:.1f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
