"""HISP: head importance scores for pruning (Michel, Levy and Neubig 2019, "Are Sixteen
Heads Really Better than One?"), as the ACDC paper uses it as a baseline.

Each head and MLP gets a gate on its output at 1 (the engine's node mask under zero
ablation: 1 keeps the clean output, 0 zeroes it), whatever the run's ablation: Michel et
al.'s gate scales a head's output toward zero, and so does ACDC's, which builds its gates
afresh with no cached activation (the same HISP column in its corrupted and zero tables);
the run's ablation only sets what faithfulness patches with. The importance of
a node is the expected magnitude of the metric's gradient with respect to its gate,
E_x |d metric(x) / d gate| -- the magnitude per prompt, before the mean, unlike
attribution patching's mean gradient -- and the scores are divided by their layer's L2
norm (heads and MLP together), as Michel et al. found necessary and ACDC's implementation
does (which gates each head's q, k and v apart; here a head has one gate, on its output,
as Michel et al.'s). One forward and one backward pass.
"""

from __future__ import annotations

import torch

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.layout import Layout
from circuitx.methods.base import GRADIENT_RESOLUTION, Method, MethodRun, Scores, above_resolution
from circuitx.models import Model


class HISP(Method):
    name = "hisp"
    title = "Head importance scores for pruning: E|d metric / d gate|, normalised per layer"
    granularity = "node"
    default_threshold = 0.3
    gradient_at_clean = True
    normalised = True
    own_ablation = "zero"

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return 1

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        return gradient_floats_per_token(model)

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        # importances this small are none, in every dtype: normalised, a layer of them
        # (float32's rounding of a zero, or float64's 1e-6 of the largest) would score
        # near 1 and enter the circuit
        gated = engine.zero_ablated()
        magnitudes = gated.gate_gradient_magnitudes()
        if gated is not engine:
            gated.release()
        importance = above_resolution(magnitudes, engine.model, GRADIENT_RESOLUTION)
        importance = importance.double().cpu()
        run.advance(1)
        return Scores(nodes=per_layer_normalised(engine.layout, importance))


def per_layer_normalised(layout: Layout, importance: torch.Tensor) -> torch.Tensor:
    """``importance`` [n_senders] with each layer's heads and MLP divided by their L2 norm
    (the input's entries set to 0)."""
    inputs = layout.inputs
    layers = torch.tensor([layout.sender_layer(s) for s in range(layout.n_senders)])
    norms = torch.zeros(layout.n_layers, dtype=importance.dtype)
    norms.index_add_(0, layers[inputs:], importance[inputs:] ** 2)
    scaled = importance / norms.sqrt().clamp(min=1e-12)[layers]
    scaled[:inputs] = 0.0
    return scaled
