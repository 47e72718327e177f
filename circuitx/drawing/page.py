"""A circuit as one self-contained interactive HTML page.

The page carries every node's and edge's score (not only the selected ones) and draws
them as SVG with plain JavaScript (``page.js``, no library, no network): hover for names
and scores, a slider that re-selects the circuit live by threshold or top k (the rules of
:func:`circuitx.graph.selection_by_score`), a click on a node to see its inputs and
outputs, the reference overlay on and off, and a download of what is drawn as SVG. The
layout is the static drawing's (:mod:`.places`).
"""

from __future__ import annotations

import html
import json
import math
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

import networkx as nx

from circuitx.drawing.places import (
    AGREEMENT,
    INPUT_COLOURS,
    MAX_DRAWN_EDGES,
    PANEL_GAP,
    RECEIVER_OFFSET,
    ROW_BOW,
    Picture,
    component_edge,
    component_of,
    drawn_counts,
    edge_bends,
    edge_end,
    edge_weight,
    empty_note,
    feeds,
    graph_places,
    label,
    level_scores,
    reference_sets,
    role_abbreviations,
    role_of,
    silent_edges,
    title,
)
from circuitx.files import atomic_open
from circuitx.graph import LOGITS, edges_by_name, position_labels, score_level, shape_of
from circuitx.progress import fixed
from circuitx.version import __version__


def page_data(picture: Picture) -> dict[str, Any]:
    """What the page's script reads: the placed nodes and the edges between them, in graph
    order, as columns; how the circuit was selected; the colours."""
    graph, reference, top, every = picture.graph, picture.reference, picture.top, picture.every
    n_layers, n_heads, has_mlp = shape_of(graph)
    places = graph_places(graph)
    groups = position_labels(graph) or ("",)  # 12 (END): a panel's header
    names = [node for node in graph.nodes if node in places]
    index = {node: i for i, node in enumerate(names)}
    truth = reference_sets(reference)
    rows = [
        (key, sender, receiver, data)
        for sender, receiver, key, data in graph.edges(keys=True, data=True)
        if sender in index and receiver in index
    ]
    meta = graph.graph
    level = score_level(graph)
    kinds = dict(graph.nodes(data="kind"))
    # what the slider ranks: the non-zero edge scores, or head and MLP ones
    magnitudes = sorted((abs(score) for score in level_scores(graph) if score), reverse=True)
    threshold = meta.get("threshold")
    mode = "top" if top is not None else "threshold" if every else "circuit"
    top_k = top if top is not None else meta.get("top_k") or 20  # where "top k" starts
    if every:
        threshold = magnitudes[-1] if magnitudes else 0.0
    elif threshold is None and magnitudes:  # a top-k circuit: the threshold that keeps it
        threshold = magnitudes[min(top_k, len(magnitudes)) - 1]
    return {
        "title": title(graph),
        "file_stem": None,
        "level": level,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "has_mlp": has_mlp,
        # each panel's position group ("" without positions) and where its heads start
        "panels": [[group, i * (n_heads + 1 + PANEL_GAP)] for i, group in enumerate(groups)],
        "inputs": [n for n in names if kinds[n] == "input"],  # at every position
        "logits": LOGITS,
        "initial": {
            "mode": mode,
            "threshold": _number(threshold) if threshold is not None else 0.0,
            "top": top_k,
        },
        "has_reference": reference is not None,
        # the reference's heads and MLPs and its edges in the graph: what recall divides by
        "reference_size": {"nodes": len(truth.components()), "edges": len(truth.edges_in(graph))},
        "nodes": {
            "name": names,
            "x": [places[n][0] for n in names],
            "y": [places[n][1] for n in names],
            "score": [_number(graph.nodes[n]["score"]) for n in names],
            "in_circuit": [bool(graph.nodes[n]["in_circuit"]) for n in names],
            "in_reference": [truth.has_node(n) for n in names],
            "role": [role_of(n, reference) for n in names],
            # a node at a position by its name in its panel (the panel names the position)
            "short": [label(n, None, in_panel=groups != ("",)) for n in names],
            "mlp": [_mlp_of(graph, n, index) for n in names],
            "component": [component_of(n) for n in names],  # a feature's MLP
        },
        "edges": {
            "name": [key for key, *_ in rows],
            "sender": [index[s] for _, s, _, _ in rows],
            "receiver": [index[r] for _, _, r, _ in rows],
            "feeds": [feeds(d, r) for _, _, r, d in rows],
            "score": [_number(d["score"]) for *_, d in rows],
            # what orders them for drawing: |score|, or the weaker end's |node score|
            "weight": [_number(edge_weight(graph, (s, r, k, d))) for k, s, r, d in rows],
            "in_circuit": [bool(d["in_circuit"]) for *_, d in rows],
            "in_reference": [truth.has_edge(s, r, d) for _, s, r, d in rows],
            "component": [component_edge(s, r, d) for _, s, r, d in rows],  # a feature's: its MLP's
            # how far each edge's curve bends around the nodes its line would run through
            "bend": edge_bends(
                places, [(places[s], edge_end(places[r], d["input"])) for _, s, r, d in rows]
            ),
        },
        "feeds_colours": INPUT_COLOURS,
        "agreement": AGREEMENT,
        "offsets": RECEIVER_OFFSET,
        "row_bow": ROW_BOW,
        # short names of the roles, for a page whose columns are too narrow for the roles
        "role_short": role_abbreviations({r for n in names if (r := role_of(n, reference))}),
        "max_drawn": MAX_DRAWN_EDGES,
    }


