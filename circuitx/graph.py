"""The circuit graph: one networkx universe of nodes and edges per model shape, and its I/O.

Nodes are ``input``, ``a{L}.h{H}`` (attention head), ``m{L}`` (MLP) and ``logits``.
Edges run from a sender's output to a receiver's input; an edge into a head names the
input it feeds (``q``, ``k`` or ``v``), so there are three parallel edges between a sender
and a later head. The graph is a ``MultiDiGraph`` whose edge keys are the MIB-style edge
names (``a0.h1->a3.h2<q>``, ``m2->logits``). Every node and edge carries ``score``
(float, or None where a method gives none) and ``in_circuit`` (bool).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from circuitx.errors import CircuitxError, listed
from circuitx.files import atomic_open, finite
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

SCHEMA_KEY = "circuitx_schema"
GRAPH_FORMATS = ("graphml", "json", "dot", "eap-ig")


def full_graph(
    n_layers: int, n_heads: int, has_mlp: bool = True, parallel: bool = False, **metadata: Any
) -> nx.MultiDiGraph:
    """Every node and edge of a model's computational graph (its :class:`Layout`), none
    in the circuit yet."""
    return layout_graph(Layout(n_layers, n_heads, has_mlp, parallel), **metadata)


def layout_graph(layout: Layout, **metadata: Any) -> nx.MultiDiGraph:
    """Every node and edge of ``layout``, none in the circuit yet; a
    :class:`PositionLayout`'s groups are recorded in the metadata (``positions``, its
    ``position_readout`` groups, ``position_order``) so that :func:`layout_of` rebuilds it."""
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
    an edge when both its ends are."""
    for name, score in nodes.items():
        _add_node(graph, name, "feature", parse_node(name)[1], None)
        mlp_kept = graph.nodes[name.split(".")[0]]["in_circuit"]
        graph.nodes[name].update(
            score=score, in_circuit=mlp_kept and (threshold is None or abs(score) >= threshold)
        )
    for sender, receiver, head_input, score in edges:
        _add_edge(graph, sender, receiver, head_input)
        kept = graph.nodes[sender]["in_circuit"] and graph.nodes[receiver]["in_circuit"]
        graph.edges[sender, receiver, edge_name(sender, receiver, head_input)].update(
            score=score, in_circuit=kept
        )
    graph.graph["granularity"] = "feature"


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


