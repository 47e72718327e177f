"""Node-level activation patching.

For every head and MLP, its output (all positions) is replaced by its patch value (the
corrupted run's, by default) while the rest of the clean run is kept (noising). The score
is the normalised change of the task metric, (m_clean - m_patched) / (m_clean -
m_ablated), m_ablated with every node patched (the corrupted run under the default
ablation): 1 when the patch alone removes the whole difference, negative when the node
works against the behaviour (e.g. negative name movers).
"""

from __future__ import annotations

import torch

from circuitx.engine import Engine
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Scores


class ActivationPatching(Method):
    name = "activation-patching"
    title = "Activation patching of each head and MLP output (patch value into the clean run)"
    granularity = "node"
    default_threshold = 0.02
    scores_positions = True

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return layout.n_senders - layout.inputs

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        inputs = engine.layout.inputs
        nodes = engine.layout.senders[inputs:]  # every head and MLP
        effects = engine.normalised_effect(engine.patch_each_node(nodes, run.advance))
        return Scores(nodes=torch.cat([torch.zeros(inputs), effects.double()]))