def write_page(picture: Picture, path: str | Path) -> dict[str, Any]:
    """Write the page to ``path`` (atomically); returns what it draws first (node and edge
    counts of the saved circuit, and the note on an empty one)."""
    data = page_data(picture)
    data["file_stem"] = Path(path).stem
    saved = [n for n, kept in zip(data["nodes"]["name"], data["nodes"]["in_circuit"]) if kept]
    note = empty_note(saved)
    summary = _summary(picture.graph, note)
    text = Template(files("circuitx.drawing").joinpath("page.html").read_text()).substitute(
        version=__version__,
        title=html.escape(data["title"]),
        summary=html.escape(summary),
        data=_script_safe(json.dumps(data, allow_nan=False, separators=(",", ":"))),
        script=files("circuitx.drawing").joinpath("page.js").read_text(),
    )
    with atomic_open(path) as handle:
        handle.write(text)
    kept = {k for k, on in zip(data["edges"]["name"], data["edges"]["in_circuit"]) if on}
    edges = len(kept - silent_edges(picture.graph, kept))
    return drawn_counts(saved, edges, note)


def _summary(graph: nx.MultiDiGraph, note: str | None) -> str:
    """One line on how the circuit was found and how faithful it is, where the graph says."""
    meta, parts = graph.graph, []
    if meta.get("n_prompts"):
        parts.append(f"{meta['n_prompts']} prompts")
    if meta.get("threshold") is not None:
        parts.append(f"threshold {meta['threshold']:g}")
    if meta.get("top_k") is not None:
        parts.append(f"top {meta['top_k']}")
    for key in ("faithfulness", "cpr", "cmd"):
        value = meta.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{key} {fixed(value)}")
    edges = edges_by_name(graph).values()
    scored = sum(_number(data.get("score")) is not None for data in edges)
    if scored:
        parts.append(f"{scored} of {len(edges)} edges scored")
    else:  # a node-level method
        nodes = sum(_number(d.get("score")) is not None for _, d in graph.nodes(data=True))
        parts.append(f"{nodes} nodes scored, no edge")
    if note:
        parts.append(note)
    return "; ".join(parts)


def _number(value: Any) -> float | None:
    """A score as strict JSON: None for none or a non-finite one."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mlp_of(graph: nx.MultiDiGraph, node: str, index: dict[str, int]) -> int:
    """A transcoder feature's MLP's index in the page's nodes; -1 for other nodes."""
    return index[node.split(".")[0]] if graph.nodes[node]["kind"] == "feature" else -1


def _script_safe(text: str) -> str:
    """JSON that cannot end the <script> element it sits in (every ``<`` escaped)."""
    return text.replace("<", "\\u003c")
