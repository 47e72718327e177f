"""A circuit drawn by Graphviz's ``dot`` (``--engine dot``), for those who know circuits as
ACDC's diagrams: the same nodes, colours and widths as the static drawing, one rank per
layer (input at the bottom, logits at the top), laid out by ``dot`` itself. Needs ``dot``
on the PATH; the default engine needs nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from circuitx.drawing.places import (
    AGREEMENT,
    INPUT_COLOURS,
    Picture,
    caption_text,
    draw_format,
    feeds,
    graph_places,
    missed_edges,
    reference_sets,
    score_scale,
    short_name,
    title,
)
from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.graph import INPUT, LOGITS, edge_name
from circuitx.graph_files import dot_rows, edge_width


def dot_path() -> str:
    """Where ``dot`` is, or a one-line error."""
    found = shutil.which("dot")
    if found is None:
        raise CircuitxError(
            "--engine dot needs Graphviz's dot on the PATH (e.g. apt-get install graphviz); "
            "the default engine needs nothing"
        )
    return found


def dot_source(picture: Picture) -> tuple[str, dict[str, Any]]:
    """The DOT text of the drawing, and what it draws (as :func:`circuitx.drawing.draw`)."""
    from matplotlib.colors import to_hex

    graph, reference = picture.graph, picture.reference
    edges, chosen, nodes = picture.contents()
    truth = reference_sets(reference)
    cmap, norm = score_scale(graph, nodes)
    caption = caption_text(
        graph, nodes, len(edges), chosen, truth.nodes if reference is not None else None
    )
    lines = [
        "digraph circuit {",
        "  rankdir=BT; newrank=true; nodesep=0.25; ranksep=0.6;",
        f'  label="{_escape(title(graph))}\\n{caption}";',
        "  labelloc=t; fontname=Helvetica; fontsize=12;",
        "  node [shape=circle, style=filled, fontname=Helvetica, fontsize=9, penwidth=1.6];",
    ]
    missed = [n for n in truth.nodes if n in graph and n not in nodes]
    rows: dict[int, list[str]] = {}
    for node in [*nodes, *missed]:
        data = graph.nodes[node]
        rows.setdefault(data["layer"], []).append(node)
        score = data["score"]
        fill = "#ffffff" if score is None or node in missed else to_hex(cmap(norm(score)))
        ink = "#ffffff" if score is not None and abs(norm(score) - 0.5) > 0.3 else "#222222"
        outline = "#222222"
        if reference is not None:
            agreement = "both" if truth.has_node(node) else "circuit only"
            outline = AGREEMENT["reference only" if node in missed else agreement]
        style = "dashed" if node in missed else "filled"
        size = "width=0.3, fixedsize=true, fontsize=7, " if data["kind"] == "feature" else ""
        name = short_name(node, data["kind"])
        score_text = "" if score is None else f"\\n{score:.3g}"
        lines.append(
            f'  "{node}" [label="{_escape(name)}{score_text}", {size}fillcolor="{fill}", '
            f'color="{outline}", fontcolor="{ink}", style={style}, tooltip="{_escape(node)}"];'
        )
    places = graph_places(graph)
    lines += dot_rows(  # a rank per layer (input and logits on their own), heads then MLP
        sorted(members, key=lambda m: places[m][0])
        for members in rows.values()
        if INPUT not in members and LOGITS not in members
    )
    largest = max((abs(d["score"]) for *_, d in edges if d["score"] is not None), default=0.0)
    for sender, receiver, key, data in edges:
        width = edge_width(data["score"], largest)
        kind = feeds(data, receiver)
        colour = INPUT_COLOURS[kind]
        if reference is not None:
            colour = AGREEMENT["both" if truth.has_edge(sender, receiver, data) else "circuit only"]
        head = f', headlabel="{kind}", labelfontsize=7' if data["input"] else ""
        lines.append(
            f'  "{sender}" -> "{receiver}" [penwidth={width:.2f}, color="{colour}", '
            f'arrowsize=0.5, tooltip="{_escape(key)}"{head}];'
        )
    declared = {*nodes, *missed}
    for sender, receiver, head_input in missed_edges(graph, truth):
        if sender in declared and receiver in declared:
            head = f', headlabel="{head_input}", labelfontsize=7' if head_input else ""
            lines.append(
                f'  "{sender}" -> "{receiver}" [style=dashed, penwidth=1, '
                f'color="{AGREEMENT["reference only"]}", arrowsize=0.5, '
                f'tooltip="{_escape(edge_name(sender, receiver, head_input))}: in the reference '
                f'only"{head}];'
            )
    lines.append("}")
    drawn = {"nodes": len(nodes), "edges": len(edges), "note": picture.note(nodes)}
    return "\n".join(lines) + "\n", drawn


def draw_with_dot(picture: Picture, path: str | Path) -> dict[str, Any]:
    """Lay out and render the picture with ``dot`` into ``path`` (.svg, .png or .pdf)."""
    program = dot_path()
    source, drawn = dot_source(picture)
    fmt = draw_format(path)
    result = subprocess.run(
        [program, f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=300
    )
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise CircuitxError(f"dot failed: {why[0]}")
    with atomic_open(path, "wb") as handle:
        handle.write(result.stdout)
    return drawn


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
