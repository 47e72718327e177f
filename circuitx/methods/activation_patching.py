"""Node-level activation patching.

For every head and MLP, its output (all positions) is replaced by its patch value (the
corrupted run's, by default) while the rest of the clean run is kept. The score is the
normalised change of the task metric, (m_clean - m_patched) / (m_clean - m_corrupted): 1
when the patch alone removes the whole clean-corrupted difference, negative when the node
works against the behaviour (e.g. negative name movers).
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from circuitx.graph import component_nodes
from circuitx.methods.base import Method, MethodRun
from circuitx.patching import PatchingEngine


class ActivationPatching(Method):
    name = "activation-patching"
    title = "Activation patching of each head and MLP output (corrupted -> clean)"
    granularity = "node"
    default_threshold = 0.02

    def steps(self, graph: nx.MultiDiGraph, run: MethodRun) -> int:
        return len(component_nodes(graph))

    def score(
        self, engine: PatchingEngine, graph: nx.MultiDiGraph, run: MethodRun
    ) -> dict[str, Any]:
        nodes = component_nodes(graph)
        effects = engine.normalised_effect(engine.patch_each_node(nodes, run.advance))
        for node, effect in zip(nodes, effects.tolist()):
            graph.nodes[node]["score"] = float(effect)
        return {}
