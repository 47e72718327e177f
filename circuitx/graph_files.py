"""Circuit graph files: GraphML, circuitx's JSON, EAP-IG's graph JSON (MIB), auto-circuit's
edge names and DOT, written atomically and read back validated against the model shape
they describe."""

from __future__ import annotations

import io
import json
import math
import mmap
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import networkx as nx
import torch

from circuitx.auto_circuit_graphs import (
    AUTO_CIRCUIT_KEYS,
    from_auto_circuit_dict,
    is_auto_circuit_dict,
    to_auto_circuit_dict,
)
from circuitx.eap_ig_pt import eap_ig_shape, load_pt, to_pt_dict
from circuitx.errors import CircuitxError, listed, quoted
from circuitx.files import (
    atomic_open,
    check_input_file,
    file_suffix,
    load_json,
    plain,
    read_flag,
    read_score,
    scalar,
)
from circuitx.graph import (
    component_graph,
    edges_by_name,
    full_graph,
    layout_of,
    own_node_scores,
    require_components,
    score_nodes_by_edges,
    shape_of,
    shape_text,
    unscored_edges,
)
from circuitx.layout import Layout, PositionLayout
from circuitx.names import INPUT, LOGITS, edge_name, parse_edge_name, parse_node

SCHEMA_KEY = "circuitx_schema"
GRAPH_FORMATS = ("graphml", "json", "dot", "eap-ig", "auto-circuit")


def graph_format(path: str | Path, explicit: str | None = None, flag: str | None = None) -> str:
    """The file format named explicitly or by the path's extension; refused where both
    are given and differ (EAP-IG's graphs are .json). ``flag`` names the explicit one
    (None: the caller has none)."""
    named = suffix_format(path)
    if explicit is not None and explicit not in GRAPH_FORMATS:
        raise CircuitxError(
            f"unknown graph format {explicit!r}; choose from {', '.join(GRAPH_FORMATS)}"
        )
    if explicit is None and named is None:
        raise CircuitxError(
            f"cannot tell the graph format of {str(path)!r}: use .graphml, .json, .dot or "
            "EAP-IG's .pt" + (f", or give {flag}" if flag else "")
        )
    if explicit is None:
        return named
    if named is None and explicit != "dot":  # circuitx reads a graph by its extension
        wanted = {"graphml": ".graphml", "eap-ig": ".json or .pt"}.get(explicit, ".json")
        raise CircuitxError(
            f"{os.fspath(path)}: circuitx reads graphs back by their extension, so give this "
            f"{explicit} graph the extension {wanted}"
        )
    json_too = named == "json" and explicit in ("eap-ig", "auto-circuit")  # both JSON
    if named is not None and named != explicit and not json_too:
        raise CircuitxError(
            f"{os.fspath(path)} names {'an' if named[0] in 'aeiou' else 'a'} {named} file, "
            f"but {flag or 'the format'} is {explicit}"
        )
    return explicit


def suffix_format(path: str | Path) -> str | None:
    """The graph format ``path``'s extension names, or None for another extension (.pt:
    EAP-IG's graph as its ``to_pt`` saves it)."""
    suffix = file_suffix(path)
    aliases = {"graphml": "graphml", "xml": "graphml", "json": "json", "dot": "dot", "gv": "dot"}
    aliases["pt"] = "eap-ig"
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
    fmt = graph_format(path, fmt, "fmt")
    check_graph(graph, f"cannot write {os.fspath(path)}")
    save_graph(graph, path, fmt)


def save_graph(graph: nx.MultiDiGraph, path: str | Path, fmt: str) -> None:
    """Write ``graph`` to ``path`` atomically in format ``fmt``: as text, or for a .pt
    file as EAP-IG's ``to_pt`` saves it."""
    if file_suffix(path) == "pt":
        saved = to_pt_dict(to_eap_ig_dict(graph, needs_d_model=False))
        with atomic_open(path, "wb") as handle:
            torch.save(saved, handle)
        return
    text = graph_to_text(graph, fmt)
    with atomic_open(path) as handle:
        handle.write(text)


