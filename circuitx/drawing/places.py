"""Where a circuit's nodes sit and what its edges feed, for every kind of picture.

``input`` at the bottom, ``logits`` at the top, one row per layer: its heads in index
order, then its MLP, so a node is in the same place in every drawing of the same model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from circuitx.errors import CircuitxError
from circuitx.files import file_suffix
from circuitx.graph import (
    INPUT,
    LOGITS,
    component_nodes,
    edge_name,
    edges_by_name,
    ends_of,
    parse_edge_name,
    parse_node,
    position_groups,
    score_level,
    selection_by_score,
    shape_of,
)
from circuitx.names import at_position, head_node, mlp_node, split_position
from circuitx.progress import counted

DRAW_FORMATS = ("svg", "png", "pdf", "html")
MAX_DRAWN_EDGES = 2000  # more is a texture, not a picture (GPT-2 small has 32,491 edges)
FEATURE_STEP = 0.42  # between transcoder features in their MLP's row
PANEL_GAP = 1.5  # between the panels of position groups
LOGITS_LIFT = 0.6  # the logits above the header row of a circuit over positions
EMPTY_NOTE = "no component is in the circuit"
NOTHING_SCORED = (  # --top or --all on a graph whose scores are all 0 or missing
    "nothing has a non-zero score to select (--top and --all choose among the scored edges, "
    "or heads and MLPs of a node-level method); without them the circuit is drawn"
)
INPUT_COLOURS = {
    "q": "#1f77b4",
    "k": "#ff7f0e",
    "v": "#2ca02c",
    "mlp": "#9467bd",
    "logits": "#333333",
}
RECEIVER_OFFSET = {"q": -0.12, "k": 0.0, "v": 0.12}
# a row's own edges (a head into its layer's MLP) curve below the row, so that they do
# not run through the heads between: the control point of their quadratic curve sits
# this far below (the curve dips half as far)
ROW_BOW = 0.7
AGREEMENT = {"both": "#1a9850", "circuit only": "#d73027", "reference only": "#878787"}


# an edge across rows whose straight line passes a node between its ends closer than this
# (in columns) bends: its curve's control point moves sideways by the first of BENDS
# whose curve passes none (the curve moves half as far). A straight m1->m4 read as the
# chain m1->m2->m3->m4.
CLEARANCE = 0.35
BENDS = (0.9, -0.9, 1.8, -1.8)

Point = tuple[float, float]


def edge_bends(places: dict[str, Point], segments: list[tuple[Point, Point]]) -> list[float]:
    """For each edge's (start, end), how far its curve's control point moves sideways: 0
    for an edge within one row (it bows below, see :data:`ROW_BOW`) or one whose straight
    line passes no node of ``places`` between its rows; else the first of :data:`BENDS`
    that passes none, or the one that passes fewest."""
    if not segments:
        return []
    starts, ends = np.array([s for s, _ in segments]), np.array([e for _, e in segments])
    (x0, y0), (x1, y1) = starts.T, ends.T
    rows: dict[float, list[float]] = {}
    for x, y in places.values():
        rows.setdefault(y, []).append(x)
    shifts = np.array((0.0, *BENDS))
    hits = np.zeros((len(segments), len(shifts)), dtype=np.int64)
    for y, xs in rows.items():
        column = np.sort(np.array(xs))
        between = (np.minimum(y0, y1) < y) & (y < np.maximum(y0, y1))
        if not between.any():
            continue
        t = (y - y0[between]) / (y1[between] - y0[between])
        line = x0[between] + t * (x1[between] - x0[between])
        xs_at = line[:, None] + (2 * t * (1 - t))[:, None] * shifts[None, :]
        right = np.clip(np.searchsorted(column, xs_at), 0, len(column) - 1)
        left = np.clip(right - 1, 0, len(column) - 1)
        nearest = np.minimum(abs(column[right] - xs_at), abs(column[left] - xs_at))
        hits[between] += nearest < CLEARANCE
    # the straight line where it passes none, else the first bend that passes fewest
    return [float(shifts[0] if row[0] == 0 else shifts[int(np.argmin(row))]) for row in hits]


def edge_end(place: Point, head_input: str | None) -> Point:
    """Where an edge ends at its receiver's ``place``: q, k and v into one head side by
    side (:data:`RECEIVER_OFFSET`)."""
    return place[0] + RECEIVER_OFFSET.get(head_input or "", 0.0), place[1]


def edge_points(
    start: Point, end: Point, bend: float = 0.0, steps: int = 16
) -> tuple[list[float], list[float]]:
    """The xs and ys an edge is drawn through: a straight line, a quadratic curve whose
    control point is ``bend`` right of the line's middle (see :func:`edge_bends`), or for
    an edge within one row, a quadratic curve below it (see :data:`ROW_BOW`)."""
    (x0, y0), (x1, y1) = start, end
    if y0 != y1 and not bend:
        return [x0, x1], [y0, y1]
    if y0 != y1:
        cx, cy = (x0 + x1) / 2 + bend, (y0 + y1) / 2
    else:
        cx, cy = (x0 + x1) / 2, y0 - ROW_BOW
    ts = [i / steps for i in range(steps + 1)]
    xs = [(1 - t) ** 2 * x0 + 2 * (1 - t) * t * cx + t**2 * x1 for t in ts]
    ys = [(1 - t) ** 2 * y0 + 2 * (1 - t) * t * cy + t**2 * y1 for t in ts]
    return xs, ys


def draw_format(path: str | Path) -> str:
    """The picture format ``path``'s extension names, or a one-line error."""
    suffix = file_suffix(path)
    if suffix not in DRAW_FORMATS:
        kinds = ", ".join("." + kind for kind in DRAW_FORMATS)
        raise CircuitxError(f"cannot tell the picture format of {str(path)!r}: use {kinds}")
    return suffix


