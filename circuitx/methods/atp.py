"""AtP* at the node level (Kramar et al. 2024): attribution patching of every head and
MLP, with the QK fix and GradDrop (see :mod:`circuitx.methods.attribution`).

A node's estimate is AtP's, ``(clean_u - patch_u) . d metric / d u`` (EAP's node
gradient), with the part that reaches later heads' queries and keys replaced by the
QK-fixed estimates of those edges: the saturated softmax of a later head no longer hides
a node that only moves where it attends. With GradDrop, the mean magnitude over the L
backward passes that each drop one block. Scores are divided by the clean - ablated
metric gap (clean - corrupted under corrupted ablation).
"""

from __future__ import annotations

from dataclasses import replace

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.errors import NotApplicable
from circuitx.layout import Layout
from circuitx.methods.attribution import attributions, combined, drops_for
from circuitx.methods.base import Method, MethodRun, Option, Scores, above_resolution
from circuitx.models import Model, TransformerWeights, transformer_weights

SWITCH = ("on", "off")
# the fewest tokens a prompt is taken to have where a method's memory per prompt is
# counted per token (the built-in tasks' prompts have 12 to 40)
PROMPT_TOKENS_AT_LEAST = 8


def fix_options(qk_fix: str, grad_drop: str) -> tuple[Option, Option]:
    """The two fixes as options, with their defaults."""
    return (
        Option(
            "qk_fix", "str", qk_fix,
            "compute the patched attention pattern of each edge into a query or key exactly "
            "(two single-layer attention passes per sender into each layer)",
            choices=SWITCH,
        ),
        Option(
            "grad_drop", "str", grad_drop,
            "average the magnitudes of L estimates, each with one block's gradient dropped "
            "(L backward passes)",
            choices=SWITCH,
        ),
    )  # fmt: skip


def fix_weights(model: Model, run: MethodRun) -> TransformerWeights | None:
    """The weights the QK fix recomputes attention from, when it is on (an error for an
    architecture it cannot recompute), and a check that GradDrop has blocks to drop."""
    if run.options["grad_drop"] == "on" and model.n_layers < 2:
        raise NotApplicable(
            f"--grad-drop on (atp's default) needs at least 2 layers, as it drops one block's "
            f"gradient at a time, and this model has {model.n_layers}; pass --grad-drop off"
        )
    if run.options["qk_fix"] != "on":
        return None
    return transformer_weights(model, llama=True)


def fixed_passes(layout: Layout, run: MethodRun) -> int:
    """Progress steps of the fixed estimates: the backward passes and the layers the QK
    fix recomputes."""
    drops = len(drops_for(layout, run.options["grad_drop"] == "on"))
    return drops + (layout.n_layers if run.options["qk_fix"] == "on" else 0)


def fixed_estimates(engine: Engine, run: MethodRun):
    """Node [n_senders] and edge [n_senders, n_receivers] estimates with the fixes the
    options turn on, divided by the gap."""
    layout = engine.layout
    drops = drops_for(layout, run.options["grad_drop"] == "on")
    weights = fix_weights(engine.model, run)
    nodes, edges = attributions(engine, drops, weights, run.advance)
    return combined(layout, drops, nodes / engine.gap, edges / engine.gap)


class FixedAttribution(Method):
    """What ``atp`` and ``eap`` share: the fixes' checks, progress and memory, with the
    method's own defaults for options a run leaves out."""

    scores_positions = True
    gradient_at_clean = True

    def filled(self, run: MethodRun) -> MethodRun:
        """``run`` with the method's defaults for the options it does not set."""
        defaults = {option.name: option.default for option in self.options}
        return replace(run, options={**defaults, **run.options})

    def check(self, model: Model, run: MethodRun) -> None:
        fix_weights(model, self.filled(run))

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return fixed_passes(layout, self.filled(run))

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        floats = gradient_floats_per_token(model)
        if self.filled(run).options["grad_drop"] == "on":
            # each prompt's edge estimates of a pass, its QK-fixed ones and their mix
            # [n, senders, receivers] three times, counted over a prompt of
            # PROMPT_TOKENS_AT_LEAST tokens
            layout = model.layout
            floats += 3 * layout.n_senders * layout.n_receivers // PROMPT_TOKENS_AT_LEAST
        return floats


class ATP(FixedAttribution):
    name = "atp"
    title = "AtP*: attribution patching of nodes with the QK fix and GradDrop"
    granularity = "node"
    # GradDrop's mean magnitudes run below a plain estimate: a node's long paths survive
    # only in the passes that drop none of the blocks they cross (on planted IOI the
    # first head of its four-head chain scores 0.015; at 0.02 its circuit kept 0.28 of
    # the effect, at 0.005 all of it on the planted IOI, IOI-Llama and colored-objects)
    default_threshold = 0.005
    options = fix_options("on", "on")

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        nodes, _ = fixed_estimates(engine, self.filled(run))
        return Scores(nodes=above_resolution(nodes, engine.model).detach().double().cpu())
