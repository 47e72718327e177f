"""Reference circuits: building published circuits in the shared graph (the ``--reference``
option is resolved by :mod:`circuitx.discovery.references`).

Class-level circuits (IOI) follow ACDC's counting: ``INPUT`` is the embeddings and every
MLP output before the receiver, ``OUTPUT`` is the logits and every MLP input after the
sender, and every MLP stays in the circuit with the edges among MLPs, input and logits.
Tasks whose published circuit is an explicit edge list (greater-than, docstring) build it
with :func:`reference_graph`, :func:`put_in_circuit` and :func:`mark_edge`.

Edge counts: the graph names one edge per sender and head input (MIB's convention). ACDC
also counts, for every head input that receives an edge, the edge from that input into
the head; :func:`acdc_edge_count` gives that count, which is what ACDC's papers report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.graph import (
    HEAD_INPUTS,
    INPUT,
    LOGITS,
    component_graph,
    edge_name,
    edges_by_name,
    edges_off_path,
    full_graph,
    head_node,
    layout_graph,
    select_edges,
    shape_of,
    shape_text,
)
from circuitx.graph_files import graph_json, read_graph
from circuitx.layout import PositionLayout
from circuitx.names import parse_auto_circuit_edge_name, parse_edge_name, parse_node, split_position

INPUT_CLASS = "INPUT"
OUTPUT_CLASS = "OUTPUT"

ClassEdge = tuple[str, str, str]  # (sender class, receiver class, head inputs such as "qkv")
Head = tuple[int, int]  # (layer, head)


def require_shape(
    name: str,
    n_layers: int,
    n_heads: int,
    has_mlp: bool,
    heads: Iterable[Head],
    mlp_layers: Iterable[int] = (),
) -> None:
    """Fail in one line unless the model holds every head and MLP of reference ``name``."""
    heads, mlp_layers = list(heads), list(mlp_layers)
    need_layers = 1 + max([layer for layer, _ in heads] + mlp_layers)
    need_heads = 1 + max(head for _, head in heads)
    if n_layers < need_layers or n_heads < need_heads:
        raise CircuitxError(
            f"the {name} reference circuit needs at least "
            f"{shape_text((need_layers, need_heads, True))}; this model has "
            f"{n_layers} x {n_heads}"
        )
    if mlp_layers and not has_mlp:
        raise CircuitxError(f"the {name} reference circuit has MLPs; this model has none")


def reference_graph(name: str, n_layers: int, n_heads: int, has_mlp: bool) -> nx.MultiDiGraph:
    """The full graph with nothing in the circuit yet; input and logits are in every circuit."""
    graph = full_graph(n_layers, n_heads, has_mlp, reference=name)
    for _, data in graph.nodes(data=True):
        data["role"] = None
    put_in_circuit(graph, [INPUT], "input")
    put_in_circuit(graph, [LOGITS], "logits")
    return graph


def put_in_circuit(graph: nx.MultiDiGraph, nodes: Iterable[str], role: str | None) -> None:
    for node in nodes:
        graph.nodes[node].update(in_circuit=True, role=role)


def mark_edge(
    graph: nx.MultiDiGraph, sender: str, receiver: str, head_inputs: Iterable[str] = HEAD_INPUTS
) -> int:
    """Put sender->receiver in the circuit (into each of ``head_inputs`` of a head
    receiver), and return how many edges that is.

    Pairs the model's graph has no edge for (a sender at or after its receiver) are skipped.
    """
    inputs = head_inputs if graph.nodes[receiver]["kind"] == "head" else [None]
    marked = 0
    for head_input in inputs:
        key = edge_name(sender, receiver, head_input)
        if graph.has_edge(sender, receiver, key):
            graph.edges[sender, receiver, key]["in_circuit"] = True
            marked += 1
    return marked


def acdc_edge_count(graph: nx.MultiDiGraph) -> int:
    """Circuit edges as ACDC counts them: ours plus one per head input that receives any."""
    edges = [(r, d["input"]) for _, r, d in graph.edges(data=True) if d["in_circuit"]]
    return len(edges) + len({(r, i) for r, i in edges if i is not None})


def class_circuit(
    name: str,
    n_layers: int,
    n_heads: int,
    has_mlp: bool,
    classes: dict[str, Sequence[Head]],
    class_edges: Sequence[ClassEdge],
) -> nx.MultiDiGraph:
    """A reference graph from head classes and class-to-class edges (see module docstring)."""
    require_shape(name, n_layers, n_heads, has_mlp, [h for hs in classes.values() for h in hs])
    graph = reference_graph(name, n_layers, n_heads, has_mlp)
    members = {cls: [head_node(*h) for h in heads] for cls, heads in classes.items()}
    for cls, nodes in members.items():
        put_in_circuit(graph, nodes, cls)
    mlps = [n for n, kind in graph.nodes(data="kind") if kind == "mlp"]
    put_in_circuit(graph, mlps, "mlp")

    def group(cls: str, other_layer: int) -> list[str]:
        if cls == INPUT_CLASS:
            return [INPUT] + [m for m in mlps if graph.nodes[m]["layer"] < other_layer]
        if cls == OUTPUT_CLASS:
            return [LOGITS] + [m for m in mlps if graph.nodes[m]["layer"] >= other_layer]
        return members[cls]

    for sender_cls, receiver_cls, inputs in class_edges:
        marked = 0
        if receiver_cls == OUTPUT_CLASS:
            for sender in members[sender_cls]:
                for receiver in group(OUTPUT_CLASS, graph.nodes[sender]["layer"]):
                    marked += mark_edge(graph, sender, receiver)
        else:
            for receiver in members[receiver_cls]:
                for sender in group(sender_cls, graph.nodes[receiver]["layer"]):
                    marked += mark_edge(graph, sender, receiver, inputs)
        if not marked:  # a class edge that names no edge of the model is a mistake
            raise CircuitxError(
                f"reference {name}: class edge {sender_cls} -> {receiver_cls} is no edge of "
                f"the model: no head of {sender_cls} runs before one of {receiver_cls}"
            )
    for sender in [INPUT, *mlps]:
        for receiver in [*mlps, LOGITS]:
            mark_edge(graph, sender, receiver)
    return graph


def reshaped(graph: nx.MultiDiGraph, name: str, n_layers: int, n_heads: int) -> nx.MultiDiGraph:
    """``graph``'s circuit (nodes, roles, edges) in the graph of a model with at least its
    layers and heads (a model trained to implement it in the same places)."""
    circuit = [(node, data) for node, data in graph.nodes(data=True) if data.get("in_circuit")]
    heads = [(data["layer"], data["head"]) for _, data in circuit if data["kind"] == "head"]
    mlps = [data["layer"] for _, data in circuit if data["kind"] == "mlp"]
    require_shape(name, n_layers, n_heads, True, heads or [(0, 0)], mlps)
    target = reference_graph(name, n_layers, n_heads, True)
    for node, data in circuit:
        put_in_circuit(target, [node], data.get("role") or "")
    for sender, receiver, data in graph.edges(data=True):
        if data.get("in_circuit"):
            mark_edge(target, sender, receiver, [data["input"]] if data.get("input") else [])
    return target


def circuit_record(reference: nx.MultiDiGraph) -> dict[str, Any]:
    """A reference's circuit in a few names (for a leaderboard cell's record): its nodes
    with their roles and its edges."""
    return {
        "name": reference.graph.get("reference"),
        "nodes": {n: d.get("role") for n, d in reference.nodes(data=True) if d.get("in_circuit")},
        "edges": [key for key, d in edges_by_name(reference).items() if d.get("in_circuit")],
    }


def from_circuit_record(
    record: dict[str, Any], n_layers: int, n_heads: int, has_mlp: bool
) -> nx.MultiDiGraph:
    """The reference graph :func:`circuit_record` describes, in a model of this shape."""
    graph = reference_graph(record.get("name") or "reference", n_layers, n_heads, has_mlp)
    for node, role in record["nodes"].items():
        if node in graph:
            put_in_circuit(graph, [node], role or "")
    edges = edges_by_name(graph)
    for key in record["edges"]:
        if key in edges:
            edges[key]["in_circuit"] = True
    return graph


# ---------------------------------------------------------------- reference files

_HEAD = re.compile(r"^(?:a)?(\d+)\.(?:h)?(\d+)$")


def is_class_circuit(data: Any) -> bool:
    """Whether parsed JSON is (meant as) a circuit of head classes: ``{"classes": {...},
    "edges": [...]}`` (how the IOI paper, ACDC and auto-circuit state official circuits:
    classes of heads and the classes that talk)."""
    return isinstance(data, dict) and "classes" in data


def _edge_of(name: str, text: Any) -> tuple[str, str, str | None]:
    """(sender, receiver, head input) of an edge named as circuitx and MIB name it
    (``a0.h1->a7.h3<k>``) or as auto-circuit does (``A0.1->A7.3.K``, ``MLP 3``, ``Resid
    Start``, ``Resid End``)."""
    if not isinstance(text, str) or "->" not in text:
        raise CircuitxError(f"reference {name}: {text!r} is not an edge name")
    try:
        if "<" in text or not text[:1].isupper():
            return parse_edge_name(text)
        return parse_auto_circuit_edge_name(text)
    except CircuitxError as error:
        raise CircuitxError(f"reference {name}: {error}") from None


def edge_list_circuit(
    name: str, names: list[Any], n_layers: int, n_heads: int, has_mlp: bool
) -> nx.MultiDiGraph:
    """A reference from a JSON list of edge names (circuitx's, MIB's or auto-circuit's):
    those edges and their ends in the circuit. An edge the model's graph lacks is one
    line naming it."""
    if not names:
        raise CircuitxError(f"reference {name}: its list of edges is empty")
    graph = reference_graph(name, n_layers, n_heads, has_mlp)
    edges = edges_by_name(graph)
    for text in names:
        sender, receiver, head_input = _edge_of(name, text)
        key = edge_name(sender, receiver, head_input)
        if key not in edges and head_input is None and parse_node(receiver)[0] == "head":
            raise CircuitxError(
                f"reference {name}: edge {text!r} goes into a head without naming the head's "
                f"input: write {key}<q>, <k> or <v>"
            )
        if key not in edges:
            raise CircuitxError(
                f"reference {name}: edge {text!r} ({key}) is not an edge of a "
                f"{n_layers} x {n_heads} model{'' if has_mlp else ' without MLPs'}"
            )
        edges[key]["in_circuit"] = True
        for end in (sender, receiver):  # no roles: a list names no classes
            graph.nodes[end]["in_circuit"] = True
    return graph


def class_circuit_from_dict(
    name: str, data: dict[str, Any], n_layers: int, n_heads: int, has_mlp: bool
) -> nx.MultiDiGraph:
    """A reference from ``{"classes": {class: [heads]}, "edges": [[sender class, receiver
    class, inputs], ...]}``: heads as ``"9.9"``, ``"a9.h9"`` or ``[9, 9]``; inputs any of
    ``q``, ``k``, ``v`` (all three when left out); ``INPUT`` and ``OUTPUT`` as in the
    built-in references. Expanded with the built-in references' rule
    (:func:`class_circuit`)."""
    classes, edges = data["classes"], data.get("edges")
    if not isinstance(classes, dict):
        raise CircuitxError(f"reference {name}: 'classes' must be an object")
    if edges is None:
        raise CircuitxError(
            f"reference {name} has 'classes' but no 'edges' (a list of [sender class, "
            "receiver class, inputs])"
        )
    if not isinstance(edges, list):
        raise CircuitxError(f"reference {name}: 'edges' must be a list")
    if not all(isinstance(members, list) for members in classes.values()):
        raise CircuitxError(f"reference {name}: each class is a list of heads")
    heads = {cls: [_head(name, cls, head) for head in members] for cls, members in classes.items()}
    if not any(heads.values()):
        raise CircuitxError(f"reference {name}: its classes list no heads")
    known = {*heads, INPUT_CLASS, OUTPUT_CLASS}
    class_edges = []
    for edge in edges:
        if not isinstance(edge, list) or len(edge) not in (2, 3):
            raise CircuitxError(
                f"reference {name}: an edge is [sender, receiver, inputs], not {edge!r}"
            )
        sender, receiver, inputs = (*edge, "qkv") if len(edge) == 2 else edge
        for cls in (sender, receiver):
            if cls not in known:
                raise CircuitxError(f"reference {name}: edge {edge!r} names no class {cls!r}")
        if sender == OUTPUT_CLASS or receiver == INPUT_CLASS:
            raise CircuitxError(
                f"reference {name}: edge {edge!r}: {INPUT_CLASS} only sends and "
                f"{OUTPUT_CLASS} only reads ([sender, receiver, inputs])"
            )
        if receiver == OUTPUT_CLASS and len(edge) == 3 and inputs:
            raise CircuitxError(
                f"reference {name}: edge {edge!r}: the output reads no q, k or v; leave "
                "its inputs out or empty"
            )
        if receiver != OUTPUT_CLASS and (not inputs or set(str(inputs)) - set(HEAD_INPUTS)):
            raise CircuitxError(f"reference {name}: edge {edge!r}: inputs are letters of qkv")
        class_edges.append((sender, receiver, str(inputs)))
    return class_circuit(name, n_layers, n_heads, has_mlp, heads, class_edges)


def _head(name: str, cls: str, head: Any) -> Head:
    if isinstance(head, list) and len(head) == 2 and all(isinstance(x, int) for x in head):
        return head[0], head[1]
    match = _HEAD.match(head) if isinstance(head, str) else None
    if match is None:
        raise CircuitxError(
            f'reference {name}: class {cls!r} lists {head!r}; a head is "9.9", "a9.h9" or [9, 9]'
        )
    return int(match.group(1)), int(match.group(2))


def read_reference(path: str, n_layers: int, n_heads: int, has_mlp: bool) -> nx.MultiDiGraph:
    """A reference circuit from a file, for a model of this shape: a graph (ours as GraphML
    or JSON, or EAP-IG's JSON) of the same shape, a circuit of head classes, or a JSON
    list of edge names."""
    written = hand_written_circuit(path, n_layers, n_heads, has_mlp)
    if written is not None:
        return written
    graph = component_graph(read_graph(path))
    if shape_of(graph) != (n_layers, n_heads, has_mlp):
        raise CircuitxError(
            f"reference {path} is for a model of {shape_text(shape_of(graph))}, not this "
            f"one of {shape_text((n_layers, n_heads, has_mlp))}"
        )
    return graph


def hand_written_circuit(
    path: str, n_layers: int, n_heads: int, has_mlp: bool, what: str = "reference"
) -> nx.MultiDiGraph | None:
    """The circuit of head classes or list of edge names in a JSON file, for a model of
    this shape; None for a graph file (ours or EAP-IG's). A file that is no JSON is
    refused as ``what``."""
    file = Path(path)
    if file.suffix.lower() == ".json" and file.is_file():
        try:
            data = graph_json(file.read_text())
        except (OSError, ValueError, UnicodeDecodeError, CircuitxError) as error:
            raise CircuitxError(f"cannot read {what} {path}: {error}") from None
        if is_class_circuit(data):
            return class_circuit_from_dict(file.name, data, n_layers, n_heads, has_mlp)
        if isinstance(data, list):
            return edge_list_circuit(file.name, data, n_layers, n_heads, has_mlp)
        if not (isinstance(data, dict) and ("format" in data or "cfg" in data or "scores" in data)):
            raise CircuitxError(
                f"reference {path} is JSON of none of the forms read: a circuit graph "
                '(ours or EAP-IG\'s), a circuit of head classes ({"classes", "edges"}) or a '
                "list of edge names (ours, MIB's or auto-circuit's)"
            )
    return None


# where a role's heads act and which key positions they read: role -> (acts at, reads at)
RolePositions = dict[str, tuple[str, tuple[str, ...]]]


def position_reference(
    reference: nx.MultiDiGraph, layout: PositionLayout, roles: RolePositions
) -> nx.MultiDiGraph:
    """A component-level reference circuit over ``layout``'s token positions. A node of a
    role ``roles`` places (matched without case) is in the circuit at the position it
    acts at; any other circuit node at every position. An edge is in the circuit where
    its component edge is and both its ends are, a residual edge (q, MLP, logits) at the
    receiver's own position, a k or v edge from a key position the receiver reads (where
    its role says which). A role's position the layout does not name is in its ``other``
    group; where it has none (every position a group, the role's position not at one
    index), the role's heads count at every position, or read every key position. What
    placing takes off every path from an input to the logits is left out
    (:func:`_keep_paths`); the reference's own edges off a path stay. The
    metadata's ``unplaced_heads`` names the circuit's heads that no role placed, and
    ``unplaced_reads`` those placed whose k and v edges come from every key position."""
    placed: dict[str, tuple[str, tuple[str | None, ...]]] = {}
    for key, (acts, reads) in roles.items():
        at = layout.group_of(acts)
        if at is not None:
            placed[key.lower()] = (at, tuple(layout.group_of(r) for r in reads))

    def place(node: str) -> tuple[str, tuple[str | None, ...]] | None:
        role = reference.nodes[node].get("role") if node in reference else None
        return placed.get(str(role).lower()) if role else None

    graph = layout_graph(layout, **dict(reference.graph))
    for node, data in graph.nodes(data=True):
        component, position = split_position(node)
        data["role"] = reference.nodes[component].get("role")
        if data["kind"] in ("input", "logits"):
            data["in_circuit"] = True
            continue
        found = place(component)
        kept = bool(reference.nodes[component]["in_circuit"])
        data["in_circuit"] = kept and (found is None or found[0] == position)
    component_edges = edges_by_name(reference)
    dangling = set(edges_off_path(reference))  # the reference's own: kept at every place
    kept_off_path = set()
    for sender, receiver, position_key, data in graph.edges(keys=True, data=True):
        base_sender, sender_at = split_position(sender)
        base_receiver, receiver_at = split_position(receiver)
        key = edge_name(base_sender, base_receiver, data["input"])
        if key in dangling:
            kept_off_path.add(position_key)
        if not (component_edges[key]["in_circuit"] and graph.nodes[sender]["in_circuit"]):
            continue
        if not graph.nodes[receiver]["in_circuit"]:
            continue
        reads = place(base_receiver)
        if data["input"] in ("k", "v") and reads is not None and None not in reads[1]:
            data["in_circuit"] = sender_at in reads[1]
        else:
            data["in_circuit"] = True
    _keep_paths(graph, kept_off_path)
    heads = [
        node
        for node, kept in reference.nodes(data="in_circuit")
        if kept and parse_node(node)[0] == "head"
    ]
    graph.graph["unplaced_heads"] = ",".join(node for node in heads if place(node) is None)
    graph.graph["unplaced_reads"] = ",".join(  # placed, but a key position they read is not
        node for node in heads if (found := place(node)) is not None and None in found[1]
    )
    return graph


def _keep_paths(graph: nx.MultiDiGraph, kept: set[str]) -> None:
    """Take out of ``graph``'s circuit its edges on no path from an input to the logits,
    but for those in ``kept`` (placed from the reference's own edges off a path, which a
    circuit found over positions keeps as its component graph does), and the nodes left
    with no edge (a node placed at every position that no readout position depends on: a
    last layer's head at a position the logits do not read)."""
    off = set(edges_off_path(graph)) - kept
    edges = graph.edges(keys=True, data="in_circuit")
    select_edges(graph, [key for *_, key, kept in edges if kept and key not in off])