def positions(
    n_layers: int, n_heads: int, groups: tuple[str, ...] | None = None
) -> dict[str, tuple[float, float]]:
    """Where each node sits: layer rows bottom to top, heads then the MLP in a row; in a
    circuit over token positions (``groups``), one such panel per position group, left to
    right, under one ``logits``."""
    width = n_heads + 1  # the heads, a gap, the MLP
    places = {INPUT: (width / 2, 0.0), LOGITS: (width / 2, n_layers + 1.0)}
    for layer in range(n_layers):
        for head in range(n_heads):
            places[head_node(layer, head)] = (float(head), layer + 1.0)
        places[mlp_node(layer)] = (n_heads + 0.5, layer + 1.0)
    if not groups:
        return places
    panel = width + PANEL_GAP
    # above the panels' headers: in their row it sat on a header or an MLP's label
    placed = {LOGITS: ((len(groups) * panel - PANEL_GAP) / 2, n_layers + 1.0 + LOGITS_LIFT)}
    for index, group in enumerate(groups):
        for name, (x, y) in places.items():
            if name != LOGITS:
                placed[at_position(name, group)] = (x + index * panel, y)
    return placed


def graph_places(graph: nx.MultiDiGraph) -> dict[str, tuple[float, float]]:
    """:func:`positions` for the graph's model, and its transcoder features (``m{L}.f{i}``,
    ``m{L}.rest``) in a line right of their MLP, in their MLP's row, by index."""
    n_layers, n_heads, _ = shape_of(graph)
    places = positions(n_layers, n_heads, position_groups(graph))
    by_layer: dict[int, list[str]] = {}
    for node, data in graph.nodes(data=True):
        if data["kind"] == "feature":
            by_layer.setdefault(data["layer"], []).append(node)
    for layer, features in by_layer.items():
        for j, name in enumerate(sorted(features, key=_feature_order)):
            places[name] = (n_heads + 1.4 + FEATURE_STEP * j, layer + 1.0)
    return places


def _feature_order(name: str) -> tuple[bool, int]:
    index = name.rsplit(".", 1)[1].lstrip("f")
    return (not index.isdigit(), int(index) if index.isdigit() else 0)


def short_name(node: str, kind: str) -> str:
    """A feature as ``f{i}`` (its row names the MLP), any other node by its name."""
    return node.rsplit(".", 1)[1] if kind == "feature" else node


Edge = tuple[str, str, str, dict[str, Any]]  # sender, receiver, name, attributes


