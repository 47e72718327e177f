"""Circuit graphs in auto-circuit's edge names (UFO-101/auto-circuit, its factorised graph):
every edge's score by its ``Edge.name`` (``A0.1->A3.2.Q``, ``Resid Start->MLP 0``, ``MLP
2->Resid End``), which is what auto-circuit's ``PruneScores`` are indexed by, and the
circuit's edges as a list of those names.

    {"scores": {"Resid Start->A0.0.Q": 0.12, ...}, "circuit": ["A0.1->A3.0.K", ...],
     "circuitx_metadata": {...}, "circuitx_node_scores": {"a0.h1": 0.4, ...}}

auto-circuit keeps no file of its own for a circuit; with this one, its
``prune_scores[edge.dest.module_name][edge.patch_idx] = scores[edge.name]`` over
``model.edges`` rebuilds the scores in a patchable model.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError, listed
from circuitx.files import plain, read_score
from circuitx.graph import (
    edges_by_name,
    full_graph,
    own_node_scores,
    require_components,
    score_nodes_by_edges,
    select_edges,
    shape_of,
    unscored_edges,
)
from circuitx.names import (
    auto_circuit_edge_name,
    edge_name,
    mlp_node,
    parse_auto_circuit_edge_name,
    parse_node,
)

AUTO_CIRCUIT_KEYS = ("scores", "circuit")
METADATA = "circuitx_metadata"
NODE_SCORES = "circuitx_node_scores"
SHAPE_KEYS = ("n_layers", "n_heads", "has_mlp", "parallel")


def is_auto_circuit_dict(data: Any) -> bool:
    """Whether parsed JSON is a graph in auto-circuit's edge names: ``scores`` and
    ``circuit``."""
    return isinstance(data, dict) and all(key in data for key in AUTO_CIRCUIT_KEYS)


def to_auto_circuit_dict(graph: nx.MultiDiGraph) -> dict[str, Any]:
    """Every edge's score and the circuit's edges, by auto-circuit's edge names; our node
    scores and metadata in keys of our own."""
    require_components(graph, "auto-circuit's edge names")
    edges = edges_by_name(graph)
    unscored = [name for name, data in edges.items() if data["score"] is None]
    if len(unscored) == len(edges):
        raise CircuitxError(
            f"auto-circuit's prune scores hold every edge's, and {unscored_edges(graph)}"
        )
    if unscored:
        raise CircuitxError(
            f"auto-circuit's prune scores hold every edge's, and {len(unscored)} of this "
            f"graph's {len(edges)} edges {'has' if len(unscored) == 1 else 'have'} none "
            f"({listed(unscored, 3)}): export --format json keeps a graph as it is"
        )
    scores, circuit = {}, []
    for sender, receiver, data in graph.edges(data=True):
        name = auto_circuit_edge_name(sender, receiver, data["input"])
        scores[name] = plain(float(data["score"]))  # NaN as null: strict JSON
        if data["in_circuit"]:
            circuit.append(name)
    return {
        "scores": scores,
        "circuit": circuit,
        METADATA: {k: plain(v) for k, v in graph.graph.items() if k not in SHAPE_KEYS}
        | dict(zip(SHAPE_KEYS, (*shape_of(graph), bool(graph.graph.get("parallel"))))),
        NODE_SCORES: {node: plain(float(score)) for node, score in own_node_scores(graph).items()},
    }


def from_auto_circuit_dict(data: dict[str, Any]) -> nx.MultiDiGraph:
    """Our graph from edges named as auto-circuit names them. The model's shape is the
    metadata's, else told by the names (which must then list every edge). A node without
    a score takes its strongest outgoing edge's."""
    scores, circuit = data["scores"], data["circuit"]
    if not isinstance(scores, dict) or not isinstance(circuit, list):
        raise CircuitxError("'scores' must map edge names to scores and 'circuit' list edges")
    parsed = {name: parse_auto_circuit_edge_name(str(name)) for name in scores}
    meta = data.get(METADATA) if isinstance(data.get(METADATA), dict) else {}
    shape = [meta.get(key) for key in SHAPE_KEYS]
    if not all(isinstance(value, (int, bool)) for value in shape):
        shape = _shape_from_names(parsed.values())
    n_layers, n_heads, has_mlp, parallel = shape
    rest = {k: v for k, v in meta.items() if k not in SHAPE_KEYS}
    graph = full_graph(int(n_layers), int(n_heads), bool(has_mlp), bool(parallel), **rest)
    edges = edges_by_name(graph)
    ours = {}  # auto-circuit's name -> ours
    for name, ends in parsed.items():
        key = edge_name(*ends)
        if key not in edges:
            raise CircuitxError(f"edge {name!r} is not in a {n_layers} x {n_heads} model's graph")
        ours[name] = key
        if scores[name] is None:
            raise CircuitxError(f"edge {name}: every edge has a score, as in prune scores")
        edges[key]["score"] = read_score(scores[name], f"edge {name}", nullable=False)
    named = set(ours.values())
    missing = [key for key in edges if key not in named]
    if missing:
        raise CircuitxError(
            f"{len(missing)} of the model's {len(edges)} edges "
            f"{'has' if len(missing) == 1 else 'have'} no score "
            f"({listed(missing, 3)}); every edge is scored, as auto-circuit's prune scores are"
        )
    kept = []
    for name in circuit:  # every edge of the model is scored: another is not the model's
        key = ours.get(name) or edge_name(*parse_auto_circuit_edge_name(str(name)))
        if key not in edges:
            raise CircuitxError(
                f"the circuit's edge {name!r} is not in a {n_layers} x {n_heads} model's graph"
            )
        kept.append(key)
    select_edges(graph, kept)
    node_scores = data.get(NODE_SCORES)
    if not isinstance(node_scores, dict):
        score_nodes_by_edges(graph)
        return graph
    for node in graph.nodes:  # ours, as written: a node without one has none
        graph.nodes[node]["score"] = read_score(node_scores.get(node), f"node {node}")
    return graph


def _shape_from_names(edges: Any) -> tuple[int, int, bool, bool]:
    """(layers, heads, MLPs, parallel) of the model whose every edge ``edges`` names."""
    layers, heads, mlp, attention_to_own_mlp = 0, 0, False, False
    for sender, receiver, _ in edges:
        for node in (sender, receiver):
            kind, layer, head = parse_node(node)
            if layer is not None:
                layers = max(layers, layer + 1)
            if kind == "head":
                heads = max(heads, head + 1)
            mlp = mlp or kind == "mlp"
        kind, layer, _ = parse_node(sender)
        attention_to_own_mlp |= kind == "head" and receiver == mlp_node(layer)
    if not layers:
        raise CircuitxError("the edge names name no head or MLP")
    return layers, heads, mlp, mlp and not attention_to_own_mlp
