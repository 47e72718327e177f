"""Pictures of circuits: a graph drawn as the model is laid out (SVG, PNG or PDF).

``input`` at the bottom, ``logits`` at the top, one row per layer: its heads in index
order, then its MLP, so a node is in the same place in every drawing of the same model.
Every head and MLP of the model is a faint dot; the circuit's nodes are coloured by their
score (a diverging colormap, signed), its edges drawn with width by |score| and colour
by what they feed (q, k, v, an MLP, the logits). With a reference, the nodes and edges
are coloured by agreement instead: in both, only in the circuit, only in the reference.

Drawn with matplotlib's object API (no pyplot, no system package) and written
atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.graph import INPUT, LOGITS, edges_by_name, shape_of

DRAW_FORMATS = ("svg", "png", "pdf")
INPUT_COLOURS = {
    "q": "#1f77b4",
    "k": "#ff7f0e",
    "v": "#2ca02c",
    "mlp": "#9467bd",
    "logits": "#333333",
}
PLAIN = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
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


def draw(
    graph: nx.MultiDiGraph,
    path: str | Path,
    reference: nx.MultiDiGraph | None = None,
    top: int | None = None,
    every: bool = False,
) -> dict[str, Any]:
    """Draw ``graph`` to ``path`` (its extension picks SVG, PNG or PDF); returns what was
    drawn (node and edge counts, and the note on an empty circuit)."""
    from matplotlib import colormaps, rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fmt = draw_format(path)
    n_layers, n_heads, _ = shape_of(graph)
    places = positions(n_layers, n_heads)
    # edges between nodes of the layout (transcoder features are not placed yet)
    edges = [e for e in chosen_edges(graph, top, every) if e[0] in places and e[1] in places]
    ends = {node for sender, receiver, *_ in edges for node in (sender, receiver)}
    feeds = {_feeds(data, receiver) for _, receiver, _, data in edges}
    nodes = [n for n, d in graph.nodes(data=True) if n in places and (d["in_circuit"] or n in ends)]
    in_reference = _reference_sets(reference)
    figure = Figure(figsize=(max(6.5, 0.8 * (n_heads + 3)), max(4.5, 0.6 * (n_layers + 2))))
    size = 260 if n_heads <= 6 else 170  # node markers, points squared
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.04, 0.08, 0.78, 0.84))
    ax.set_axis_off()
    xs, ys = zip(*(places[n] for n in places if n not in (INPUT, LOGITS)))
    ax.scatter(xs, ys, s=14, color="#dddddd", zorder=1)  # the model, for orientation
    largest = max((abs(e[3]["score"]) for e in edges if e[3]["score"] is not None), default=0.0)
    for sender, receiver, name, data in edges:
        (x0, y0), (x1, y1) = places[sender], places[receiver]
        x1 += RECEIVER_OFFSET.get(data["input"], 0.0)  # q, k and v into one head side by side
        width = 0.6 + 3.4 * (abs(data["score"] or 0.0) / largest if largest else 0.0)
        colour = (
            AGREEMENT["both" if name in in_reference[1] else "circuit only"]
            if reference is not None
            else INPUT_COLOURS[_feeds(data, receiver)]
        )
        ax.plot(
            [x0, x1],
            [y0, y1],
            color=colour,
            linewidth=width,
            alpha=0.7,
            zorder=2,
            solid_capstyle="round",
        )
    scores = [graph.nodes[n]["score"] for n in nodes if graph.nodes[n]["score"] is not None]
    bound = max((abs(s) for s in scores), default=1.0) or 1.0
    cmap, norm = colormaps["RdBu_r"], TwoSlopeNorm(0.0, -bound, bound)
    for node in nodes:
        x, y = places[node]
        score = graph.nodes[node]["score"]
        face = "#ffffff" if score is None else cmap(norm(score))
        edge = (
            AGREEMENT["both" if node in in_reference[0] else "circuit only"]
            if reference is not None
            else "#222222"
        )
        ax.scatter([x], [y], s=size, color=face, edgecolors=edge, linewidths=1.8, zorder=3)
        below = node == INPUT  # the input's name under it, clear of its edges
        ax.annotate(
            _label(node, reference),
            (x, y),
            xytext=(0, -13 if below else 11),
            textcoords="offset points",
            ha="center",
            va="top" if below else "baseline",
            fontsize=7,
            zorder=4,
        )
    missed = (
        [n for n in in_reference[0] if n in places and n not in nodes]
        if reference is not None
        else []
    )
    for node in missed:
        x, y = places[node]
        ax.scatter(
            [x],
            [y],
            s=size,
            facecolors="none",
            edgecolors=AGREEMENT["reference only"],
            linewidths=1.5,
            linestyle="--",
            zorder=3,
        )
        ax.annotate(
            _label(node, reference),
            (x, y),
            xytext=(0, 11),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            color=AGREEMENT["reference only"],
            zorder=4,
        )
    header = {"ha": "center", "fontsize": 7, "color": "#777777", "zorder": 5, "bbox": PLAIN}
    if any(kind == "mlp" for _, kind in graph.nodes(data="kind")):
        ax.annotate("MLP", (n_heads + 0.5, n_layers + 0.62), **header)
    ax.annotate("heads", ((n_heads - 1) / 2, n_layers + 0.62), **header)
    for layer in range(n_layers):
        ax.annotate(
            f"layer {layer}",
            (-0.9, layer + 1.0),
            ha="right",
            va="center",
            fontsize=7,
            color="#777777",
        )
    ax.set_xlim(-2.2, n_heads + 1.5)
    ax.set_ylim(-0.6, n_layers + 1.6)
    meta = graph.graph
    title = " on ".join(str(meta[k]) for k in ("method", "task") if meta.get(k))
    if meta.get("model"):
        title += f" ({meta['model']})"
    figure.suptitle(title or "circuit", fontsize=10)
    note = None
    if not nodes:
        note = "no component is in the circuit"
        ax.annotate(
            note, (0.5, 0.5), xycoords="axes fraction", ha="center", fontsize=10, color="#aa0000"
        )
    caption = (
        f"{len([n for n in nodes if n not in (INPUT, LOGITS)])} nodes, {len(edges)} edges drawn"
    )
    if reference is not None:
        kept = {n for n in nodes if n not in (INPUT, LOGITS)}
        truth = {n for n in in_reference[0] if n not in (INPUT, LOGITS)}
        precision = len(kept & truth) / len(kept) if kept else math.nan
        recall = len(kept & truth) / len(truth) if truth else math.nan
        caption += f"; node precision {precision:.2f}, recall {recall:.2f}"
    figure.text(0.04, 0.02, caption, fontsize=8)
    legend = (
        [Line2D([0], [0], color=c, linewidth=3, label=k) for k, c in AGREEMENT.items()]
        if reference is not None
        else [
            Line2D([0], [0], color=c, linewidth=3, label=f"into {k}")
            for k, c in INPUT_COLOURS.items()
            if k in feeds
        ]
    )
    figure.legend(handles=legend, loc="upper right", fontsize=7, frameon=False)
    colourbar = figure.add_axes((0.86, 0.15, 0.02, 0.6))
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=colourbar).set_label(
        "node score", fontsize=7
    )
    with atomic_open(path, "wb") as handle, rc_context({"svg.fonttype": "none"}):  # SVG text
        figure.savefig(handle, format=fmt, dpi=130)
    return {"nodes": len(nodes), "edges": len(edges), "note": note}


def _feeds(data: dict[str, Any], receiver: str) -> str:
    if data["input"]:
        return data["input"]
    return "logits" if receiver == LOGITS else "mlp"


def _reference_sets(reference: nx.MultiDiGraph | None) -> tuple[set[str], set[str]]:
    if reference is None:
        return set(), set()
    nodes = {n for n, d in reference.nodes(data=True) if d.get("in_circuit")}
    edges = {name for name, d in edges_by_name(reference).items() if d.get("in_circuit")}
    return nodes, edges


def _label(node: str, reference: nx.MultiDiGraph | None) -> str:
    """The node's name, and its role in the reference where the reference gives one."""
    if reference is not None and node in reference:
        role = reference.nodes[node].get("role")
        if role and role not in ("input", "logits", "mlp"):
            return f"{node}\n{role}"
    return node
