"""Learned masks: subnetwork probing over the nodes (Cao, Sanh and Rush 2021, as the ACDC
paper runs it), trained with Edge Pruning's schedule (Bhaskar et al. 2024).

Every head and MLP gets a hard-concrete gate (Louizos, Welling and Kingma 2018) on its
output: z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (zeta - gamma) + gamma,
0, 1), u uniform, so a gate is exactly 0 or 1 with positive probability. A gate is the
engine's node mask: 1 the node's own output, 0 its patch value (the run's ablation), in
between a mix, with the differences of the masked pass itself. The loss is the KL
divergence of the masked model's answer distribution from the full model's (subnetwork
probing's ``--sp-loss metric``: minus the task metric, as the ACDC paper's task-metric
runs minimise it), plus a
Lagrangian that holds the expected share of gates that are 0 at a target that rises
linearly from 0 to ``sparsity`` over the first ``warmup`` share of the steps (its two
multipliers are raised by gradient ascent, as Edge Pruning does). Adam on log_alpha,
every prompt in every step (the engine's parts in turn, one draw of the gates shared by
them, so the gates do not depend on the memory budget). A node's score is the
probability that its gate is not 0; the default selection keeps those above 1/2.
Deterministic under the seed (the uniform noise is drawn from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores
from circuitx.models import Model
from circuitx.patching import PatchingEngine

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # the hard-concrete stretch (Louizos et al.)
REPORT_EVERY = 50  # steps between the progress bar's loss and sparsity
# a run whose expected sparsity ends below this share of its target did not train
SHORT_OF_TARGET = 0.9
# nor one that keeps more than this many times the open share its target asks (edge
# pruning at 0.975 reached 0.945 with the authors' learning rate: twice the edges open)
OPEN_BEYOND_TARGET = 1.5


def sample_gates(log_alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One hard-concrete draw of every gate."""
    u = torch.rand(log_alpha.shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((u.log() - (-u).log1p() + log_alpha) / BETA)
    return (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


def open_probability(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate != 0) of every gate: the expected L0 norm's terms."""
    return torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))


def answer_kl(final: torch.Tensor, clean_final: torch.Tensor) -> torch.Tensor:
    """KL(full model || masked model) of the answer distributions, mean over rows."""
    clean = torch.log_softmax(clean_final, -1)  # logits: in the work dtype
    masked = torch.log_softmax(final, -1)
    return (clean.exp() * (clean - masked)).sum(-1).mean()


def metric_loss(part: PatchingEngine, final: torch.Tensor) -> torch.Tensor:
    """Minus the task metric's mean (every metric is higher the more the model does the
    task): the ACDC paper's subnetwork probing on a task metric minimises it so (its
    ``logit_diff_metric`` is negated "so we minimize")."""
    return -part.metric(final).mean()


def kl_loss(part: PatchingEngine, final: torch.Tensor) -> torch.Tensor:
    """KL(full model || masked model) of the answer distributions."""
    return answer_kl(final, part.clean_final)


LOSSES = {"kl": kl_loss, "metric": metric_loss}


