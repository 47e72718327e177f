"""EAP with integrated gradients over the inputs (Hanna, Pezzelle and Belinkov 2024).

As EAP, but the gradient is averaged over ``ig_steps`` passes whose embeddings run from
the patch value towards the clean ones, patch + (j / steps) (clean - patch) for
j = 0 .. steps - 1 as in the authors' code; the activation differences stay the clean
run's. Scores are divided by the clean - corrupted metric gap.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.methods.base import Method, MethodRun, write_scores
from circuitx.patching import PatchingEngine


class EAPIG(Method):
    name = "eap-ig"
    title = "EAP with integrated gradients over the clean <-> corrupted inputs"
    granularity = "edge"
    default_threshold = 0.02
    options = {"ig_steps": 5}

    def steps(self, graph: nx.MultiDiGraph, run: MethodRun) -> int:
        return int(run.options["ig_steps"])

    def score(
        self, engine: PatchingEngine, graph: nx.MultiDiGraph, run: MethodRun
    ) -> dict[str, Any]:
        steps = int(run.options["ig_steps"])
        if steps < 1:
            raise CircuitxError(f"--ig-steps must be at least 1, got {steps}")
        node_total = edge_total = None
        for step in range(steps):
            node_grad, edge_grad = engine.mask_gradients(mix=step / steps)
            node_total = node_grad if node_total is None else node_total + node_grad
            edge_total = edge_grad if edge_total is None else edge_total + edge_grad
            run.advance(1)
        scale = steps * engine.gap
        write_scores(graph, engine.layout, edge_total / scale, node_total / scale)
        return {}