def graph_to_text(graph: nx.MultiDiGraph, fmt: str) -> str:
    if fmt == "graphml":  # networkx's lxml writer: GPT-2 small's graph in 0.5 s, not 1.3 s
        buffer = io.BytesIO()
        try:
            nx.write_graphml_lxml(_graphml_ready(graph), buffer)
        except (ValueError, UnicodeEncodeError):  # lxml refuses what XML cannot hold
            raise CircuitxError(
                "a value holds a character XML cannot (a control character, or a name that "
                "is not UTF-8): write the graph as JSON (.json)"
            ) from None
        return buffer.getvalue().decode("utf-8") + "\n"
    if fmt == "json":
        return json.dumps(to_json_dict(graph), indent=1, allow_nan=False) + "\n"
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "eap-ig":
        return json.dumps(to_eap_ig_dict(graph), allow_nan=False) + "\n"
    if fmt == "auto-circuit":
        return json.dumps(to_auto_circuit_dict(graph), indent=1, allow_nan=False) + "\n"
    raise CircuitxError(f"unknown graph format {fmt!r}; choose one of {', '.join(GRAPH_FORMATS)}")


def graph_json(text: str) -> Any:
    """The JSON a graph or reference file holds, refused where it is empty, XML or gives a
    key twice (a trial's GraphML named .json said only "Expecting value")."""
    if not text.strip():
        raise CircuitxError("it is empty")
    if text.lstrip().startswith("<"):
        raise CircuitxError("it holds XML, not JSON (GraphML? name it .graphml)")
    return load_json(text, "a JSON object in it")


def read_graph(path: str | Path) -> nx.MultiDiGraph:
    """Read a circuit graph written by :func:`write_graph` (GraphML or JSON), a graph
    EAP-IG wrote (its JSON or .pt, as MIB takes them) or auto-circuit's edge names."""
    if not isinstance(path, (str, os.PathLike)):
        raise CircuitxError(f"read_graph takes a file path, not {path!r}")
    path = check_input_file(path, "graph file")
    fmt = suffix_format(path)
    if fmt is None:
        raise CircuitxError(
            f"cannot tell the graph format of {str(path)!r}: circuitx reads .graphml, .json "
            "(its own, EAP-IG's or auto-circuit's) and EAP-IG's .pt"
        )
    if fmt == "dot":  # a format we write but do not read back
        raise CircuitxError(
            f"{path} is a dot file; circuitx reads graphs as GraphML, JSON or EAP-IG's .pt"
        )
    try:
        if fmt == "eap-ig":  # a .pt
            graph = from_eap_ig_dict(load_pt(path))
        elif fmt == "graphml":
            graph = _from_graphml(_read_graphml(path))
        else:  # JSON: ours, an EAP-IG (MIB) graph, or auto-circuit's edge names
            data = graph_json(path.read_text())
            if is_eap_ig_dict(data):
                graph = from_eap_ig_dict(data)
            elif is_auto_circuit_dict(data):
                graph = from_auto_circuit_dict(data)
            else:
                graph = from_json_dict(data)
        _check(graph)
    except CircuitxError as error:
        raise CircuitxError(f"malformed graph file {path}: {error}") from None
    except OSError as error:  # the file, not its content (a trial's failing disk: EIO)
        raise CircuitxError(f"cannot read graph file {path}: {error.strerror or error}") from None
    except Exception as error:  # parsers raise many types; report one line
        detail = str(error).strip().splitlines()
        raise CircuitxError(
            f"malformed graph file {path}: {detail[0] if detail else type(error).__name__}"
        ) from None
    return graph


JSON_VERSION = 1  # of the JSON form (to_json_dict)
NODE_ATTRIBUTES = ("kind", "layer", "head", "score", "in_circuit")
EDGE_ATTRIBUTES = ("input", "score", "in_circuit")