def train_gates(
    engine: Engine,
    run: MethodRun,
    n_gates: int,
    masks: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    options: tuple[int, float, float, float],
    name: str,
    loss: str = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Train ``n_gates`` hard-concrete gates, ``masks(gates)`` giving the masked pass's
    ``node_mask`` or ``edge_mask``; ``options``: steps, target sparsity, warm-up share and
    learning rate; ``loss``: a key of :data:`LOSSES`. The probability each gate is open
    [n_gates] (float64) and the final loss (``final_kl``, or ``final_metric``: the masked
    model's mean metric) and expected sparsity."""
    loss_of = LOSSES[loss]
    steps, target, warmup_share, lr = options
    warmup = max(1, round(warmup_share * steps))
    log_alpha = torch.full((n_gates,), 3.0, requires_grad=True)  # gates start open
    multipliers = torch.zeros(2, requires_grad=True)
    optimiser = torch.optim.Adam([log_alpha], lr=lr)
    ascent = torch.optim.Adam([multipliers], lr=lr)
    generator = torch.Generator().manual_seed(run.seed)
    loss_value, sparsity_value = torch.zeros(()), torch.zeros(())
    for step in range(steps):
        optimiser.zero_grad()
        ascent.zero_grad()
        goal = target * min(1.0, (step + 1) / warmup)
        gates = sample_gates(log_alpha, generator)  # one draw per step, shared by the parts
        drawn = gates.detach().requires_grad_()
        total = 0.0
        for part, weight in engine.parts():
            final = part.run(**masks(drawn), train=True)
            term = loss_of(part, final[0]) * weight
            term.backward()
            total = total + term.detach()
        expected_sparsity = 1.0 - open_probability(log_alpha).mean()
        gap = expected_sparsity - goal
        penalty = multipliers[0] * gap + multipliers[1] * gap**2
        torch.autograd.backward([penalty, gates], [torch.ones(()), drawn.grad])
        multipliers.grad.neg_()  # the multipliers rise where the target is missed
        optimiser.step()
        ascent.step()
        # the loss as the user reads it: the KL, or the masked model's metric
        loss_value = total if loss == "kl" else -total
        sparsity_value = expected_sparsity.detach()
        if (step + 1) % REPORT_EVERY == 0 or step + 1 == steps:  # a host read: not each step
            which = "KL" if loss == "kl" else "metric"
            shown = f"{which} {float(loss_value):.4f}, sparsity {float(sparsity_value):.2f}"
            run.advance(1, f"{name}: {shown}")
        else:
            run.advance(1)
    with torch.no_grad():
        keep = open_probability(log_alpha).double()
    final = "final_kl" if loss == "kl" else "final_metric"
    value = float(loss_value)
    if loss == "kl":  # a KL is never below 0: a trial read -1.2e-7, float rounding
        value = max(0.0, value)
    return keep, {final: value, "expected_sparsity": float(sparsity_value)}


def training_options(
    sparsity: float, steps: int, lr: float, prefix: str, what: str
) -> tuple[Option, ...]:
    """The trainer's options with a method's defaults; ``prefix`` names its steps and
    learning rate (``sp_steps``, ``ep_lr``)."""
    return (
        Option("sparsity", "float", sparsity, f"share of {what} to remove", low=0.0, high=1.0,
               high_open=True),
        Option(f"{prefix}_steps", "int", steps, "training steps (each over every prompt)", low=1),
        Option(f"{prefix}_lr", "float", lr, "Adam's learning rate for the gates", low=0.0,
               low_open=True),
        Option("warmup", "float", 0.5, "share of the steps over which the target rises", low=0.0,
               high=1.0),
    )  # fmt: skip


class _LearnedMasks(Method):
    """What subnetwork probing and edge pruning share: options, checks and progress."""

    prefix: ClassVar[str]
    # the backward pass's saved tensors, in EAP's (gradient_floats_per_token): edge
    # pruning's dense masked pass keeps every receiver's own differences too (a helper's
    # trial measured its peak 12-13% over the budget with one)
    gradient_copies: ClassVar[int] = 1
    scores_positions = True

    def warnings(self, facts: dict[str, Any]) -> list[str]:
        reached, target = facts.get(f"{self.prefix}_expected_sparsity"), facts.get("sparsity")
        if reached is None or target is None:
            return []
        short = reached < SHORT_OF_TARGET * target
        if not short and 1.0 - reached <= OPEN_BEYOND_TARGET * (1.0 - target):
            return []
        times = (1.0 - reached) / (1.0 - target) if target < 1.0 else float("inf")
        return [
            f"{self.name}: training reached an expected sparsity of {reached:.3g} against "
            f"its {target:.3g} target, {times:.2g} times the share of gates open that it "
            f"asks (said below {SHORT_OF_TARGET:.0%} of the target or above "
            f"{OPEN_BEYOND_TARGET:g} times its open share): the gates are not trained; raise "
            f"--{self.prefix}-steps or --{self.prefix}-lr"
        ]

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return int(run.options[f"{self.prefix}_steps"])

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        return self.gradient_copies * gradient_floats_per_token(model)

    def _train(self, engine: Engine, run: MethodRun, n_gates: int, masks) -> tuple:
        options = run.options
        settings = (
            int(options[f"{self.prefix}_steps"]),
            float(options["sparsity"]),
            float(options["warmup"]),
            float(options[f"{self.prefix}_lr"]),
        )
        loss = str(options.get(f"{self.prefix}_loss", "kl"))
        keep, facts = train_gates(engine, run, n_gates, masks, settings, self.name, loss)
        return keep, {f"{self.prefix}_{key}": value for key, value in facts.items()}


class SubnetworkProbing(_LearnedMasks):
    name = "subnetwork-probing"
    title = "Subnetwork probing: hard-concrete node masks trained to a target sparsity"
    granularity = "node"
    default_threshold = 0.5
    prefix = "sp"
    own_target_metrics = ("kl",)
    reported_facts = (
        ("sp_expected_sparsity", "expected sparsity reached"),
        ("sp_final_kl", "last step's KL (one draw of the gates)", 4),
        ("sp_final_metric", "last step's masked metric (one draw of the gates)", 4),
    )
    options = (
        *training_options(0.7, 300, 0.1, "sp", "heads and MLPs"),
        Option("sp_loss", "str", "kl", "what the gates are trained on: kl (the KL divergence "
               "from the full model) or metric (minus --metric's mean, as the ACDC paper's "
               "task-metric runs)", choices=tuple(LOSSES)),
    )  # fmt: skip

    def target(self, options: dict[str, Any]) -> str | None:
        if options.get("sp_loss") == "metric":
            return None
        return (
            "trains its gates on the KL divergence from the full model, not on --metric "
            "(--sp-loss metric trains them on it)"
        )

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        inputs = engine.layout.inputs  # the input (at every position) stays
        n_nodes = engine.layout.n_senders - inputs  # every head and MLP

        def masks(gates: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"node_mask": torch.cat([torch.ones(inputs), gates]).unsqueeze(0)}

        keep, facts = self._train(engine, run, n_nodes, masks)
        return Scores(nodes=torch.cat([torch.zeros(inputs, dtype=keep.dtype), keep]), facts=facts)


class EdgePruning(_LearnedMasks):
    name = "edge-pruning"
    title = "Edge pruning: hard-concrete edge masks trained to a target sparsity"
    granularity = "edge"
    scores_edges = True
    default_threshold = 0.5
    prefix = "ep"
    gradient_copies = 2
    own_target = (
        "trains its gates on the KL divergence from the full model whatever --metric is, "
        "as its authors do"
    )
    own_target_metrics = ("kl",)
    reported_facts = (
        ("ep_expected_sparsity", "expected sparsity reached"),
        ("ep_final_kl", "last step's KL (one draw of the gates)", 4),
        ("ep_kept_edges", "edges at target sparsity"),
        ("ep_open_edges", "edges training left open (P(open) > 1/2)"),
    )
    options = training_options(0.975, 300, 0.1, "ep", "edges")

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        layout = engine.layout
        senders, receivers = layout.edge_positions
        shape = (layout.n_senders, layout.n_receivers)

        def masks(gates: torch.Tensor) -> dict[str, torch.Tensor]:
            mask = torch.ones(shape).index_put((senders, receivers), gates)
            return {"edge_mask": mask.unsqueeze(0)}

        keep, facts = self._train(engine, run, len(senders), masks)
        edges = torch.zeros(shape, dtype=keep.dtype).index_put((senders, receivers), keep)
        facts["ep_kept_edges"] = len(senders) - round(float(run.options["sparsity"]) * len(senders))
        facts["ep_open_edges"] = int((keep > 0.5).sum())
        return Scores.of_edges(edges, facts=facts)

    def default_circuit(self) -> str:
        return "the 1 - --sparsity share of the edges, most open first"

    def warnings(self, facts: dict[str, Any]) -> list[str]:
        said = super().warnings(facts)
        kept, open_edges = facts.get("ep_kept_edges"), facts.get("ep_open_edges")
        if open_edges is not None and facts.get("top_k") == kept and open_edges < kept:
            said.append(  # a trial's --sparsity 0.96: 19 open, 11 closed ones by rank
                f"edge-pruning: training left {open_edges} edges open (P(open) > 1/2), and "
                f"--sparsity {facts.get('sparsity')} keeps {kept}: the other "
                f"{kept - open_edges} are closed gates taken by rank, whose order among "
                "themselves is barely trained; read the circuit's first "
                f"{open_edges}, or raise --sparsity"
            )
        if facts.get("ep_kept_edges") == 0 and facts.get("top_k") == 0:
            said.append(
                f"edge-pruning: --sparsity {facts.get('sparsity')} keeps none of the graph's "
                "edges (its share rounds to 0 on a graph this small): lower --sparsity or give "
                "--top-k"
            )
        return said

    def selection_top_k(self, run: MethodRun, scores: Scores) -> int | None:
        """The exact target: the (1 - sparsity) share of the edges most likely open (ties
        in graph order), as Edge Pruning discretises its masks by a threshold search."""
        return int(scores.facts["ep_kept_edges"])