@dataclass(frozen=True)
class Picture:
    """What to draw: a graph, the reference to colour it by agreement with (or None), and
    which edges: the circuit's, every scored one (``every``) or the ``top`` by |score|."""

    graph: nx.MultiDiGraph
    reference: nx.MultiDiGraph | None = None
    top: int | None = None
    every: bool = False

    def contents(self) -> tuple[list[Edge], int, list[str]]:
        """The edges to draw, how many were chosen (see :func:`chosen_edges`), and the
        nodes to draw, in graph order: the circuit's, or those of the ``top`` or
        ``every`` selection (:func:`scored_selection`)."""
        kept, names = self.selection
        edges, chosen = chosen_edges(self.graph, names - silent_edges(self.graph, names))
        nodes = [n for n in self.graph.nodes if n in kept]
        return edges, chosen, nodes

    def silent(self) -> set[str]:
        """The selection's edges left undrawn (:func:`silent_edges`), which still count as
        the circuit's against a reference, as ``score`` counts them."""
        return silent_edges(self.graph, self.selection[1])

    @cached_property
    def selection(self) -> tuple[set[str], set[str]]:
        """(nodes, edge names) of the selection, before :func:`silent_edges` are left out
        (made once: the contents, the caption and the missed edges all read it)."""
        if self.top is None and not self.every:
            kept = {n for n, in_circuit in self.graph.nodes(data="in_circuit") if in_circuit}
            names = {key for *_, key, on in self.graph.edges(keys=True, data="in_circuit") if on}
            return kept, names
        return scored_selection(self.graph, self.top)

    def note(self, nodes: list[str]) -> str | None:
        """The note on a picture of no head, MLP or feature (None when it has one)."""
        if empty_note(nodes) is None:
            return None
        return EMPTY_NOTE if self.top is None and not self.every else NOTHING_SCORED


def empty_note(nodes: list[str]) -> str | None:
    """The note on a picture of no head, MLP or feature (None when it has one)."""
    return None if any(parse_node(n)[0] not in (INPUT, LOGITS) for n in nodes) else EMPTY_NOTE


def score_scale(graph: nx.MultiDiGraph, nodes: list[str]) -> tuple[Any, Any]:
    """The node colours: a diverging colormap and its norm, centred on 0 and symmetric
    about the largest |score| of ``nodes``."""
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    scores = [score for n in nodes if (score := filled_score(graph, n)) is not None]
    bound = max((abs(s) for s in scores), default=1.0) or 1.0
    return colormaps["RdBu_r"], TwoSlopeNorm(0.0, -bound, bound)


def filled_score(graph: nx.MultiDiGraph, node: str) -> float | None:
    """The score a node's fill shows: none for the input and logits, which are in every
    circuit (a file's input may carry its edges' total, which would take the scale)."""
    data = graph.nodes[node]
    return None if data["kind"] in (INPUT, LOGITS) else data["score"]


def scored_selection(graph: nx.MultiDiGraph, top: int | None) -> tuple[set[str], set[str]]:
    """(nodes, edge names) of the ``top`` items with a non-zero |score| at the graph's
    score level (edges, or heads and MLPs for a node-level method), or of every such item
    (None), selected as discovery's ``--top-k`` selects (:func:`selection_by_score`: an
    edge brings its ends, nodes the edges among them). The page's slider ranks the same."""
    nonzero = sum(1 for score in level_scores(graph) if score)
    if not nonzero:
        return ends_of(graph), set()
    return selection_by_score(graph, top_k=nonzero if top is None else min(top, nonzero))


def level_scores(graph: nx.MultiDiGraph) -> list[float | None]:
    """The scores a selection ranks: the edges' (features' edges left out), or the heads'
    and MLPs' for a node-level method."""
    if score_level(graph) == "node":
        return [graph.nodes[n]["score"] for n in component_nodes(graph)]
    kinds = dict(graph.nodes(data="kind"))
    return [
        score
        for sender, receiver, score in graph.edges(data="score")
        if "feature" not in (kinds[sender], kinds[receiver])
    ]


def silent_edges(graph: nx.MultiDiGraph, names: set[str]) -> set[str]:
    """Of a node-level selection's edges (those among its nodes), the ones the method
    scored exactly 0 (CD-T's: no relevance flows there), which are not drawn; a
    transcoder feature's edges follow their component edge and stay."""
    if score_level(graph) != "node":
        return set()
    kinds = dict(graph.nodes(data="kind"))
    return {
        key
        for sender, receiver, key, score in graph.edges(keys=True, data="score")
        if key in names and score == 0 and "feature" not in (kinds[sender], kinds[receiver])
    }


def chosen_edges(graph: nx.MultiDiGraph, names: set[str]) -> tuple[list[Edge], int]:
    """The edges named, to draw, and how many they are. Of more than
    :data:`MAX_DRAWN_EDGES`, the largest by |score| are drawn (edges without scores, as a
    node-level method's, by their weaker end's |node score|)."""
    edges = [edge for edge in graph.edges(keys=True, data=True) if edge[2] in names]
    if len(edges) <= MAX_DRAWN_EDGES:
        return edges, len(edges)
    return sorted(edges, key=lambda edge: -edge_weight(graph, edge))[:MAX_DRAWN_EDGES], len(edges)


