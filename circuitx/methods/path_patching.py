"""Path patching (Wang et al. 2022, "Interpretability in the Wild").

Stage 1 patches each sender's direct path to the logits: the logits read the sender's
patch value while everything else is clean. The senders whose normalised effect reaches
the selection threshold are found. Each later stage takes the heads and MLPs found in
the stage before as receivers, in four groups (the heads' q inputs, their k inputs, their
v inputs, the MLPs' inputs), and patches each earlier sender's paths into all the
receivers of a group it can reach at once, as Wang et al. patch a sender into a class of
heads; everything downstream of the receivers recomputes.
It stops after ``stages`` stages or when a stage finds nothing new.

An edge's score is the normalised effect of the patch that contained it (0 when never
patched); a node's is its outgoing edge score of the largest magnitude.
"""

from __future__ import annotations

import torch

from circuitx.engine import Engine
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores
from circuitx.names import HEAD_INPUTS, parse_node


class PathPatching(Method):
    name = "path-patching"
    title = "Path patching: senders' paths to the logits, then to the q/k/v of heads found"
    granularity = "edge"
    scores_edges = True
    default_threshold = 0.02
    scores_positions = True
    reported_facts = (("path_patching_stages", "stages run"),)
    options = (
        Option(
            "stages",
            "int",
            5,
            "rounds, the first to the logits, each later one to the heads found before",
            low=1,
        ),
    )

    even_steps = False  # see Method.even_steps

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return int(run.options["stages"])

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        stages = int(run.options["stages"])
        layout = engine.layout
        scores = torch.zeros(layout.n_senders, layout.n_receivers, dtype=engine.model.work_dtype)
        found: set[int] = set()
        # groups of receivers patched together: first the logits (at each readout position)
        frontier = [list(range(layout.logits_receiver, layout.n_receivers))]
        valid = layout.valid
        done = 0
        for _ in range(stages):
            groups = [
                (sender, reached)
                for receivers in frontier
                for sender in range(max(layout.readable(r) for r in receivers))
                if (reached := [r for r in receivers if valid[sender, r]])
            ]
            patches = [[(sender, r) for r in receivers] for sender, receivers in groups]
            effects = engine.normalised_effect(engine.patch_each_edge(patches))
            new = set()
            for (sender, receivers), effect in zip(groups, effects.tolist()):
                scores[sender, receivers] = effect
                if sender >= layout.inputs and abs(effect) >= run.threshold and sender not in found:
                    new.add(sender)
            found |= new
            done += 1
            run.advance(1)
            frontier = _receiver_groups(layout, sorted(new))
            if not frontier:
                break
        run.advance(stages - done)
        return Scores.of_edges(scores, facts={"path_patching_stages": done})


def _receiver_groups(layout: Layout, senders: list[int]) -> list[list[int]]:
    """The found nodes' inputs as receiver groups: their heads' q inputs, their heads' k
    inputs, their heads' v inputs, and their MLPs' inputs (at each node's own position in
    a circuit over positions)."""
    heads, mlps = [], []
    for sender in senders:
        node = layout.senders[sender]
        if parse_node(node)[0] == "head":
            heads.append(node)
        else:
            mlps.append(layout.receiver(node))
    groups = [[layout.receiver(node, i) for node in heads] for i in HEAD_INPUTS]
    return [group for group in [*groups, mlps] if group]
