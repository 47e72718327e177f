"""The method interface: a method scores the nodes (and edges) of a model's full graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import networkx as nx

from circuitx.models import Model
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, TaskData


@dataclass
class MethodRun:
    """What a method gets besides the model and data: the task metric, seed and a progress hook."""

    metric: str = "logit-diff"
    seed: int = 0
    advance: Advance = no_progress


class Method:
    """Base class: ``score`` writes ``score`` on the graph's nodes (and edges) and returns
    measured facts for the graph metadata; selection is done by :mod:`circuitx.discovery`."""

    name: ClassVar[str]
    title: ClassVar[str]
    granularity: ClassVar[str]  # "node" or "edge": what the scores rank
    hook_flags: ClassVar[tuple[str, ...]] = ()  # optional hook points the method needs
    default_threshold: ClassVar[float]

    def steps(self, graph: nx.MultiDiGraph) -> int:
        """How many progress steps ``score`` reports."""
        raise NotImplementedError

    def score(
        self, model: Model, task: Task, data: TaskData, graph: nx.MultiDiGraph, run: MethodRun
    ) -> dict[str, float]:
        raise NotImplementedError