def edge_weight(graph: nx.MultiDiGraph, edge: Edge) -> float:
    """|score| of an edge; of one without a score, its weaker end's |node score| (the
    input and logits, which have none, count as strong)."""
    sender, receiver, _, data = edge
    if data["score"] is not None:
        return abs(data["score"])
    ends = [graph.nodes[n]["score"] for n in (sender, receiver)]
    return min((abs(score) for score in ends if score is not None), default=0.0)


def drawn_components(nodes: list[str]) -> set[str]:
    """The heads, MLPs and features among the drawn ``nodes``: what a caption (and the
    discover summary) counts as nodes; input and logits are drawn besides."""
    return {n for n in nodes if parse_node(n)[0] not in (INPUT, LOGITS)}


def drawn_counts(nodes: list[str], edges: int, note: str | None) -> dict[str, Any]:
    """What a drawing returns: the nodes its caption counts (:func:`drawn_components`),
    the ``edges`` drawn and the ``note`` on an empty circuit."""
    return {"nodes": len(drawn_components(nodes)), "edges": edges, "note": note}


def caption_text(
    picture: Picture, nodes: list[str], edges: list[Edge], chosen: int, truth: Truth | None
) -> str:
    """What a picture shows, in a line: which selection (``--top``, ``--all``; else the
    circuit), nodes and edges drawn and, against a reference (``truth``), the heads' and
    MLPs' precision and recall, and the drawn edges' where the reference has edges; a
    transcoder feature counts as its MLP, its edges as the edges between the components
    (as ``score`` counts them)."""
    graph = picture.graph
    kept = drawn_components(nodes)
    text = f"{counted(len(kept), 'node')}, {counted(len(edges), 'edge')}"
    if picture.every or picture.top is not None:  # not the circuit: say so
        selection = "every scored item" if picture.top is None else f"the top {picture.top}"
        text = f"{selection} by |score|, not the saved circuit: {text}"
    unscored = all(score is None for *_, score in graph.edges(data="score"))
    which = (
        f"of {chosen}: those between the strongest nodes"
        if unscored
        else f"the largest of {chosen}"
    )
    text += f" drawn ({which})" if chosen > len(edges) else " drawn"
    silent = picture.silent()
    if silent:
        text += f" ({counted(len(silent), 'edge')} among the nodes scored 0 not drawn)"
    if truth is not None:
        components, reference = {component_of(n) for n in kept}, truth.components()
        text += "; node " + _agreement(len(components & reference), components, reference)
        in_graph = truth.edges_in(graph)
        if in_graph:
            drawn = component_edges(edges) | silent  # the circuit's edges, as score counts
            text += ", edge " + _agreement(len(drawn & truth.edges), drawn, in_graph)
    return text


def component_edges(edges: list[Edge]) -> set[str]:
    """The names of the edges between the components that ``edges`` join."""
    return {component_edge(sender, receiver, data) for sender, receiver, _, data in edges}


def component_edge(sender: str, receiver: str, data: dict[str, Any]) -> str:
    """The name of the edge between the components an edge joins (a feature's, its MLP's)."""
    return edge_name(component_of(sender), component_of(receiver), data["input"])


def _agreement(hits: int, drawn: Any, reference: Any) -> str:
    """``precision P, recall R`` of ``hits`` among ``drawn`` and ``reference`` items."""
    precision = f"{hits / len(drawn):.2f}" if drawn else "-"
    recall = f"{hits / len(reference):.2f}" if reference else "-"
    return f"precision {precision}, recall {recall}"


def title(graph: nx.MultiDiGraph) -> str:
    """``METHOD on TASK (MODEL)``, from what the graph records (the method with its
    settings other than the defaults, ``eap[qk-fix=on]``, where recorded)."""
    meta = graph.graph
    method = meta.get("method_label") or meta.get("method")
    text = " on ".join(str(v) for v in (method, meta.get("task")) if v)
    if meta.get("model"):
        text += f" ({meta['model']})"
    return text or "circuit"


def feeds(data: dict[str, Any], receiver: str) -> str:
    if data["input"]:
        return data["input"]
    return "logits" if receiver == LOGITS else "mlp"


