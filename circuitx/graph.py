"""The circuit graph: one networkx universe of nodes and edges per model shape (its files:
:mod:`circuitx.graph_files`).

Nodes are ``input``, ``a{L}.h{H}`` (attention head), ``m{L}`` (MLP) and ``logits``.
Edges run from a sender's output to a receiver's input; an edge into a head names the
input it feeds (``q``, ``k`` or ``v``), so there are three parallel edges between a sender
and a later head. The graph is a ``MultiDiGraph`` whose edge keys are the MIB-style edge
names (``a0.h1->a3.h2<q>``, ``m2->logits``). Every node and edge carries ``score``
(float, or None where a method gives none) and ``in_circuit`` (bool).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.layout import Layout, PositionLayout
from circuitx.names import (
    HEAD_INPUTS,
    INPUT,
    LOGITS,
    edge_name,
    head_node,
    mlp_node,
    parse_edge_name,
    parse_node,
    split_position,
)
from circuitx.progress import counted
from circuitx.version import __version__

__all__ = [  # the names are re-exported: the graph module is the universe's public face
    "HEAD_INPUTS",
    "INPUT",
    "LOGITS",
    "edge_name",
    "head_node",
    "mlp_node",
    "parse_edge_name",
    "parse_node",
    "split_position",
]


def full_graph(
    n_layers: int, n_heads: int, has_mlp: bool = True, parallel: bool = False, **metadata: Any
) -> nx.MultiDiGraph:
    """Every node and edge of a model's computational graph (its :class:`Layout`), none
    in the circuit yet."""
    return layout_graph(Layout(n_layers, n_heads, has_mlp, parallel), **metadata)


def layout_graph(layout: Layout, **metadata: Any) -> nx.MultiDiGraph:
    """Every node and edge of ``layout``, none in the circuit yet; a
    :class:`PositionLayout`'s groups are recorded in the metadata (``positions``, its
    ``position_readout`` groups, ``position_order``, ``position_later_keys``) so that
    :func:`layout_of` rebuilds it."""
    graph = nx.MultiDiGraph()
    graph.graph.update(n_layers=layout.n_layers, n_heads=layout.n_heads, has_mlp=layout.has_mlp)
    if layout.parallel:  # recorded only where it holds: sequential graphs stay as they were
        graph.graph["parallel"] = True
    if isinstance(layout, PositionLayout):
        graph.graph.update(
            positions=",".join(layout.positions),
            position_readout=",".join(layout.readout),
            position_order=layout.ordered,
        )
        if layout.aliases:
            graph.graph["position_aliases"] = ",".join(f"{n}={g}" for n, g in layout.aliases)
        if layout.later_keys:
            graph.graph["position_later_keys"] = ",".join(f"{k}>{q}" for k, q in layout.later_keys)
    graph.graph.update(metadata)
    graph.graph.setdefault("circuitx_version", __version__)
    for name, kind, layer, head in layout.nodes:
        _add_node(graph, name, kind, layer, head)
    for sender, receiver, head_input in layout.edges:
        _add_edge(graph, sender, receiver, head_input)
    return graph


def _add_node(graph: nx.MultiDiGraph, name: str, kind: str, layer: int, head: int | None) -> None:
    graph.add_node(name, kind=kind, layer=layer, head=head, score=None, in_circuit=False)


def _add_edge(graph: nx.MultiDiGraph, sender: str, receiver: str, head_input: str | None) -> None:
    graph.add_edge(
        sender,
        receiver,
        key=edge_name(sender, receiver, head_input),
        input=head_input,
        score=None,
        in_circuit=False,
    )


def add_feature_level(
    graph: nx.MultiDiGraph,
    nodes: dict[str, float],
    edges: Iterable[tuple[str, str, str | None, float]],
    threshold: float | None,
) -> None:
    """Add feature nodes (``m{L}.f{i}``, ``m{L}.rest``) and edges with a feature at one end.
    A feature is in the circuit when its MLP is and, given a threshold, |score| reaches it;
    an edge when both its ends are and so is its component edge (its features' MLPs in
    their place: a path search keeps only the feature edges of the edges it chose)."""
    for name, score in nodes.items():
        _add_node(graph, name, "feature", parse_node(name)[1], None)
        mlp_kept = graph.nodes[name.split(".")[0]]["in_circuit"]
        graph.nodes[name].update(
            score=score, in_circuit=mlp_kept and (threshold is None or abs(score) >= threshold)
        )

    def component(node: str) -> str:
        return node.split(".")[0] if graph.nodes[node]["kind"] == "feature" else node

    for sender, receiver, head_input, score in edges:
        _add_edge(graph, sender, receiver, head_input)
        through = edge_name(component(sender), component(receiver), head_input)
        kept = (
            graph.nodes[sender]["in_circuit"]
            and graph.nodes[receiver]["in_circuit"]
            and graph.edges[component(sender), component(receiver), through]["in_circuit"]
        )
        graph.edges[sender, receiver, edge_name(sender, receiver, head_input)].update(
            score=score, in_circuit=kept
        )
    graph.graph["granularity"] = "feature"


def require_components(graph: nx.MultiDiGraph, written_as: str) -> None:
    """Refuse, naming the way out, a graph with transcoder features or token positions
    for a format (``written_as``: "EAP-IG graphs") that names components only."""
    if any(kind == "feature" for _, kind in graph.nodes(data="kind")):
        raise CircuitxError(
            f"{written_as} have no transcoder features; export the component graph "
            "(circuitx.graph.component_graph(graph))"
        )
    if position_groups(graph) is not None:
        raise CircuitxError(
            f"{written_as} have no token positions; collapse them to the components first "
            "(export --collapse-positions; circuitx.collapse_positions in Python)"
        )


def component_graph(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The head/MLP graph of a graph that may hold transcoder features: ``graph`` itself,
    or a copy without its feature nodes and their edges."""
    features = [n for n, kind in graph.nodes(data="kind") if kind == "feature"]
    if not features:
        return graph
    components = graph.copy()
    components.remove_nodes_from(features)
    return components