def layout_of(graph: nx.MultiDiGraph) -> Layout:
    """The :class:`Layout` (or :class:`PositionLayout`) a graph's metadata records."""
    shape = shape_of(graph)
    parallel = bool(graph.graph.get("parallel"))
    groups = position_groups(graph)
    if groups is None:
        return Layout(*shape, parallel)
    readout = str(graph.graph.get("position_readout") or "")
    aliases = str(graph.graph.get("position_aliases") or "")
    return PositionLayout(
        *shape,
        parallel,
        positions=groups,
        readout=tuple(readout.split(",")) if readout else (),
        ordered=bool(graph.graph.get("position_order")),
        aliases=tuple(tuple(a.split("=", 1)) for a in aliases.split(",")) if aliases else (),
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


# ---------------------------------------------------------------- file I/O


def graph_format(path: str | Path, explicit: str | None = None) -> str:
    """The file format named explicitly or by the path's extension."""
    named = explicit or suffix_format(path)
    if named is None:
        raise CircuitxError(
            f"cannot tell the graph format of {str(path)!r}: use .graphml, .json or .dot"
        )
    return named


def suffix_format(path: str | Path) -> str | None:
    """The graph format ``path``'s extension names, or None for another extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    aliases = {"graphml": "graphml", "xml": "graphml", "json": "json", "dot": "dot", "gv": "dot"}
    return aliases.get(suffix)


def write_graph(graph: nx.MultiDiGraph, path: str | Path, fmt: str | None = None) -> None:
    """Write ``graph`` atomically as GraphML, JSON or DOT (chosen by extension or ``fmt``)."""
    if not isinstance(graph, nx.MultiDiGraph):
        raise CircuitxError(
            f"write_graph takes a circuit graph (a networkx MultiDiGraph, as discover "
            f"returns), not {type(graph).__name__}"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise CircuitxError(f"write_graph takes a file path, not {path!r}")
    text = graph_to_text(graph, graph_format(path, fmt))
    with atomic_open(path) as handle:
        handle.write(text)


def graph_to_text(graph: nx.MultiDiGraph, fmt: str) -> str:
    if fmt == "graphml":
        return "\n".join(nx.generate_graphml(_graphml_ready(graph))) + "\n"
    if fmt == "json":
        return json.dumps(to_json_dict(graph), indent=1, allow_nan=False) + "\n"
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "eap-ig":
        return json.dumps(to_eap_ig_dict(graph), allow_nan=False) + "\n"
    raise CircuitxError(f"unknown graph format {fmt!r}; choose one of {', '.join(GRAPH_FORMATS)}")


def read_graph(path: str | Path) -> nx.MultiDiGraph:
    """Read a circuit graph written by :func:`write_graph` (GraphML or JSON), or a graph
    EAP-IG wrote (its JSON, as MIB takes it)."""
    if not isinstance(path, (str, os.PathLike)):
        raise CircuitxError(f"read_graph takes a file path, not {path!r}")
    path = Path(path)
    if path.is_dir():
        raise CircuitxError(f"{path} is a directory, not a graph file")
    if not path.is_file():
        raise CircuitxError(f"graph file not found: {path}")
    fmt = suffix_format(path)
    if fmt is None:
        raise CircuitxError(
            f"cannot tell the graph format of {str(path)!r}: read .graphml or .json"
        )
    if fmt not in ("graphml", "json"):  # a format we write but do not read back
        raise CircuitxError(f"{path} is a {fmt} file; circuitx reads graphs as GraphML or JSON")
    try:
        if fmt == "graphml":
            graph = _from_graphml(nx.read_graphml(path, force_multigraph=True))
        else:  # JSON: ours, or an EAP-IG (MIB) graph
            data = json.loads(path.read_text())
            graph = from_eap_ig_dict(data) if is_eap_ig_dict(data) else from_json_dict(data)
        _validate(graph)
    except CircuitxError as error:
        raise CircuitxError(f"malformed graph file {path}: {error}") from None
    except Exception as error:  # parsers raise many types; report one line
        detail = str(error).strip().splitlines()
        raise CircuitxError(
            f"malformed graph file {path}: {detail[0] if detail else type(error).__name__}"
        ) from None
    return graph


JSON_VERSION = 1  # of the JSON form (to_json_dict)
NODE_ATTRIBUTES = ("kind", "layer", "head", "score", "in_circuit")
EDGE_ATTRIBUTES = ("input", "score", "in_circuit")


def _validate(graph: nx.MultiDiGraph) -> None:
    """Every node and edge carries the schema's attributes, with values of their kind (the
    name of the first that does not, and the attribute), the metadata holds the shape and
    every node is in a model of that shape."""
    if graph.number_of_nodes() == 0:
        raise CircuitxError("graph has no nodes")
    n_layers, n_heads, has_mlp = shape_of(graph)
    if n_layers < 1 or n_heads < 1:
        raise CircuitxError(f"a model of {n_layers} layers x {n_heads} heads has no heads")
    components = Layout(n_layers, n_heads, has_mlp).n_senders + 1  # every one, and logits
    if graph.number_of_nodes() < components:
        raise CircuitxError(
            f"its metadata describes a model of {n_layers} layers x {n_heads} heads, "
            f"{components} nodes, but it has {graph.number_of_nodes()}"
        )
    parallel = bool(graph.graph.get("parallel"))
    _check_selection(graph.graph)
    if graph.number_of_edges() == 0:
        raise CircuitxError("graph has no edges (a graph holds every edge of its model)")
    for node, data in graph.nodes(data=True):
        kind, layer, head = parse_node(node)
        if all(data.get(attribute) is None for attribute in ("kind", "in_circuit")):
            raise CircuitxError(f"node {node} is not declared (an edge names it)")
        _check_attributes(f"node {node}", data, NODE_ATTRIBUTES)
        if data["kind"] != kind:
            raise CircuitxError(f"node {node}: kind must be {kind!r}, not {data['kind']!r}")
        outside = layer is not None and (
            layer >= n_layers
            or (head is not None and head >= n_heads)
            or (head is None and not has_mlp)
        )
        if outside:
            mlps = "with" if has_mlp else "without"
            raise CircuitxError(
                f"node {node} is not in the model its metadata describes ({n_layers} layers "
                f"x {n_heads} heads, {mlps} MLPs)"
            )
    for sender, receiver, key, data in graph.edges(keys=True, data=True):
        _check_attributes(f"edge {key}", data, EDGE_ATTRIBUTES)
        if parse_edge_name(key) != (sender, receiver, data["input"]):
            raise CircuitxError(f"edge {key}: its ends or input do not match its name")
        if not _reads(receiver, sender, n_layers, parallel):
            raise CircuitxError(f"edge {key}: {receiver} runs before {sender} and cannot read it")


def _reads(receiver: str, sender: str, n_layers: int, parallel: bool) -> bool:
    """Whether ``receiver`` runs after ``sender`` (a model's edges go forward only)."""

    def place(node: str) -> tuple[int, int]:
        kind, layer, _ = parse_node(node)
        if kind in (INPUT, LOGITS):
            return (-1, 0) if kind == INPUT else (n_layers, 0)
        return layer, int(kind != "head" and not parallel)  # an MLP after its layer's heads

    return place(sender) < place(receiver)


def _check_selection(meta: dict[str, Any]) -> None:
    """The recorded selection, which drawings and position collapsing apply again: a
    threshold of at least 0, a top k of at least 1, or neither."""
    threshold, top_k = meta.get("threshold"), meta.get("top_k")
    if threshold is not None and (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or threshold < 0
    ):
        raise CircuitxError(f"metadata threshold must be a number >= 0, not {threshold!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise CircuitxError(f"metadata top_k must be a whole number >= 1, not {top_k!r}")


def _check_attributes(element: str, data: dict[str, Any], required: tuple[str, ...]) -> None:
    for attribute in required:
        if attribute not in data:
            raise CircuitxError(f"{element} has no {attribute!r} attribute")
    if not isinstance(data["in_circuit"], bool):
        raise CircuitxError(
            f"{element}: in_circuit must be true or false, not {data['in_circuit']!r}"
        )
    _score(data["score"], element)


def _score(value: Any, element: str) -> float | None:
    """A score read from a file: a finite number (not a string, a bool or NaN), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CircuitxError(f"{element}: score must be a finite number or null, not {value!r}")
    return float(value)


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars; NaN and infinite floats to None."""
    if isinstance(value, np.generic):
        value = value.item()
    return finite(value)


def _encodable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _graphml_ready(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """A copy GraphML can hold: no None (omitted), no lists or dicts (JSON strings)."""
    node_rows = [dict(d) for _, d in graph.nodes(data=True)]
    edge_rows = [dict(d) for _, _, d in graph.edges(data=True)]
    graph_row = {k: v for k, v in graph.graph.items() if k != SCHEMA_KEY}
    schema: dict[str, Any] = {"json": {}}
    for scope, rows in (("graph", [graph_row]), ("node", node_rows), ("edge", edge_rows)):
        keys = _all_keys(rows)
        as_json = [k for k in keys if any(not _encodable(_plain(r.get(k))) for r in rows)]
        schema[scope] = keys
        schema["json"][scope] = as_json
        for row in rows:
            for key in list(row):
                value = _plain(row[key])
                if key in as_json:
                    row[key] = json.dumps(value)
                elif value is None:
                    del row[key]
                else:
                    row[key] = value
    out = nx.MultiDiGraph()
    out.graph.update(graph_row)
    out.graph[SCHEMA_KEY] = json.dumps(schema)
    for node, row in zip(graph.nodes, node_rows):
        out.add_node(node, **row)
    for (sender, receiver, key), row in zip(graph.edges(keys=True), edge_rows):
        out.add_edge(sender, receiver, key=key, **row)
    return out


def _from_graphml(raw: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """Undo :func:`_graphml_ready`: restore None values and JSON-encoded attributes."""
    schema = json.loads(raw.graph.pop(SCHEMA_KEY, "{}"))
    json_keys = schema.get("json", {})

    def restore(row: dict[str, Any], scope: str) -> dict[str, Any]:
        out = {key: row.get(key) for key in schema.get(scope, [])}
        out.update({k: v for k, v in row.items() if k not in out})
        for key in json_keys.get(scope, []):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    graph = nx.MultiDiGraph()
    for key in ("node_default", "edge_default"):  # added by the GraphML reader
        if key not in schema.get("graph", []):
            raw.graph.pop(key, None)
    graph.graph.update(restore(raw.graph, "graph"))
    for node, row in raw.nodes(data=True):
        graph.add_node(node, **restore(row, "node"))
    for sender, receiver, key, row in raw.edges(keys=True, data=True):
        graph.add_edge(sender, receiver, key=key, **restore(row, "edge"))
    return graph


def to_json_dict(graph: nx.MultiDiGraph) -> dict[str, Any]:
    """The JSON form: metadata, nodes by name, edges by MIB-style edge name.

    Every node (and every edge) lists the same keys, None where it has no value, as in
    the GraphML form.
    """
    nodes = dict(graph.nodes(data=True))
    edges = edges_by_name(graph)
    return {
        "format": "circuitx-graph",
        "version": JSON_VERSION,
        "metadata": {k: _plain(v) for k, v in graph.graph.items() if k != SCHEMA_KEY},
        "nodes": _uniform_rows(nodes),
        "edges": _uniform_rows(edges),
    }


def _all_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Every attribute key of ``rows``, in first-seen order."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return list(keys)


def _uniform_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keys = _all_keys(rows.values())
    return {name: {k: _plain(row.get(k)) for k in keys} for name, row in rows.items()}


def from_json_dict(data: Any) -> nx.MultiDiGraph:
    if not isinstance(data, dict) or data.get("format") != "circuitx-graph":
        raise CircuitxError('not a circuitx graph (missing "format": "circuitx-graph")')
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, dict) or not isinstance(edges, dict):
        raise CircuitxError('"nodes" and "edges" must be objects')
    version = data.get("version")
    if version != JSON_VERSION:
        raise CircuitxError(
            f"graph format version {version!r}; this circuitx reads version {JSON_VERSION}"
        )
    graph = nx.MultiDiGraph()
    graph.graph.update(data.get("metadata") or {})
    for node, attrs in nodes.items():
        graph.add_node(node, **attrs)
    for name, attrs in edges.items():
        sender, receiver, _ = parse_edge_name(name)
        if sender not in graph or receiver not in graph:
            raise CircuitxError(f"edge {name!r} names a node the graph does not have")
        graph.add_edge(sender, receiver, key=name, **attrs)
    return graph


# ---------------------------------------------------------------- EAP-IG / MIB graphs

EAP_IG_KEYS = ("cfg", "nodes", "edges")


def is_eap_ig_dict(data: Any) -> bool:
    """Whether parsed JSON is an EAP-IG (MIB) graph: ``cfg``, ``nodes`` and ``edges``."""
    return isinstance(data, dict) and all(key in data for key in EAP_IG_KEYS)


def to_eap_ig_dict(graph: nx.MultiDiGraph) -> dict[str, Any]:
    """The graph as EAP-IG's ``Graph.to_json`` writes it and ``Graph.from_json`` reads it
    (what MIB evaluates): ``cfg`` (with ``d_model``, which its reader needs), each node's
    membership and score, and each edge's score and membership. The metadata goes in
    ``circuitx_metadata``, which EAP-IG does not read."""
    n_layers, n_heads, has_mlp = shape_of(graph)
    if not has_mlp:
        raise CircuitxError("EAP-IG graphs always have MLPs; this graph's model has none")
    if any(data["kind"] == "feature" for _, data in graph.nodes(data=True)):
        raise CircuitxError("EAP-IG graphs have no transcoder features; export the component graph")
    if position_groups(graph) is not None:
        raise CircuitxError(
            "EAP-IG graphs have no token positions; export --collapse-positions for the components"
        )
    d_model = graph.graph.get("d_model")
    if not isinstance(d_model, int) or isinstance(d_model, bool):
        raise CircuitxError(
            "EAP-IG's reader needs the model's d_model, which this graph does not record "
            "(a graph from before circuitx recorded it): discover it again"
        )
    edges = edges_by_name(graph)
    unscored = [name for name, data in edges.items() if data["score"] is None]
    if len(unscored) == len(edges):
        method = graph.graph.get("method", "its method")
        raise CircuitxError(
            f"EAP-IG graphs score every edge, and {method} scores nodes only: "
            "export --format json keeps its node scores"
        )
    if unscored:
        raise CircuitxError(
            f"EAP-IG graphs score every edge, and {len(unscored)} of this graph's have no "
            f"score ({listed(unscored, 3)})"
        )
    cfg = {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "parallel_attn_mlp": bool(graph.graph.get("parallel", False)),
        "d_model": d_model,
    }
    nodes = {}
    for name, data in graph.nodes(data=True):
        nodes[name] = {"in_graph": bool(data["in_circuit"])}
        if data["score"] is not None:  # EAP-IG reads a node without one as unscored
            nodes[name]["score"] = _plain(data["score"])
    return {
        "cfg": cfg,
        "nodes": nodes,
        "edges": {
            name: {"score": _plain(data["score"]), "in_graph": bool(data["in_circuit"])}
            for name, data in edges.items()
        },
        "circuitx_metadata": {k: _plain(v) for k, v in graph.graph.items() if k != SCHEMA_KEY},
    }


def from_eap_ig_dict(data: dict[str, Any]) -> nx.MultiDiGraph:
    """Our graph from an EAP-IG (MIB) graph: its cfg's shape, node and edge membership and
    scores (a node with no score: its strongest outgoing edge's). Nodes are read as EAP-IG
    writes them now ({"in_graph", "score"}) or did before (a bool, with the scores in
    ``node_scores``, as circuitx wrote them). Neuron-level graphs are refused: circuitx
    graphs have heads and MLPs."""
    cfg = data["cfg"]
    try:
        n_layers, n_heads = int(cfg["n_layers"]), int(cfg["n_heads"])
    except (KeyError, TypeError, ValueError):
        raise CircuitxError("EAP-IG graph cfg lacks n_layers and n_heads") from None
    nodes = data["nodes"]
    if not isinstance(nodes, dict) or not isinstance(data["edges"], dict):
        raise CircuitxError('EAP-IG graph "nodes" and "edges" must be objects')
    neurons = any(isinstance(v, dict) and ("neurons" in v or "neurons_scores" in v)
                  for v in nodes.values())  # fmt: skip
    if neurons or any("neuron" in key for key in data):
        raise CircuitxError(
            "neuron-level EAP-IG graphs are not supported: circuitx graphs have heads and MLPs"
        )
    components = Layout(n_layers, n_heads, True).n_senders + 1  # EAP-IG writes every node
    if n_layers < 1 or n_heads < 1 or len(nodes) < components:
        raise CircuitxError(
            f"EAP-IG graph cfg describes a model of {n_layers} layers x {n_heads} heads, "
            f"{components} nodes, but the graph has {len(nodes)}"
        )
    parallel = bool(cfg.get("parallel_attn_mlp", False))
    meta = data.get("circuitx_metadata")
    shape_keys = ("n_layers", "n_heads", "has_mlp", "parallel")
    meta = {k: v for k, v in meta.items() if k not in shape_keys} if isinstance(meta, dict) else {}
    if isinstance(cfg.get("d_model"), int):
        meta.setdefault("d_model", cfg["d_model"])
    graph = full_graph(n_layers, n_heads, True, parallel, **{**meta, "source_format": "eap-ig"})
    scored = False  # whether the file scores nodes at all
    for name, value in nodes.items():
        if name not in graph:
            raise CircuitxError(f"node {name!r} is not in a {n_layers} x {n_heads} model's graph")
        member = value.get("in_graph") if isinstance(value, dict) else value
        graph.nodes[name]["in_circuit"] = bool(member)
        if isinstance(value, dict) and value.get("score") is not None:
            graph.nodes[name]["score"] = _score(value["score"], f"node {name}")
            scored = True
    edges = edges_by_name(graph)
    for name, value in data["edges"].items():
        if name not in edges:
            raise CircuitxError(f"edge {name!r} is not in a {n_layers} x {n_heads} model's graph")
        if not isinstance(value, dict):
            raise CircuitxError(f'edge {name!r}: expected {{"score", "in_graph"}}')
        edges[name]["score"] = _score(value.get("score"), f"edge {name}")
        edges[name]["in_circuit"] = bool(value.get("in_graph", False))
    old_scores = data.get("node_scores")  # where circuitx wrote them before
    if isinstance(old_scores, dict):
        scored = True
        for name, score in old_scores.items():
            if name in graph:
                graph.nodes[name]["score"] = _score(score, f"node {name}")
    for node in [] if scored else graph.nodes:
        out = [d["score"] for *_, d in graph.out_edges(node, data=True) if d["score"] is not None]
        if out:
            graph.nodes[node]["score"] = max(out, key=abs)
    return graph


def to_dot(graph: nx.MultiDiGraph) -> str:
    """Graphviz DOT of the circuit: in-circuit nodes (with scores) and edges (with q/k/v)."""
    lines = ["digraph circuit {", "  rankdir=BT;", "  node [shape=box, fontname=Helvetica];"]
    for node, data in graph.nodes(data=True):
        if data.get("in_circuit") or node in (INPUT, LOGITS):
            score = data.get("score")
            label = node if score is None else f"{node}\\n{score:.3g}"
            lines.append(f'  "{node}" [label="{label}"];')
    for sender, receiver, data in graph.edges(data=True):
        if data.get("in_circuit"):
            label = f' [label="{data["input"]}"]' if data.get("input") else ""
            lines.append(f'  "{sender}" -> "{receiver}"{label};')
    lines.append("}")
    return "\n".join(lines) + "\n"


POSITION_KEYS = ("positions", "position_readout", "position_order", "position_aliases")


def collapse_positions(graph: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """The component-level graph of a circuit over token positions (a graph without
    positions is returned as it is): each node's and edge's score is the sum of its
    scores at every position (None where none has one), and the circuit is selected
    again from those sums as discovery selects (by the graph's threshold or top k, at its
    level); a graph selected otherwise keeps a component where any of its positions is
    kept. For a linear attribution (EAP, EAP-IG) the sums are the component-level scores
    themselves; for patching they are not (effects at positions need not add up)."""
    if position_groups(graph) is None:
        return graph
    metadata = {k: v for k, v in graph.graph.items() if k not in POSITION_KEYS}
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