def check_graph(graph: nx.MultiDiGraph, what: str) -> None:
    """Refuse (one line, after ``what``) a graph held in memory that its file would not
    pass as: a NaN score or an ``in_circuit`` of "False" would otherwise score or be
    written as something else (a NaN is written as null, no score)."""
    try:
        _check(graph)
    except CircuitxError as error:
        raise CircuitxError(f"{what}: {error}") from None


def check_scores(graph: nx.MultiDiGraph, what: str) -> None:
    """Refuse (after ``what``) a graph with a score that is not a finite number (a model
    that overflowed): its file would hold it as null, no score. Of :func:`check_graph`,
    what a graph discovery made needs, in a pass over the scores alone."""
    _check_each(graph, what, "score", read_score)


def check_flags(graph: nx.MultiDiGraph, what: str) -> None:
    """Refuse (after ``what``) a graph whose nodes or edges mark ``in_circuit`` with other
    than true or false (a reference may hold only its circuit: the rest is not checked)."""

    def read(flag: Any, element: str) -> None:
        if flag is not None:
            read_flag(flag, element, "in_circuit")

    _check_each(graph, what, "in_circuit", read)


def _check_each(
    graph: nx.MultiDiGraph, what: str, attribute: str, read: Callable[[Any, str], Any]
) -> None:
    """``read(value, element)`` of every node's and edge's ``attribute``, its error after
    ``what``."""
    rows = [(f"node {node}", value) for node, value in graph.nodes(data=attribute)]
    rows += [(f"edge {key}", value) for *_, key, value in graph.edges(keys=True, data=attribute)]
    try:
        for element, value in rows:
            read(scalar(value), element)
    except CircuitxError as error:
        raise CircuitxError(f"{what}: {error}") from None


