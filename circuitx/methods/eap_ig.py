"""EAP with integrated gradients over the inputs (Hanna, Pezzelle and Belinkov 2024).

As EAP, but the gradient is averaged over ``ig_steps`` passes whose embeddings run from
the patch value towards the clean ones, patch + (j / steps) (clean - patch) for
j = 0 .. steps - 1 as in the authors' code; the activation differences stay the clean
run's. Scores are divided by the clean - corrupted metric gap. The steps share the
cached runs, and their gradients at each receiver are summed before the one product with
the senders' differences.
"""

from __future__ import annotations

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores, above_resolution
from circuitx.models import Model


class EAPIG(Method):
    name = "eap-ig"
    title = "EAP with integrated gradients over the clean <-> corrupted inputs"
    granularity = "edge"
    default_threshold = 0.02
    options = (
        Option(
            "ig_steps", "int", 5, "interpolation steps between corrupted and clean inputs", low=1
        ),
    )

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return int(run.options["ig_steps"])

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        """A pass kept for the backward pass, and the gradient sums at every receiver."""
        return gradient_floats_per_token(model) + model.layout.n_receivers * model.d_model

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        steps = int(run.options["ig_steps"])
        mixes = [step / steps for step in range(steps)]  # every step on a part, then the next
        node_total, edge_total = engine.mask_gradients(mixes, run.advance)
        scale = steps * engine.gap
        edges, nodes = edge_total / scale, node_total / scale
        return Scores.of_edges(above_resolution(edges), above_resolution(nodes))
