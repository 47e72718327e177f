"""Where a circuit's nodes sit and what its edges feed, for every kind of picture.

``input`` at the bottom, ``logits`` at the top, one row per layer: its heads in index
order, then its MLP, so a node is in the same place in every drawing of the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.graph import INPUT, LOGITS, edges_by_name

DRAW_FORMATS = ("svg", "png", "pdf", "html")
INPUT_COLOURS = {
    "q": "#1f77b4",
    "k": "#ff7f0e",
    "v": "#2ca02c",
    "mlp": "#9467bd",
    "logits": "#333333",
}
RECEIVER_OFFSET = {"q": -0.12, "k": 0.0, "v": 0.12}
AGREEMENT = {"both": "#1a9850", "circuit only": "#d73027", "reference only": "#878787"}


def draw_format(path: str | Path) -> str:
    """The picture format ``path``'s extension names, or a one-line error."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in DRAW_FORMATS:
        kinds = ", ".join("." + kind for kind in DRAW_FORMATS)
        raise CircuitxError(f"cannot tell the picture format of {str(path)!r}: use {kinds}")
    return suffix


def positions(n_layers: int, n_heads: int) -> dict[str, tuple[float, float]]:
    """Where each node sits: layer rows bottom to top, heads then the MLP in a row."""
    width = n_heads + 1  # the heads, a gap, the MLP
    places = {INPUT: (width / 2, 0.0), LOGITS: (width / 2, n_layers + 1.0)}
    for layer in range(n_layers):
        for head in range(n_heads):
            places[f"a{layer}.h{head}"] = (float(head), layer + 1.0)
        places[f"m{layer}"] = (n_heads + 0.5, layer + 1.0)
    return places


Edge = tuple[str, str, str, dict[str, Any]]  # sender, receiver, name, attributes


def chosen_edges(graph: nx.MultiDiGraph, top: int | None, every: bool) -> list[Edge]:
    """The edges to draw: the circuit's; every scored one (``every``); or the ``top``
    by |score|."""
    edges = list(graph.edges(keys=True, data=True))
    if top is not None:
        scored = [edge for edge in edges if edge[3]["score"] is not None]
        return sorted(scored, key=lambda edge: -abs(edge[3]["score"]))[:top]
    if every:
        return [e for e in edges if e[3]["score"] is not None and e[3]["score"] != 0]
    return [edge for edge in edges if edge[3]["in_circuit"]]


def feeds(data: dict[str, Any], receiver: str) -> str:
    if data["input"]:
        return data["input"]
    return "logits" if receiver == LOGITS else "mlp"


def reference_sets(reference: nx.MultiDiGraph | None) -> tuple[set[str], set[str]]:
    if reference is None:
        return set(), set()
    nodes = {n for n, d in reference.nodes(data=True) if d.get("in_circuit")}
    edges = {name for name, d in edges_by_name(reference).items() if d.get("in_circuit")}
    return nodes, edges


def label(node: str, reference: nx.MultiDiGraph | None) -> str:
    """The node's name, and its role in the reference where the reference gives one."""
    if reference is not None and node in reference:
        role = reference.nodes[node].get("role")
        if role and role not in ("input", "logits", "mlp"):
            return f"{node}\n{role}"
    return node
