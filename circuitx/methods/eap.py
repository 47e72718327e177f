"""Edge attribution patching (Syed, Rager and Conmy 2023).

One forward and one backward pass on the clean prompts. The score of an edge u -> v is
the first-order estimate of patching it, (clean_u - patch_u) . d metric / d input_v,
summed over prompts' positions and averaged over prompts: the gradient of the metric with
respect to the engine's edge mask. A node's score is the same estimate for patching the
node (the gradient with respect to the node mask). Scores are divided by the
clean - ablated metric gap (clean - corrupted under corrupted ablation), so that they
read like activation patching's.

``--qk-fix on`` and ``--grad-drop on`` add AtP*'s two fixes (Kramar et al. 2024; see
:mod:`circuitx.methods.attribution`): edges into queries and keys through the exact
softmax, and the mean magnitude over L backward passes that each drop one block.
"""

from __future__ import annotations

from circuitx.engine import Engine
from circuitx.methods.atp import FixedAttribution, fix_options, fixed_estimates
from circuitx.methods.base import MethodRun, Scores, above_resolution


class EAP(FixedAttribution):
    name = "eap"
    title = "Edge attribution patching: gradient x activation difference, one backward pass"
    granularity = "edge"
    scores_edges = True
    default_threshold = 0.02
    options = fix_options("off", "off")
    scores_positions = True

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        run = self.filled(run)
        if run.options["qk_fix"] == "off" and run.options["grad_drop"] == "off":
            node_grad, edge_grad = engine.mask_gradients()
            run.advance(1)
            edges, nodes = edge_grad / engine.gap, node_grad / engine.gap
        else:
            nodes, edges = fixed_estimates(engine, run)
        return Scores.of_edges(
            above_resolution(edges, engine.model), above_resolution(nodes, engine.model)
        )