def _check(graph: nx.MultiDiGraph) -> None:
    """Every node and edge carries the schema's attributes, with values of their kind (the
    name of the first that does not, and the attribute), the metadata holds the shape and
    every node is in a model of that shape."""
    if graph.number_of_nodes() == 0:
        raise CircuitxError("graph has no nodes")
    n_layers, n_heads, has_mlp = shape_of(graph)
    if n_layers < 1 or n_heads < 1:
        raise CircuitxError(f"a model of {n_layers} layers x {n_heads} heads has no heads")
    layout = Layout(n_layers, n_heads, has_mlp)
    components = layout.n_senders + 1  # every one, and logits
    if graph.number_of_nodes() < components:
        missing = []
        if components - graph.number_of_nodes() <= 3:  # a node or two taken out: named
            names = [name for name, *_ in layout.nodes] + [LOGITS]
            missing = [name for name in names if name not in graph]
        raise CircuitxError(
            f"its metadata describes a model of {shape_text((n_layers, n_heads, True))}, "
            f"{components} nodes, but it has {graph.number_of_nodes()}"
            + (f" (missing {listed(missing, 3)})" if missing else "")
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
    _check_complete(graph)


def _check_complete(graph: nx.MultiDiGraph) -> None:
    """The graph holds its layout's every node, at its layer and head, and every edge, and
    no other edge between them (transcoder features aside): a file with one missing would
    score as a circuit that never had it."""
    layout = layout_of(graph)
    for name, _, layer, head in layout.nodes:
        data = graph.nodes.get(name)
        if data is None:
            raise CircuitxError(f"node {name} is missing (a graph holds every node of its model)")
        if (data["layer"], data["head"]) != (layer, head):
            raise CircuitxError(
                f"node {name}: layer and head must be {layer} and {head}, not "
                f"{data['layer']} and {data['head']}"
            )
    expected = set(layout.edge_names)
    present = set(edges_by_name(component_graph(graph)))
    missing = [name for name in layout.edge_names if name not in present]
    # over positions, the key groups a query never reads are left out by the metadata
    later = (
        " (over token positions its metadata's position_later_keys names the key groups "
        "that send a query no edge)"
        if isinstance(layout, PositionLayout)
        else ""
    )
    if missing:
        raise CircuitxError(
            f"{len(missing)} of its model's {len(expected)} edges "
            f"{'is' if len(missing) == 1 else 'are'} missing ({listed(missing, 3)}); a graph "
            f"holds every edge of its model{later}"
        )
    extra = sorted(present - expected)
    if extra:
        raise CircuitxError(f"edge {extra[0]} is not an edge of its model{later}")


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
    read_flag(scalar(data["in_circuit"]), element, "in_circuit")  # Python may hold numpy's
    read_score(scalar(data["score"]), element)


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
        as_json = set()  # the keys with a value GraphML cannot hold in one of the rows
        for row in rows:  # one pass over the values (a position graph has 800k edges)
            for key, value in row.items():
                row[key] = value = plain(value)
                if not _encodable(value):
                    as_json.add(key)
        schema[scope] = keys
        schema["json"][scope] = [key for key in keys if key in as_json]
        for row in rows:
            for key in list(row):
                if key in as_json:
                    row[key] = json.dumps(row[key])
                elif row[key] is None:
                    del row[key]
    out = nx.MultiDiGraph()
    out.graph.update(graph_row)
    out.graph[SCHEMA_KEY] = json.dumps(schema)
    for node, row in zip(graph.nodes, node_rows):
        out.add_node(node, **row)
    for (sender, receiver, key), row in zip(graph.edges(keys=True), edge_rows):
        out.add_edge(sender, receiver, key=key, **row)
    return out


GRAPHML_TYPES = {
    "boolean": "true or false",
    "int": "a whole number",
    "long": "a whole number",
    "float": "a number",
    "double": "a number",
}


def _read_graphml(path: Path) -> nx.MultiDiGraph:
    """networkx's reading of a GraphML file, where a value that is not of its key's type
    is named with its node or edge and attribute (networkx names the value alone)."""
    try:
        graph = nx.read_graphml(path, force_multigraph=True)
    except (KeyError, ValueError):
        found = _graphml_value_error(path)
        if found is None:
            raise
        raise CircuitxError(found) from None
    if _element_counts(path) != (graph.number_of_nodes(), graph.number_of_edges()):
        _refuse_repeated_elements(path)  # networkx merged some: which (a second walk)
    return graph


_ELEMENT_START = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(node|edge)[\s/>]")


def _element_counts(path: Path) -> tuple[int, int] | None:
    """How many node and edge elements a GraphML file's text opens: more than networkx's
    graph holds where one is given twice (or where a comment holds the tag: the walk of
    :func:`_refuse_repeated_elements` then finds none), at a byte scan's cost, not a walk's
    (a 140 MB file: 1.5 s, where the walk took 20 s); None where the file cannot be
    mapped (some network file systems): it is walked."""
    counts = {b"node": 0, b"edge": 0}
    try:
        with open(path, "rb") as stream:
            with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as text:
                for found in _ELEMENT_START.finditer(text):
                    counts[found.group(1)] += 1
    except (OSError, ValueError):
        return None
    return counts[b"node"], counts[b"edge"]


def _refuse_repeated_elements(path: Path) -> None:
    """Refuse a GraphML file that gives a node, or an edge of one id between the same two
    nodes, twice (a hand-edited or merged file: networkx keeps the last, silently; it
    numbers the edges it adds per pair of nodes, so ids alone may repeat)."""
    nodes: set[str | None] = set()
    edges: set[tuple[str | None, str | None, str]] = set()
    for _, element in ElementTree.iterparse(path):
        tag = _local(element.tag)
        if tag == "node":
            name = element.get("id")
            if name in nodes:
                raise CircuitxError(f"node {name} is given twice")
            nodes.add(name)
        elif tag == "edge" and element.get("id") is not None:
            key = (element.get("source"), element.get("target"), element.get("id"))
            if key in edges:
                raise CircuitxError(f"edge {key[2]} is given twice")
            edges.add(key)
            element.clear()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]  # without the XML namespace


