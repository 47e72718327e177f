"""The certificate of a planted model: measured evidence that its ground truth is its circuit.

For one task on one model, with the task's own prompts, corruption and metric:
clean and corrupted metric and accuracy; faithfulness when everything outside the circuit
carries its corrupted output (1 = the circuit alone does the task); the normalised
metric left when the circuit carries its corrupted output (0 = behaviour gone); every
node's own normalised patching effect; and the nodes' output norms on clean prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch

from circuitx.graph import component_nodes
from circuitx.models import Model
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task


@dataclass
class Certificate:
    model: str
    task: str
    n_prompts: int
    clean_metric: float
    corrupted_metric: float
    clean_accuracy: float
    corrupted_accuracy: float
    complement_faithfulness: float  # circuit alone: (m(rest patched) - m_corr) / (m_clean - m_corr)
    circuit_patched: float  # the same normalisation with the circuit patched
    effects: dict[str, float]  # each node alone patched: (m_clean - m) / (m_clean - m_corr)
    norms: dict[str, float]  # mean output norm on clean prompts (real tokens only)
    circuit: list[str]
    backups: list[str]  # circuit nodes whose own effect is ~0 by design (self-repair)

    @property
    def outside(self) -> list[str]:
        return [n for n in self.effects if n not in self.circuit]

    @property
    def max_outside_effect(self) -> float:
        return max(abs(self.effects[n]) for n in self.outside)

    @property
    def min_inside_effect(self) -> float:
        """Smallest |own effect| of a circuit node, backups excepted."""
        return min(abs(self.effects[n]) for n in self.circuit if n not in self.backups)

    @property
    def norm_ratio(self) -> float:
        """Mean output norm outside the circuit over that inside it."""
        outside = [self.norms[n] for n in self.outside]
        inside = [self.norms[n] for n in self.circuit]
        return (sum(outside) / len(outside)) / (sum(inside) / len(inside))


def certify(
    model: Model, task_name: str, truth: nx.MultiDiGraph, n_prompts: int = 50, seed: int = 0
) -> Certificate:
    """Measure the certificate of ``truth`` (a ground-truth graph) on ``model``."""
    task = get_task(task_name)
    data = task.make_data(model, n_prompts, seed)
    engine = PatchingEngine(model, task, data, task.default_metric)
    nodes = component_nodes(truth)
    circuit = [n for n in nodes if truth.nodes[n]["in_circuit"]]
    rest = [n for n in nodes if n not in circuit]
    gap = engine.clean_metric - engine.corrupted_metric
    effects = engine.normalised_effect(engine.patch_each_node(nodes))
    norms = model.output_norms(data.clean)
    real = torch.arange(data.clean.shape[1]) <= data.positions["END"].unsqueeze(1)
    return Certificate(
        model=model.name,
        task=task_name,
        n_prompts=n_prompts,
        clean_metric=engine.clean_metric,
        corrupted_metric=engine.corrupted_metric,
        clean_accuracy=task.accuracy(engine.clean_final, data),
        corrupted_accuracy=task.accuracy(engine.corrupted_final, data),
        complement_faithfulness=(engine.patch_together(rest) - engine.corrupted_metric) / gap,
        circuit_patched=(engine.patch_together(circuit) - engine.corrupted_metric) / gap,
        effects=dict(zip(nodes, effects.tolist())),
        norms={n: float(norms[n].cpu()[real].mean()) for n in nodes},
        circuit=circuit,
        backups=[b for b in str(truth.graph.get("backups") or "").split(",") if b],
    )
