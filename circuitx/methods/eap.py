"""Edge attribution patching (Syed, Rager and Conmy 2023).

One forward and one backward pass on the clean prompts. The score of an edge u -> v is
the first-order estimate of patching it, (clean_u - patch_u) . d metric / d input_v,
summed over prompts' positions and averaged over prompts: the gradient of the metric with
respect to the engine's edge mask. A node's score is the same estimate for patching the
node (the gradient with respect to the node mask). Scores are divided by the
clean - corrupted metric gap, so that they read like activation patching's.
"""

from __future__ import annotations

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Scores, above_resolution
from circuitx.models import Model


class EAP(Method):
    name = "eap"
    title = "Edge attribution patching: gradient x activation difference, one backward pass"
    granularity = "edge"
    default_threshold = 0.02

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return 1

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        return gradient_floats_per_token(model)

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        node_grad, edge_grad = engine.mask_gradients()
        run.advance(1)
        edges, nodes = edge_grad / engine.gap, node_grad / engine.gap
        return Scores.of_edges(above_resolution(edges), above_resolution(nodes))