def _graphml_value_error(path: Path) -> str | None:
    """The first graph, node or edge attribute whose text is not of the type its key
    declares, with where it is, or None."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError):
        return None
    keys = {
        key.get("id"): (key.get("attr.name"), key.get("attr.type", "string"))
        for key in root.iter()
        if _local(key.tag) == "key"
    }
    for element in root.iter():
        kind = _local(element.tag)
        if kind not in ("graph", "node", "edge"):
            continue
        for data in element:
            name, declared = keys.get(data.get("key"), (None, "string"))
            if (
                _local(data.tag) != "data"
                or data.text is None
                or len(data)
                or _parses(data.text, declared)
            ):
                continue
            if kind == "graph":
                where = "the graph's metadata"
            elif kind == "node":
                where = f"node {element.get('id')}"
            else:
                where = f"edge {element.get('id') or element.get('source')}"
                where += "" if element.get("id") else f"->{element.get('target')}"
            return f"{where}: {name} {quoted(data.text)} is not {GRAPHML_TYPES[declared]}"
    return None


def _parses(text: str, declared: str) -> bool:
    """Whether networkx reads ``text`` as a value of GraphML type ``declared``."""
    try:
        if declared == "boolean":
            return text.lower() in ("true", "false", "0", "1")
        if declared in ("int", "long"):
            int(text)
        elif declared in ("float", "double"):
            float(text)
    except ValueError:
        return False
    return True


def _from_graphml(raw: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """Undo :func:`_graphml_ready`: restore None values and JSON-encoded attributes. A
    file without circuitx's schema (written by another tool) is read with the schema's
    node and edge attributes; an edge whose id is no name (networkx numbers the edges it
    adds) is named from its ends and input."""
    schema = json.loads(raw.graph.pop(SCHEMA_KEY, "{}"))
    json_keys = schema.get("json", {})
    attributes = {"graph": [], "node": NODE_ATTRIBUTES, "edge": EDGE_ATTRIBUTES}

    def restore(row: dict[str, Any], scope: str) -> dict[str, Any]:
        out = {key: row.get(key) for key in schema.get(scope, attributes[scope])}
        out.update({k: v for k, v in row.items() if k not in out})
        for key in json_keys.get(scope, []):
            if isinstance(out.get(key), str):
                out[key] = json.loads(out[key])
        return out

    def restore_in_place(row: dict[str, Any], scope: str) -> None:
        restored = restore(row, scope)
        row.clear()
        row.update(restored)

    for key in ("node_default", "edge_default"):  # added by the GraphML reader
        if key not in schema.get("graph", []):
            raw.graph.pop(key, None)

    restore_in_place(raw.graph, "graph")
    for _, row in raw.nodes(data=True):
        restore_in_place(row, "node")
    if raw.is_directed() and all(isinstance(key, str) for *_, key in raw.edges(keys=True)):
        for *_, row in raw.edges(data=True):  # every edge has its id: not copied
            restore_in_place(row, "edge")
        return raw
    graph = nx.MultiDiGraph()
    graph.graph.update(raw.graph)
    graph.add_nodes_from(raw.nodes(data=True))
    for sender, receiver, key, row in raw.edges(keys=True, data=True):
        row = restore(row, "edge")
        if not isinstance(key, str):
            key = edge_name(str(sender), str(receiver), row.get("input"))
        if graph.has_edge(sender, receiver, key):
            raise CircuitxError(f"edge {key} is in the file twice")
        graph.add_edge(sender, receiver, key=key, **row)
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
        "metadata": {k: plain(v) for k, v in graph.graph.items() if k != SCHEMA_KEY},
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
    return {name: {k: plain(row.get(k)) for k in keys} for name, row in rows.items()}


def from_json_dict(data: Any) -> nx.MultiDiGraph:
    if not isinstance(data, dict) or data.get("format") != "circuitx-graph":
        raise CircuitxError(_unread_json_form(data))
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
# graph metadata: the node scores came from an EAP-IG file's own (its ``score`` key)
EAP_IG_NODE_SCORES = "eap_ig_node_scores"
NODE_LEVEL_EDGE_SCORE = 0.0  # what EAP-IG's Graph.from_model sets, and node attribution keeps


def _unread_json_form(data: Any) -> str:
    """Why JSON is read as none of the graph forms, by the form it half has."""
    known = (
        'not a graph of a form circuitx reads: ours ("format": "circuitx-graph"), '
        'EAP-IG\'s ("cfg", "nodes", "edges") or auto-circuit\'s ("scores", "circuit")'
    )
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return (  # a circuit as edge names (auto-circuit's official circuits) has no scores
            "a list of edge names is a circuit, not a scored graph: give it as --reference, "
            "or as compare's B"
        )
    if not isinstance(data, dict):
        return known
    if "format" in data:
        return f'"format" is {data["format"]!r}, not "circuitx-graph"'
    if "classes" in data:
        return (
            "a circuit of head classes is a reference, not a graph: give it as --reference, "
            "or as compare's B"
        )
    # a key only that form has: scores or circuit (auto-circuit's), cfg (EAP-IG's)
    for name, keys, own in (
        ("an auto-circuit", AUTO_CIRCUIT_KEYS, AUTO_CIRCUIT_KEYS),
        ("an EAP-IG", EAP_IG_KEYS, ("cfg",)),
    ):
        if any(key in data for key in own):
            lacking = [repr(key) for key in keys if key not in data]
            return (
                f"{name} graph needs {', '.join(map(repr, keys))}; this has no {listed(lacking, 3)}"
            )
    if "nodes" in data and "links" in data:  # networkx's node_link_data
        return (
            'a networkx node-link graph ("nodes", "links") is not a form circuitx reads: '
            'ours ("format": "circuitx-graph"), EAP-IG\'s or auto-circuit\'s'
        )
    if "nodes" in data or "edges" in data:
        return (
            'a graph of "nodes" and "edges" needs "format": "circuitx-graph" (or EAP-IG\'s "cfg")'
        )
    return known


def is_eap_ig_dict(data: Any) -> bool:
    """Whether parsed JSON is an EAP-IG (MIB) graph: ``cfg``, ``nodes`` and ``edges``."""
    return isinstance(data, dict) and all(key in data for key in EAP_IG_KEYS)


def to_eap_ig_dict(graph: nx.MultiDiGraph, needs_d_model: bool = True) -> dict[str, Any]:
    """The graph as EAP-IG's ``Graph.to_json`` writes it and ``Graph.from_json`` reads it
    (what MIB evaluates): ``cfg`` (with ``d_model``, which ``from_json`` needs and
    ``from_pt`` does not: ``needs_d_model`` False leaves it out when the graph has none),
    each node's membership, and each edge's score and membership. Node scores go where EAP-IG reads
    them (``score``) when they came from an EAP-IG graph that had them, or when they are
    all the graph scores (a node-level method's circuit: its edges then score 0, as
    EAP-IG's node attribution leaves them); otherwise in ``circuitx_score``, which it does
    not read (none where they are the edges', as read from a file that scores edges
    alone): an edge-level EAP-IG graph has none, and a graph loaded with them is a
    node-level one to EAP-IG (MIB's ``--level node`` ranks by them; its ``to_json`` then
    fails). The metadata goes in ``circuitx_metadata``."""
    n_layers, n_heads, has_mlp = shape_of(graph)
    if not has_mlp:
        raise CircuitxError("EAP-IG graphs always have MLPs; this graph's model has none")
    require_components(graph, "EAP-IG graphs")
    d_model = graph.graph.get("d_model")
    has_d_model = isinstance(d_model, int) and not isinstance(d_model, bool)
    if needs_d_model and not has_d_model:
        raise CircuitxError(
            "EAP-IG's from_json needs the model's d_model, which this graph does not record "
            "(auto-circuit files have none, nor EAP-IG's before February 2025, nor graphs "
            "circuitx discovered before recording it): add it (an EAP-IG file's cfg, the "
            "metadata of circuitx's JSON or GraphML, an auto-circuit file's "
            "circuitx_metadata), or write a .pt, which EAP-IG's from_pt reads without it"
        )
    edges = edges_by_name(graph)
    unscored = [name for name, data in edges.items() if data["score"] is None]
    own = own_node_scores(graph)
    node_level = len(unscored) == len(edges) and bool(own)  # scores nodes alone
    if len(unscored) == len(edges) and not node_level:
        raise CircuitxError(  # a node-level graph has its node scores
            f"EAP-IG graphs score every edge, or every node of a node-level graph, and "
            f"{unscored_edges(graph)}"
        )
    if unscored and not node_level:
        raise CircuitxError(
            f"EAP-IG graphs score every edge, and {len(unscored)} of this graph's "
            f"{len(edges)} edges {'has' if len(unscored) == 1 else 'have'} no score "
            f"({listed(unscored, 3)})"
        )
    cfg = {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "parallel_attn_mlp": bool(graph.graph.get("parallel", False)),
        **({"d_model": d_model} if has_d_model else {}),
    }
    nodes = {}
    eap_ig_reads = node_level or graph.graph.get(EAP_IG_NODE_SCORES)
    score_key = "score" if eap_ig_reads else "circuitx_score"
    for name, data in graph.nodes(data=True):
        nodes[name] = {"in_graph": bool(data["in_circuit"])}
        if name in own:
            nodes[name][score_key] = plain(own[name])
    return {
        "cfg": cfg,
        "nodes": nodes,
        "edges": {
            name: {
                "score": NODE_LEVEL_EDGE_SCORE if node_level else plain(data["score"]),
                "in_graph": bool(data["in_circuit"]),
            }
            for name, data in edges.items()
        },
        "circuitx_metadata": {
            k: plain(v) for k, v in graph.graph.items() if k not in (SCHEMA_KEY, EAP_IG_NODE_SCORES)
        },
    }


def eap_ig_node_level_note(graph: nx.MultiDiGraph) -> str | None:
    """What to tell of a node-level circuit written for EAP-IG: MIB ranks it by node."""
    if any(score is not None for *_, score in graph.edges(data="score")):
        return None
    method = graph.graph.get("method") or "this graph"
    return (
        f"note: {method} scores nodes only: EAP-IG reads its node scores, and its edges "
        "score 0 as EAP-IG's node attribution leaves them; evaluate it with MIB's --level node"
    )


def from_eap_ig_dict(data: dict[str, Any]) -> nx.MultiDiGraph:
    """Our graph from an EAP-IG (MIB) graph: its cfg's shape, node and edge membership and
    scores (a node with no score: its strongest outgoing edge's; edges that all score 0
    beside EAP-IG's node scores, a node-level graph's, have none). Nodes are read as EAP-IG
    writes them now ({"in_graph", "score"}) or did before (a bool, with the scores in
    ``node_scores``, as circuitx wrote them). Neuron-level graphs are refused: circuitx
    graphs have heads and MLPs."""
    cfg = data["cfg"]
    n_layers, n_heads, parallel = eap_ig_shape(cfg)
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
    if len(nodes) < components:
        raise CircuitxError(
            f"EAP-IG graph cfg describes a model of {shape_text((n_layers, n_heads, True))}, "
            f"{components} nodes, but the graph has {len(nodes)} (circuitx reads a graph "
            "that lists every node and edge, as EAP-IG's to_json writes it)"
        )
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
        graph.nodes[name]["in_circuit"] = _eap_ig_flag(member, f"node {name!r}")
        for key in ("score", "circuitx_score"):  # EAP-IG's, then ours
            if isinstance(value, dict) and value.get(key) is not None:
                graph.nodes[name]["score"] = read_score(value[key], f"node {name}")
                graph.graph[EAP_IG_NODE_SCORES] = key == "score"
                scored = True
                break
    edges = edges_by_name(graph)
    for name, value in data["edges"].items():
        if name not in edges:
            raise CircuitxError(f"edge {name!r} is not in a {n_layers} x {n_heads} model's graph")
        if not isinstance(value, dict):
            raise CircuitxError(f'edge {name!r}: expected {{"score", "in_graph"}}')
        edges[name]["score"] = read_score(value.get("score"), f"edge {name}")
        edges[name]["in_circuit"] = _eap_ig_flag(value.get("in_graph"), f"edge {name!r}")
    missing = [name for name in edges if name not in data["edges"]]
    if missing:  # EAP-IG's to_json writes every edge
        raise CircuitxError(
            f"{len(missing)} of a {n_layers} x {n_heads} model's {len(edges)} edges "
            f"{'is' if len(missing) == 1 else 'are'} missing ({listed(missing, 3)}); circuitx "
            "reads a graph that lists every node and edge, as EAP-IG's to_json writes it"
        )
    if graph.graph.get(EAP_IG_NODE_SCORES) and all(
        edge["score"] == NODE_LEVEL_EDGE_SCORE for edge in edges.values()
    ):  # a node-level graph (EAP-IG's node attribution, or a node method's export)
        for edge in edges.values():
            edge["score"] = None
    old_scores = data.get("node_scores")  # where circuitx wrote them before
    if isinstance(old_scores, dict):
        scored = True
        for name, score in old_scores.items():
            if name in graph:
                graph.nodes[name]["score"] = read_score(score, f"node {name}")
    if not scored:
        score_nodes_by_edges(graph)
    return graph


def _eap_ig_flag(value: Any, element: str) -> bool:
    """An EAP-IG ``in_graph``: true or false, or 0 or 1, which its ``from_json`` reads as
    well (it sets a boolean tensor with it)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if value is None:
        raise CircuitxError(f"{element} has no in_graph (true or false, or 0 or 1)")
    raise CircuitxError(f"{element}: in_graph must be true or false (or 0 or 1), not {value!r}")


def edge_width(score: float | None, largest: float) -> float:
    """The width of an edge's line by its |score| against the ``largest``: 0.6 to 4.0
    (the DOT export's and the drawings' alike)."""
    return 0.6 + 3.4 * (abs(score or 0.0) / largest if largest else 0.0)


def dot_rows(rows: Iterable[list[str]]) -> list[str]:
    """DOT lines putting each list of nodes on one rank in its order (invisible edges
    along the row keep dot from reordering it)."""
    lines = []
    for members in rows:
        lines.append("  { rank=same; " + " ".join(f'"{m}";' for m in members) + " }")
        lines += [f'  "{a}" -> "{b}" [style=invis];' for a, b in zip(members, members[1:])]
    return lines


def to_dot(graph: nx.MultiDiGraph) -> str:
    """Graphviz DOT of the circuit: in-circuit nodes (with scores), a row per layer in the
    graph's order (heads, then the MLP) under the logits, and in-circuit edges (their q/k/v
    input as a label, their score as an attribute and in the line's width)."""
    lines = ["digraph circuit {", "  rankdir=BT; newrank=true;"]
    lines.append("  node [shape=box, fontname=Helvetica];")
    rows: dict[int, list[str]] = {}
    for node, data in graph.nodes(data=True):
        if data.get("in_circuit") or node in (INPUT, LOGITS):
            score = data.get("score")
            label = node if score is None else f"{node}\\n{score:.3g}"
            lines.append(f'  "{node}" [label="{label}"];')
            if node not in (INPUT, LOGITS) and data.get("layer") is not None:
                rows.setdefault(int(data["layer"]), []).append(node)
    lines += dot_rows(rows.values())  # a row per layer
    kept = [(s, r, d) for s, r, d in graph.edges(data=True) if d.get("in_circuit")]
    largest = max((abs(d.get("score") or 0.0) for *_, d in kept), default=0.0)
    for sender, receiver, data in kept:
        score = data.get("score")
        attributes = [f'label="{data["input"]}"'] if data.get("input") else []
        if score is not None:
            width = edge_width(score, largest)
            # quoted: DOT's numerals have no exponent, and -6.9e-13 ended the file's parse
            attributes += [f'score="{score:.6g}"', f"penwidth={width:.2f}"]
        shown = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f'  "{sender}" -> "{receiver}"{shown};')
    lines.append("}")
    return "\n".join(lines) + "\n"
