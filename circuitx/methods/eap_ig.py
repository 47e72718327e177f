"""EAP with integrated gradients (Hanna, Pezzelle and Belinkov 2024; MIB's variants).

As EAP, with the gradient averaged over passes that run between the patch values and the
clean ones; the activation differences stay the clean run's. ``--ig-mode``:

- ``inputs`` (default; the authors' EAP-IG, MIB's EAP-IG-inputs and its recommended
  starting point): ``ig_steps`` passes whose embeddings are patch + (j / steps)
  (clean - patch), j = 0 .. steps - 1.
- ``activations`` (MIB's EAP-IG-activations, hannamw/EAP-IG ``ig_activations``): for each
  node group in turn (the embeddings, a layer's heads, an MLP) and k = 1 .. steps, a pass
  in which that group alone writes patch + (k / steps) (clean - patch), a constant, the
  rest running on the clean prompts: (1 + groups) x steps passes, a layer's heads and its
  MLP two groups (one in a model without MLPs).
- ``clean-corrupted`` (hannamw/EAP-IG ``clean-corrupted``): the gradients of the clean and
  of the fully patched run, averaged: 2 passes.

Scores are divided by the number of passes and the clean - ablated metric gap (clean -
corrupted under corrupted ablation, the only one ``inputs`` and ``clean-corrupted`` take). The
passes share the cached runs, and their gradients at each receiver are summed before the
one product with the senders' differences.
"""

from __future__ import annotations

from typing import Any

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores, above_resolution
from circuitx.models import Model
from circuitx.patching import Mix

IG_MODES = ("inputs", "activations", "clean-corrupted")


def interpolations(layout: Layout, mode: str, steps: int) -> list[Mix]:
    """The passes of ``mode``: for each, the chunk interpolated and how far towards clean."""
    if mode == "inputs":
        return [(0, step / steps) for step in range(steps)]
    if mode == "clean-corrupted":
        return [(0, 1.0), (0, 0.0)]
    return [(chunk.first, step / steps) for chunk in layout.chunks for step in range(1, steps + 1)]


class EAPIG(Method):
    name = "eap-ig"
    title = "EAP with integrated gradients over the clean <-> corrupted inputs"
    granularity = "edge"
    scores_edges = True
    default_threshold = 0.02
    scores_positions = True
    options = (
        Option(
            "ig_steps",
            "int",
            5,
            "interpolation steps between corrupted and clean inputs",
            low=1,
            only_with=("ig_mode", ("inputs", "activations")),
        ),
        Option(
            "ig_mode",
            "str",
            "inputs",
            "what is interpolated: the embeddings (inputs), each node group's output in turn "
            "(activations: 1 + 2 x layers times the passes, 1 + layers without MLPs), or "
            "only the clean and the corrupted run (clean-corrupted: 2 passes)",
            choices=IG_MODES,
        ),
    )

    def ablation_refusal(self, options: dict[str, Any], ablation: str) -> str | None:
        """``inputs`` and ``clean-corrupted`` move the embeddings alone, the rest of the
        model running live: their path ends at the corrupted run, not at the mean- or
        zero-ablated one whose differences the scores multiply (the authors' code
        refuses them too)."""
        mode = options["ig_mode"]
        if ablation == "corrupted" or mode == "activations":
            return None
        return (
            f"eap-ig's --ig-mode {mode} moves the embeddings between the clean and the "
            f"corrupted prompts, so its path never reaches the {ablation}-ablated run (its "
            "authors' code refuses it too); use --ig-mode activations"
        )

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return len(self._interpolations(layout, run))

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        """A pass kept for the backward pass, and the gradient sums at every receiver."""
        return gradient_floats_per_token(model) + model.layout.n_receivers * model.d_model

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        mixes = self._interpolations(engine.layout, run)  # each on a part, then the next
        node_total, edge_total = engine.mask_gradients(mixes, run.advance)
        scale = len(mixes) * engine.gap
        edges, nodes = edge_total / scale, node_total / scale
        return Scores.of_edges(
            above_resolution(edges, engine.model), above_resolution(nodes, engine.model)
        )

    @staticmethod
    def _interpolations(layout: Layout, run: MethodRun) -> list[Mix]:
        return interpolations(layout, run.options["ig_mode"], int(run.options["ig_steps"]))
