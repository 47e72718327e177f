"""A discovery scored against its reference: the one chain the command line and the
leaderboard's cells run (reference first, so that a reference that cannot be had fails
before the work; then the discovery, the reference at the graph's positions, the report)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import networkx as nx

from circuitx.discovery.references import Asks, command_line, reference_for_model
from circuitx.discovery.report import matching_reference, report
from circuitx.discovery.request import DiscoveryRequest
from circuitx.discovery.run import discover
from circuitx.models import Model


@dataclass(frozen=True)
class Scored:
    """A discovery's graph, the reference it was scored against (at the graph's token
    positions, if it has any; None without one), its report with the method's and the
    run's warnings, and why there is no reference, where there is none."""

    graph: nx.MultiDiGraph
    reference: nx.MultiDiGraph | None
    summary: dict[str, Any]
    no_reference: str | None


def discover_scored(
    model: Model,
    request: DiscoveryRequest,
    note: Callable[[str], None] | None = None,
    asks: Asks = command_line,
) -> Scored:
    """Discover ``request`` on ``model`` and score it against the reference the request
    names (``note`` hears when a relational reference is discovered first; ``asks``: how
    a message asks for a reference, as for :func:`reference_for_model`)."""
    reference, label, no_reference = reference_for_model(model, request, note=note, asks=asks)
    graph = discover(model, request)
    reference = matching_reference(graph, reference)
    summary = report(graph, reference, label, asked=request.n_prompts)
    return Scored(graph, reference, summary, no_reference)
