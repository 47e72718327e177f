"""A circuit drawn as the model is laid out (SVG, PNG or PDF; see :mod:`.places`).

Every head and MLP of the model is a faint dot; the circuit's nodes are coloured by their
score (a diverging colormap, signed), its edges drawn with width by |score| and colour
by what they feed (q, k, v, an MLP, the logits). With a reference, the nodes and edges
are coloured by agreement instead: in both, only in the circuit, only in the reference.

Drawn with matplotlib's object API (no pyplot, no system package) and written
atomically.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

from circuitx.drawing.places import (
    AGREEMENT,
    INPUT_COLOURS,
    PANEL_GAP,
    Picture,
    caption_text,
    draw_format,
    drawn_counts,
    edge_bends,
    edge_end,
    edge_points,
    feeds,
    filled_score,
    graph_places,
    label,
    labels_fit,
    missed_edges,
    positions,
    reference_sets,
    role_abbreviations,
    role_of,
    score_scale,
    short_name,
    title,
)
from circuitx.files import atomic_open
from circuitx.graph import LOGITS, parse_node, position_groups, position_labels, shape_of
from circuitx.graph_files import edge_width

AXES_WIDTH = 0.78  # of the figure's width
CHAR_WIDTH = 0.6  # a label's character, in its font size (DejaVu Sans, about)
PLAIN = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}


PNG_DPI = 200  # a slide's width (about 1,700 px); SVG and PDF for print
# a PNG's most pixels: under Pillow's decompression-bomb warning (89,478,485), which a
# picture of 57 position panels at 200 dpi (260 million) was refused by
PNG_MAX_PIXELS = 64_000_000
MANY_MISSED = 100  # more of the reference's missed edges than this are drawn fainter


def draw_static(picture: Picture, path: str | Path) -> dict[str, Any]:
    """Draw the picture to ``path`` (its extension picks SVG, PNG or PDF); returns what was
    drawn (node and edge counts, and the note on an empty circuit)."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fmt = draw_format(path)
    graph, reference = picture.graph, picture.reference
    n_layers, n_heads, has_mlp = shape_of(graph)
    places = graph_places(graph)
    right = max(x for x, _ in places.values())  # the MLP, or its last feature
    edges, chosen, nodes = picture.contents()
    fed = {feeds(data, receiver) for _, receiver, _, data in edges}
    truth = reference_sets(reference)
    groups = position_groups(graph)
    across = 0.55 if groups else 0.8  # inches a column: panels of positions sit closer
    width = max(6.5, across * (right + 2.5))
    # no flatter than 3 to 1: panels of positions drawn 4.8 to 1 ran their edges flat
    height = max(4.5, 0.6 * (n_layers + 2), width / 3 if groups else 0.0)
    figure = Figure(figsize=(width, height))
    size = 260 if n_heads <= 6 else 170  # node markers, points squared
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.04, 0.08, AXES_WIDTH, 0.84))
    ax.set_axis_off()
    model = positions(n_layers, n_heads, groups)
    drawn_kinds = ("head", "mlp") if has_mlp else ("head",)  # no MLP column without MLPs
    xs, ys = zip(*(model[n] for n in model if parse_node(n)[0] in drawn_kinds))
    ax.scatter(xs, ys, s=14, color="#dddddd", zorder=1)  # the model, for orientation
    largest = max((abs(e[3]["score"]) for e in edges if e[3]["score"] is not None), default=0.0)
    segments = [
        (places[sender], edge_end(places[receiver], data["input"]))
        for sender, receiver, _, data in edges
    ]
    # edges bend around the nodes drawn (the circuit's, the reference's it misses), not the
    # faint dots: a bend around a dot landed on another edge, or by a drawn node's label
    shown = {*nodes, *(n for n in truth.nodes if n in places)}
    around = {node: place for node, place in places.items() if node in shown}
    bends = edge_bends(around, segments)
    for (sender, receiver, name, data), (start, end), bend in zip(edges, segments, bends):
        width = edge_width(data["score"], largest)
        colour = (
            AGREEMENT["both" if truth.has_edge(sender, receiver, data) else "circuit only"]
            if reference is not None
            else INPUT_COLOURS[feeds(data, receiver)]
        )
        ax.plot(
            *edge_points(start, end, bend),
            color=colour,
            linewidth=width,
            alpha=0.7,
            zorder=2,
            solid_capstyle="round",
        )
    # roles too wide for a column go by short names, keyed under the picture; nodes at
    # positions by their names in their panel, whose header names the position
    in_panel = groups is not None
    labelled = nodes + ([n for n in truth.nodes if n in places] if reference is not None else [])
    roles = {role for n in labelled if (role := role_of(n, reference)) is not None}
    column = AXES_WIDTH * figure.get_figwidth() * 72 / (right + 3.2)  # points
    texts = {n: label(n, reference, in_panel=in_panel) for n in labelled}
    fits = labels_fit(texts, places, column / (CHAR_WIDTH * 7))
    short = {} if fits else role_abbreviations(roles)
    cmap, norm = score_scale(graph, nodes)
    for node in nodes:
        x, y = places[node]
        score = filled_score(graph, node)
        face = "#ffffff" if score is None else cmap(norm(score))
        edge = (
            AGREEMENT["both" if truth.has_node(node) else "circuit only"]
            if reference is not None
            else "#222222"
        )
        feature = graph.nodes[node]["kind"] == "feature"
        ax.scatter(
            [x],
            [y],
            s=size * (0.4 if feature else 1.0),
            color=face,
            edgecolors=edge,
            linewidths=1.2 if feature else 1.8,
            zorder=3,
        )
        below = graph.nodes[node]["kind"] == "input" or feature  # its name under it
        ax.annotate(
            short_name(label(node, reference, short, in_panel), graph.nodes[node]["kind"]),
            (x, y),
            xytext=(0, -9 if feature else -13 if below else 11),
            textcoords="offset points",
            ha="center",
            va="top" if below else "baseline",
            fontsize=5.5 if feature else 7,
            zorder=4,
            bbox=PLAIN,  # legible over the edges it sits on
        )
    missed = (
        [n for n in truth.nodes if n in places and n not in nodes] if reference is not None else []
    )
    missed_segments = [
        (places[sender], edge_end(places[receiver], head_input))
        for sender, receiver, head_input in missed_edges(picture, truth, edges)
    ]
    # fainter the more there are: a large model's reference hides the circuit otherwise
    faint = 0.8 * min(1.0, (MANY_MISSED / max(1, len(missed_segments))) ** 0.5)
    bent = edge_bends(around, missed_segments)
    for index, ((start, end), bend) in enumerate(zip(missed_segments, bent)):
        ax.plot(
            *edge_points(start, end, bend),
            color=AGREEMENT["reference only"],
            linewidth=1.0,
            linestyle="--",
            alpha=max(0.15, faint),
            zorder=2,
            gid=f"missed-edge-{index}",  # ids are unique in an SVG
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
            label(node, reference, short, in_panel),
            (x, y),
            xytext=(0, 11),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            color=AGREEMENT["reference only"],
            zorder=4,
            bbox=PLAIN,
        )
    header = {
        "ha": "center",
        "va": "center",
        "fontsize": 7,
        "color": "#777777",
        "zorder": 5,
        "bbox": PLAIN,
    }
    panel = n_heads + 1 + PANEL_GAP
    for index, group in enumerate(position_labels(graph) or ("",)):  # 12 (END)
        if any(kind == "mlp" for _, kind in graph.nodes(data="kind")):
            ax.annotate("MLP", (n_heads + 0.5 + index * panel, n_layers + 1.0), **header)
        where = f"heads @{group}" if group else "heads"
        ax.annotate(where, ((n_heads - 1) / 2 + index * panel, n_layers + 1.0), **header)
    if any(kind == "feature" for _, kind in graph.nodes(data="kind")):
        ax.annotate("features", ((n_heads + 1.4 + right) / 2, n_layers + 1.0), **header)
    for layer in range(n_layers):
        ax.annotate(
            f"layer {layer}",
            (-0.9, layer + 1.0),
            ha="right",
            va="center",
            fontsize=7,
            color="#777777",
        )
    ax.set_xlim(-2.2, right + 1.0)
    ax.set_ylim(-0.6, places[LOGITS][1] + 0.6)
    figure.suptitle(title(graph), fontsize=10)
    note = picture.note(nodes)
    if note:  # under the title, clear of the reference's nodes drawn in the panel
        figure.text(0.5, 0.925, note, ha="center", fontsize=9, color="#aa0000")
    caption = caption_text(picture, nodes, edges, chosen, truth if reference is not None else None)
    footer = [(caption, 8, "black")]  # under the picture, each wrapped to the figure's width
    # "; " between them: a tracr component's role names its values with commas
    key = "; ".join(f"{s} {role}" for role, s in sorted(short.items(), key=lambda i: i[1]))
    if any(s != role for role, s in short.items()):  # the short names' key
        footer.append((f"roles: {key}", 7, "#555555"))
    height = 0.015  # of the figure, from its foot up
    for text, points, colour in footer:
        width = int(figure.get_figwidth() * 72 * 0.95 / (points * CHAR_WIDTH))
        lines = textwrap.wrap(text, width)
        figure.text(0.04, height, "\n".join(lines), fontsize=points, color=colour, va="bottom")
        height += (len(lines) * 1.3 * points + 3) / (72 * figure.get_figheight())
    bottom = max(0.08, height + 0.02)  # the panel sits above the footer
    ax.set_position((0.04, bottom, AXES_WIDTH, 0.92 - bottom))
    legend = (
        [  # drawn as they are: the reference's missed edges and nodes dashed
            Line2D(
                [0],
                [0],
                color=c,
                linewidth=1.5 if k == "reference only" else 3,
                label=k,
                linestyle="--" if k == "reference only" else "-",
            )
            for k, c in AGREEMENT.items()
        ]
        if reference is not None
        else [
            Line2D([0], [0], color=c, linewidth=3, label=f"into {k}")
            for k, c in INPUT_COLOURS.items()
            if k in fed
        ]
    )
    figure.legend(handles=legend, loc="upper right", fontsize=7, frameon=False)
    colourbar = figure.add_axes((0.86, 0.15, 0.02, 0.6))
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=colourbar).set_label(
        "node score", fontsize=7
    )
    # SVG text; the same graph gives the same bytes: no date, ids from a fixed salt
    settings = {"svg.fonttype": "none", "svg.hashsalt": "circuitx"}
    undated = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    with atomic_open(path, "wb") as handle, rc_context(settings):
        inches = figure.get_figwidth() * figure.get_figheight()
        dpi = min(PNG_DPI, math.sqrt(PNG_MAX_PIXELS / inches))
        figure.savefig(handle, format=fmt, dpi=dpi, metadata=undated)
    return drawn_counts(nodes, len(edges), note)
