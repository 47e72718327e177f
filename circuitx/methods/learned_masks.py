"""Learned masks: subnetwork probing over the nodes (Cao, Sanh and Rush 2021, as the ACDC
paper runs it), trained with Edge Pruning's schedule (Bhaskar et al. 2024).

Every head and MLP gets a hard-concrete gate (Louizos, Welling and Kingma 2018) on its
output: z = clamp(sigmoid((log u - log(1 - u) + log_alpha) / beta) (zeta - gamma) + gamma,
0, 1), u uniform, so a gate is exactly 0 or 1 with positive probability. A gate is the
engine's node mask: 1 the node's own output, 0 its patch value (the run's ablation), in
between a mix, with the differences of the masked pass itself. The loss is the KL
divergence of the masked model's answer distribution from the full model's, plus a
Lagrangian that holds the expected share of gates that are 0 at a target that rises
linearly from 0 to ``sparsity`` over the first ``warmup`` share of the steps (its two
multipliers are raised by gradient ascent, as Edge Pruning does). Adam on log_alpha,
every prompt in every step (the engine's parts in turn). A node's score is the
probability that its gate is not 0; the default selection keeps those above 1/2.
Deterministic under the seed (the uniform noise is drawn from it).
"""

from __future__ import annotations

import math

import torch

from circuitx.engine import Engine, gradient_floats_per_token
from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores
from circuitx.models import Model

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # the hard-concrete stretch (Louizos et al.)
REPORT_EVERY = 50  # steps between the progress bar's loss and sparsity


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
    clean = torch.log_softmax(clean_final.float(), -1)
    masked = torch.log_softmax(final.float(), -1)
    return (clean.exp() * (clean - masked)).sum(-1).mean()


class SubnetworkProbing(Method):
    name = "subnetwork-probing"
    title = "Subnetwork probing: hard-concrete node masks trained to a target sparsity"
    granularity = "node"
    default_threshold = 0.5
    options = (
        Option("sparsity", "float", 0.7, "share of heads and MLPs to remove", low=0.0),
        Option("sp_steps", "int", 300, "training steps (each over every prompt)", low=1),
        Option("sp_lr", "float", 0.1, "Adam's learning rate for the gates", low=0.0, low_open=True),
        Option("warmup", "float", 0.5, "share of the steps over which the target rises", low=0.0),
    )

    def check(self, model: Model, run: MethodRun) -> None:
        if not run.options["sparsity"] < 1.0:
            raise CircuitxError(f"--sparsity must be below 1, not {run.options['sparsity']}")

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return int(run.options["sp_steps"])

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        return gradient_floats_per_token(model)

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        options = run.options
        steps, target = int(options["sp_steps"]), float(options["sparsity"])
        warmup = max(1, round(float(options["warmup"]) * steps))
        n_nodes = engine.layout.n_senders - 1  # every head and MLP; the input stays
        log_alpha = torch.full((n_nodes,), 3.0, requires_grad=True)  # gates start open
        multipliers = torch.zeros(2, requires_grad=True)
        optimiser = torch.optim.Adam([log_alpha], lr=float(options["sp_lr"]))
        ascent = torch.optim.Adam([multipliers], lr=float(options["sp_lr"]))
        generator = torch.Generator().manual_seed(run.seed)
        loss_value, sparsity_value = torch.zeros(()), torch.zeros(())
        for step in range(steps):
            optimiser.zero_grad()
            ascent.zero_grad()
            goal = target * min(1.0, (step + 1) / warmup)
            kl_total = 0.0
            for part, weight in engine.parts():
                gates = sample_gates(log_alpha, generator)
                mask = torch.cat([torch.ones(1), gates]).unsqueeze(0)
                final = part.run(mask, train=True)
                kl = answer_kl(final[0], part.clean_final) * weight
                kl.backward()
                kl_total = kl_total + kl.detach()
            expected_sparsity = 1.0 - open_probability(log_alpha).mean()
            gap = expected_sparsity - goal
            penalty = multipliers[0] * gap + multipliers[1] * gap**2
            penalty.backward()
            multipliers.grad.neg_()  # the multipliers rise where the target is missed
            optimiser.step()
            ascent.step()
            loss_value, sparsity_value = kl_total, expected_sparsity.detach()
            if (step + 1) % REPORT_EVERY == 0 or step + 1 == steps:  # a host read: not each step
                shown = f"KL {float(loss_value):.4f}, sparsity {float(sparsity_value):.2f}"
                run.advance(1, f"{self.name}: {shown}")
            else:
                run.advance(1)
        with torch.no_grad():
            keep = open_probability(log_alpha).double()
        facts = {"sp_final_kl": float(loss_value), "sp_expected_sparsity": float(sparsity_value)}
        return Scores(nodes=torch.cat([torch.zeros(1, dtype=keep.dtype), keep]), facts=facts)
