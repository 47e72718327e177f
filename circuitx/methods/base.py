"""The method interface: a method scores the nodes (and edges) of a model's full graph."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import networkx as nx
import torch

from circuitx.graph import edges_by_name, parse_node
from circuitx.models import Model
from circuitx.patching import Layout, PatchingEngine
from circuitx.progress import Advance, no_progress


@dataclass
class MethodRun:
    """What a method gets besides the engine: seed, selection threshold, its options
    (defaults filled in) and a progress hook."""

    seed: int = 0
    threshold: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    advance: Advance = no_progress
    outputs: dict[str, Any] = field(default_factory=dict)  # results besides the graph scores


class Method:
    """Base class: ``score`` writes ``score`` on the graph's nodes (and edges) and returns
    measured facts for the graph metadata; selection is done by :mod:`circuitx.discovery`."""

    name: ClassVar[str]
    title: ClassVar[str]
    granularity: ClassVar[str]  # "node" or "edge": what the selection ranks
    default_threshold: ClassVar[float]
    options: ClassVar[dict[str, Any]] = {}  # method options and their defaults
    # contrasts clean prompts with prompts the model cannot answer: by default the task's
    # negative corruption instead of its default corruption
    uses_negatives: ClassVar[bool] = False

    def check(self, model: Model, n_prompts: int, options: dict[str, Any]) -> None:
        """Raise a CircuitxError for options this model and prompt count cannot run with."""

    def steps(self, graph: nx.MultiDiGraph, run: MethodRun) -> int:
        """How many progress steps ``score`` reports."""
        raise NotImplementedError

    def selection_threshold(self, run: MethodRun) -> float:
        """The threshold the circuit is selected with when none is given."""
        return self.default_threshold

    def score(
        self, engine: PatchingEngine, graph: nx.MultiDiGraph, run: MethodRun
    ) -> dict[str, Any]:
        raise NotImplementedError


def write_scores(
    graph: nx.MultiDiGraph,
    layout: Layout,
    edge_scores: torch.Tensor,
    node_scores: torch.Tensor | None = None,
) -> None:
    """Put an edge score matrix [n_senders, n_receivers] on the graph's edges, and node
    scores [n_senders] on its heads and MLPs. Without node scores a node gets its
    outgoing edge score of the largest magnitude."""
    senders, receivers = layout.edge_positions
    values = edge_scores.detach().cpu()[senders, receivers].tolist()
    edges = edges_by_name(graph)
    for name, value in zip(layout.edges, values):
        edges[name]["score"] = float(value)
    if node_scores is None:
        scores = edge_scores.detach().cpu()
        strongest = scores.abs().argmax(1, keepdim=True)
        node_scores = scores.gather(1, strongest).squeeze(1)
    for index, node in enumerate(layout.senders):
        if parse_node(node)[0] != "input":
            graph.nodes[node]["score"] = float(node_scores[index])