@dataclass(frozen=True)
class Truth:
    """A reference's circuit, asked about a drawing's nodes and edges; a transcoder feature
    is judged as its MLP, an edge with a feature end as the edge between the components."""

    nodes: frozenset[str] = frozenset()
    edges: frozenset[str] = frozenset()

    def has_node(self, node: str) -> bool:
        return component_of(node) in self.nodes

    def has_edge(self, sender: str, receiver: str, data: dict[str, Any]) -> bool:
        return component_edge(sender, receiver, data) in self.edges

    def components(self) -> set[str]:
        """The circuit's heads and MLPs: what node recall divides by."""
        return {n for n in self.nodes if parse_node(n)[0] not in (INPUT, LOGITS)}

    def edges_in(self, graph: nx.MultiDiGraph) -> set[str]:
        """The circuit's edges that ``graph`` has: what edge recall divides by."""
        return set(self.edges & edges_by_name(graph).keys())


def missed_edges(
    picture: Picture, truth: Truth, drawn: list[Edge]
) -> list[tuple[str, str, str | None]]:
    """The reference's edges the picture leaves out, ``(sender, receiver, input)``, in name
    order (drawn dashed, as the missed nodes are): those of the graph that no ``drawn``
    edge is, or stands for (a feature's edge, its MLP's), whatever the picture selects,
    and that the selection does not hold undrawn (:meth:`Picture.silent`)."""
    held = component_edges(drawn) | picture.silent()
    return [parse_edge_name(name) for name in sorted(truth.edges_in(picture.graph) - held)]


def component_of(node: str) -> str:
    """The head or MLP a node is part of: a feature's MLP, any other node itself."""
    return node.split(".")[0] if parse_node(node)[0] == "feature" else node


def reference_sets(reference: nx.MultiDiGraph | None) -> Truth:
    """The reference's circuit (empty without a reference)."""
    if reference is None:
        return Truth()
    nodes = {n for n, d in reference.nodes(data=True) if d.get("in_circuit")}
    edges = {name for name, d in edges_by_name(reference).items() if d.get("in_circuit")}
    return Truth(frozenset(nodes), frozenset(edges))


def role_of(node: str, reference: nx.MultiDiGraph | None) -> str | None:
    """The node's role in the reference, where it gives one other than its kind."""
    if reference is None or node not in reference:
        return None
    role = reference.nodes[node].get("role")
    return str(role) if role and role not in ("input", "logits", "mlp") else None


def role_abbreviations(roles: set[str]) -> dict[str, str]:
    """Short names for roles too long for a column: a role of several words (split at
    spaces, ``_``, ``,`` and ``-``: a tracr value such as ``opp_idx_4``) by their first
    four initials (``backup name mover``: BNM), of one word by its first three letters
    (``induction``: IND); short names that two roles share are numbered (NM1, NM2)."""
    short = {}
    for role in roles:
        words = [w for w in re.split(r"[\s_,-]+", role) if w]
        short[role] = ("".join(w[0] for w in words)[:4] if len(words) > 1 else role[:3]).upper()
    taken = list(short.values())
    shared: dict[str, int] = {}
    for role in sorted(short):
        if taken.count(short[role]) > 1:
            shared[short[role]] = shared.get(short[role], 0) + 1
            short[role] += str(shared[short[role]])
    return short


def labels_fit(texts: dict[str, str], places: dict[str, Point], column: float) -> bool:
    """Whether no two labels (of several lines, each as wide as its longest) of one row
    where either names a role overlap, ``column`` characters to a column."""
    rows: dict[float, list[tuple[float, int, bool]]] = {}
    for node, text in texts.items():
        x, y = places[node]
        lines = text.split("\n")
        rows.setdefault(y, []).append((x, max(map(len, lines)), len(lines) > 1))
    for row in rows.values():
        row.sort()
        for (xa, wa, ra), (xb, wb, rb) in zip(row, row[1:]):
            if (ra or rb) and (wa + wb) / 2 > (xb - xa) * column:
                return False
    return True


def label(
    node: str,
    reference: nx.MultiDiGraph | None,
    roles: dict[str, str] | None = None,
    in_panel: bool = False,
) -> str:
    """The node's name, under its role in the reference where the reference gives one (by
    its short name in ``roles`` where given). ``in_panel``: a node at a position is named
    without it (its panel's header names it), all but the input."""
    role = role_of(node, reference)
    name = node
    if in_panel and not node.startswith(INPUT):
        name = split_position(node)[0]
    if role is None:
        return name
    return f"{(roles or {}).get(role, role)}\n{name}"  # the name by its node, as in the page