def parallel_view(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """``graph`` in the universe of a model whose blocks run attention and MLP in parallel
    (:class:`Layout` with ``parallel``): a copy without the edges that universe lacks (a
    head into its own layer's MLP), or ``graph`` itself if it is already so."""
    if graph.graph.get("parallel"):
        return graph
    view = graph.copy()
    view.graph["parallel"] = True
    kept = set(dataclasses.replace(layout_of(graph), parallel=True).edge_names)
    view.remove_edges_from([(s, r, key) for s, r, key in graph.edges(keys=True) if key not in kept])
    return view


def component_nodes(graph: nx.MultiDiGraph) -> list[str]:
    """The heads and MLPs: the nodes a circuit may keep or drop (input and logits always stay)."""
    return [n for n, kind in graph.nodes(data="kind") if kind in ("head", "mlp")]


def edges_by_name(graph: nx.MultiDiGraph) -> dict[str, dict[str, Any]]:
    """Edge attribute dicts keyed by edge name, in graph order."""
    return {key: data for _, _, key, data in graph.edges(keys=True, data=True)}


def ends_of(graph: nx.MultiDiGraph) -> set[str]:
    """The nodes every circuit keeps: the input (at every position) and the logits."""
    return {node for node, kind in graph.nodes(data="kind") if kind in ("input", "logits")}


def edges_off_path(graph: nx.MultiDiGraph) -> list[str]:
    """The circuit's edges on no path of circuit edges from an input to the logits: what
    EAP-IG's ``Graph.prune`` drops before MIB evaluates a circuit."""
    kept = nx.DiGraph()
    kept.add_nodes_from(graph.nodes)
    kept.add_edges_from((s, r) for s, r, in_circuit in graph.edges(data="in_circuit") if in_circuit)
    ends = ends_of(graph)
    starts = {node for node in ends if graph.nodes[node]["kind"] == "input"}
    reached = set(starts).union(*(nx.descendants(kept, node) for node in starts))
    reaching = set(ends - starts).union(*(nx.ancestors(kept, n) for n in ends - starts))
    return [
        key
        for sender, receiver, key, in_circuit in graph.edges(keys=True, data="in_circuit")
        if in_circuit and not (sender in reached and receiver in reaching)
    ]


def select_nodes(graph: nx.MultiDiGraph, selected: Iterable[str]) -> None:
    """Put exactly ``selected`` (plus input and logits) in the circuit, with the edges they span."""
    keep = set(selected) | ends_of(graph)
    for node, data in graph.nodes(data=True):
        data["in_circuit"] = node in keep
    for sender, receiver, data in graph.edges(data=True):
        data["in_circuit"] = sender in keep and receiver in keep


def select_edges(graph: nx.MultiDiGraph, selected: Iterable[str]) -> None:
    """Put exactly the edges named ``selected`` in the circuit, with the nodes they join."""
    chosen = set(selected)
    keep = ends_of(graph)
    for sender, receiver, key, data in graph.edges(keys=True, data=True):
        data["in_circuit"] = key in chosen
        if key in chosen:
            keep.update((sender, receiver))
    for node, data in graph.nodes(data=True):
        data["in_circuit"] = node in keep


# graph metadata: its node scores are its edges' (:func:`score_nodes_by_edges`), so a file
# that scores edges alone is written without them
NODE_SCORES_FROM_EDGES = "node_scores_from_edges"


def score_nodes_by_edges(graph: nx.MultiDiGraph) -> None:
    """Give each node with a scored outgoing edge its strongest one's score (a graph file
    that scores edges only: EAP-IG's, auto-circuit's names), and say so in the metadata."""
    for node in graph.nodes:
        out = [d["score"] for *_, d in graph.out_edges(node, data=True) if d["score"] is not None]
        if out:
            graph.nodes[node]["score"] = max(out, key=abs)
    graph.graph[NODE_SCORES_FROM_EDGES] = True


def unscored_edges(graph: nx.MultiDiGraph) -> str:
    """Why a graph's edges have no scores, for a format that needs one on every edge: its
    scores are its nodes' (a node-level method's), or it has none."""
    if not own_node_scores(graph):
        return "none of this graph's edges or nodes has a score"
    method = graph.graph.get("method") or "this graph"
    return f"{method} scores nodes only: export --format json keeps its node scores"


def own_node_scores(graph: nx.MultiDiGraph) -> dict[str, float]:
    """The node scores a graph holds of its own: none where they are its edges'."""
    if graph.graph.get(NODE_SCORES_FROM_EDGES):
        return {}
    return {node: score for node, score in graph.nodes(data="score") if score is not None}


def score_level(graph: nx.MultiDiGraph) -> str:
    """What the circuit was selected by: ``node`` or ``edge`` scores, as discovery wrote
    it (``selected_by``); for a graph from elsewhere, ``edge`` where its edges are scored."""
    if graph.graph.get("selected_by") in ("node", "edge"):
        return graph.graph["selected_by"]
    scored = any(score is not None for *_, score in graph.edges(data="score"))
    return "edge" if scored else "node"


def selection_by_score(
    graph: nx.MultiDiGraph, threshold: float | None = None, top_k: int | None = None
) -> tuple[set[str], set[str]]:
    """The circuit discovery would select from the graph's scores, as (node names, edge
    names): the edges (or, for node scores, the heads and MLPs) with |score| >=
    ``threshold``, or the ``top_k`` by |score| (ties in graph order); an edge selection
    keeps the nodes its edges join, a node selection the edges among its nodes. Input and
    logits are always kept. Transcoder features follow their MLP (and, by threshold, need
    |score| >= it too), as :func:`add_feature_level` has them; so do their edges."""
    components = component_graph(graph)
    level = score_level(graph)
    if level == "edge":
        items = [(key, score) for *_, key, score in components.edges(keys=True, data="score")]
    else:
        items = [(node, components.nodes[node]["score"]) for node in component_nodes(graph)]
    scored = [(name, abs(score)) for name, score in items if score is not None]
    if top_k is not None:
        chosen = {name for name, _ in sorted(scored, key=lambda item: -item[1])[:top_k]}
    elif threshold is not None:
        chosen = {name for name, magnitude in scored if magnitude >= threshold}
    else:
        raise CircuitxError("a selection needs a threshold or a top k")
    nodes, edges = ends_of(graph), set()
    if level == "node":
        nodes |= chosen
    for sender, receiver, key in components.edges(keys=True):
        if level == "edge" and key in chosen:
            edges.add(key)
            nodes.update((sender, receiver))
        elif level == "node" and sender in nodes and receiver in nodes:
            edges.add(key)
    features = {n for n, kind in graph.nodes(data="kind") if kind == "feature"}
    at_least = None if top_k is not None else threshold  # as discovery adds features
    for node in features:
        score = graph.nodes[node]["score"]
        if node.split(".")[0] in nodes and (at_least is None or abs(score or 0.0) >= at_least):
            nodes.add(node)
    for sender, receiver, key in graph.edges(keys=True):
        if (sender in features or receiver in features) and {sender, receiver} <= nodes:
            edges.add(key)
    return nodes, edges


def position_groups(graph: nx.MultiDiGraph) -> tuple[str, ...] | None:
    """The position groups a graph's nodes act at (None: a graph without positions)."""
    positions = graph.graph.get("positions")
    return tuple(str(positions).split(",")) if positions else None


def position_aliases(graph: nx.MultiDiGraph) -> dict[str, str]:
    """The task's named positions and the group each is at, where the groups are every
    position (``{"END": "12"}``); empty otherwise."""
    aliases = str(graph.graph.get("position_aliases") or "")
    return dict(a.split("=", 1) for a in aliases.split(",")) if aliases else {}


def position_labels(graph: nx.MultiDiGraph) -> tuple[str, ...] | None:
    """Each position group as a reader knows it: ``12 (END)`` where a named position is
    at it, else the group itself (None: a graph without positions)."""
    groups = position_groups(graph)
    if groups is None:
        return None
    names: dict[str, list[str]] = {}
    for name, group in position_aliases(graph).items():
        names.setdefault(group, []).append(name)
    return tuple(f"{g} ({'/'.join(names[g])})" if g in names else g for g in groups)


def layout_of(graph: nx.MultiDiGraph) -> Layout:
    """The :class:`Layout` (or :class:`PositionLayout`) a graph's metadata records."""
    shape = shape_of(graph)
    parallel = bool(graph.graph.get("parallel"))
    groups = position_groups(graph)
    if groups is None:
        return Layout(*shape, parallel)
    readout = str(graph.graph.get("position_readout") or "")
    later = str(graph.graph.get("position_later_keys") or "")
    later_keys = tuple(tuple(pair.split(">", 1)) for pair in later.split(",")) if later else ()
    for pair in later_keys:
        if len(pair) != 2 or not set(pair) <= set(groups):
            raise CircuitxError(
                f"position_later_keys names {'>'.join(pair)!r}, not two of its positions"
            )
    return PositionLayout(
        *shape,
        parallel,
        positions=groups,
        readout=tuple(readout.split(",")) if readout else (),
        ordered=bool(graph.graph.get("position_order")),
        later_keys=later_keys,
        aliases=tuple(position_aliases(graph).items()),
    )


def shape_of(graph: nx.MultiDiGraph) -> tuple[int, int, bool]:
    """``(n_layers, n_heads, has_mlp)`` recorded in a graph's metadata."""
    meta = graph.graph
    try:
        return int(meta["n_layers"]), int(meta["n_heads"]), bool(meta["has_mlp"])
    except (KeyError, TypeError, ValueError):
        raise CircuitxError(
            "graph metadata lacks the model shape (n_layers, n_heads, has_mlp)"
        ) from None


def shape_text(shape: tuple[int, int, bool]) -> str:
    """A model shape in words: ``3 layers x 4 heads`` (``, attention-only`` without MLPs)."""
    n_layers, n_heads, has_mlp = shape
    return f"{counted(n_layers, 'layer')} x {counted(n_heads, 'head')}" + (
        "" if has_mlp else ", attention-only"
    )


def shapes_text(named: dict[str, nx.MultiDiGraph]) -> str:
    """The graphs' shapes in words by name, as `` (graph: A; reference: B)``, or "" where
    one has none recorded."""
    try:
        return " (" + "; ".join(f"{n}: {shape_text(shape_of(g))}" for n, g in named.items()) + ")"
    except CircuitxError:
        return ""


# what discovery measures of the circuit it selected (and of its ranking of edges)
CIRCUIT_MEASURES = ("faithfulness", "cpr", "cmd", "faithfulness_curve", "cpr_curve")

POSITION_KEYS = (
    "positions",
    "position_readout",
    "position_order",
    "position_aliases",
    "position_later_keys",
)


def collapse_positions(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The component-level graph of a circuit over token positions (a graph without
    positions is returned as it is): each node's and edge's score is the sum of its
    scores at every position (None where none has one), and the circuit is selected
    again from those sums as discovery selects (by the graph's threshold or top k, at its
    level); a graph selected otherwise keeps a component where any of its positions is
    kept. For a linear attribution (EAP, EAP-IG) the sums are the component-level scores
    themselves; for patching they are not (effects at positions need not add up). The
    faithfulness, CPR and CMD measured of the circuit over positions are not kept."""
    if position_groups(graph) is None:
        return graph
    metadata = {k: v for k, v in graph.graph.items() if k not in POSITION_KEYS}
    # measured of the circuit over positions, not of the components' circuit made here
    metadata |= dict.fromkeys(CIRCUIT_MEASURES)
    collapsed = layout_graph(layout_of(graph).base, **metadata)
    collapsed.graph["collapsed_positions"] = graph.graph["positions"]
    node_sums: dict[str, float] = {}
    kept_nodes: set[str] = set()
    for node, data in graph.nodes(data=True):
        component = split_position(node)[0]
        if data["score"] is not None:
            node_sums[component] = node_sums.get(component, 0.0) + float(data["score"])
        if data["in_circuit"]:
            kept_nodes.add(component)
    edge_sums: dict[str, float] = {}
    kept_edges: set[str] = set()
    for sender, receiver, data in graph.edges(data=True):
        key = edge_name(split_position(sender)[0], split_position(receiver)[0], data["input"])
        if data["score"] is not None:
            edge_sums[key] = edge_sums.get(key, 0.0) + float(data["score"])
        if data["in_circuit"]:
            kept_edges.add(key)
    for node, data in collapsed.nodes(data=True):
        data["score"] = node_sums.get(node)
    for key, data in edges_by_name(collapsed).items():
        data["score"] = edge_sums.get(key)
    threshold, top_k = graph.graph.get("threshold"), graph.graph.get("top_k")
    if threshold is not None or top_k is not None:
        kept_nodes, kept_edges = selection_by_score(collapsed, threshold, top_k)
    for node, data in collapsed.nodes(data=True):
        data["in_circuit"] = node in kept_nodes or data["kind"] in ("input", "logits")
    for key, data in edges_by_name(collapsed).items():
        data["in_circuit"] = key in kept_edges
    return collapsed
