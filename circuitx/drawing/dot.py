"""A circuit drawn by Graphviz's ``dot`` (``--engine dot``), for those who know circuits as
ACDC's diagrams: the same nodes, colours and widths as the static drawing, one rank per
layer (input at the bottom, logits at the top), laid out by ``dot`` itself. Needs ``dot``
on the PATH; the default engine needs nothing."""

from __future__ import annotations

import html
import io
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from circuitx.drawing.places import (
    AGREEMENT,
    INPUT_COLOURS,
    Picture,
    caption_text,
    draw_format,
    drawn_counts,
    feeds,
    filled_score,
    graph_places,
    missed_edges,
    reference_sets,
    role_of,
    score_scale,
    short_name,
    title,
)
from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.graph import INPUT, LOGITS, edge_name
from circuitx.graph_files import dot_rows, edge_width
from circuitx.progress import announce


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
    caption = caption_text(picture, nodes, edges, chosen, truth if reference is not None else None)
    note = picture.note(nodes)
    texts = [_html(title(graph)), _html(caption)] + ([_coloured(note, "#aa0000")] if note else [])
    fed = {feeds(data, receiver) for _, receiver, _, data in edges}
    texts.append(f'<FONT POINT-SIZE="9">{_key(reference is not None, fed, norm.vmax)}</FONT>')
    roles = [(n, role) for n in graph if n in nodes and (role := role_of(n, reference))]
    if roles:  # under the title: a role does not fit in its circle, and dot places an
        # outside label where it may sit by another node
        named = textwrap.wrap("roles: " + ", ".join(f"{n} {role}" for n, role in roles), 110)
        texts.append(f'<FONT POINT-SIZE="9">{"<BR/>".join(map(_html, named))}</FONT>')
    labels = [short_name(n, graph.nodes[n]["kind"]) for n in graph if n in nodes]
    scored = any(graph.nodes[n]["score"] is not None for n in nodes)
    across = max([len(t) for t in labels] + [6 if scored else 0])  # every circle one size
    lines = [
        "digraph circuit {",
        "  rankdir=BT; newrank=true; nodesep=0.25; ranksep=0.6;",
        f"  label=<{_stacked(texts)}>;",
        "  labelloc=t; fontname=Helvetica; fontsize=12;",
        "  node [shape=circle, style=filled, fontname=Helvetica, fontsize=9, penwidth=1.6, "
        f"fixedsize=true, width={max(0.5, 0.085 * across):.2f}];",
        "  edge [fontname=Helvetica];",
    ]
    missed = [n for n in truth.nodes if n in graph and n not in nodes]
    # a layer whose heads feed its MLP in the picture has the MLP (and its features) on a
    # rank of its own above the heads: on the heads' rank the edge ran flat out of a
    # head's lower right, where its v edges come in (dot draws flat edges with ports apart)
    lifted = {
        graph.nodes[r]["layer"]
        for s, r, *_ in edges
        if graph.nodes[s]["kind"] == "head"
        and graph.nodes[r]["kind"] == "mlp"
        and graph.nodes[s]["layer"] == graph.nodes[r]["layer"]
    }
    rows: dict[tuple[int, bool], list[str]] = {}
    for node in [*nodes, *missed]:
        data = graph.nodes[node]
        above = data["kind"] in ("mlp", "feature") and data["layer"] in lifted
        rows.setdefault((data["layer"], above), []).append(node)
        score, filled = data["score"], filled_score(graph, node)
        unfilled = filled is None or node in missed
        fill = "#ffffff" if unfilled else to_hex(cmap(norm(filled)))
        dark = not unfilled and abs(norm(filled) - 0.5) > 0.3
        ink = "#ffffff" if dark else "#222222"  # a missed node is unfilled: dark ink
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
    inner = {k: row for k, row in rows.items() if INPUT not in row and LOGITS not in row}
    lines += dot_rows(  # a rank per layer (input and logits on their own), heads then MLP
        sorted(members, key=lambda m: places[m][0]) for members in inner.values()
    )
    order = sorted(inner)
    lines += [  # a lifted MLP below the next row up, not beside it
        f'  "{inner[below][0]}" -> "{inner[above][0]}" [style=invis];'
        for below, above in zip(order, order[1:])
        if below[1]
    ]
    largest = max((abs(d["score"]) for *_, d in edges if d["score"] is not None), default=0.0)
    labelled: set[tuple[str, str]] = set()  # a port's edges meet there: one label says it

    def head(receiver: str, head_input: str | None) -> str:
        if not head_input:
            return ""
        port = f", headport={HEAD_PORTS[head_input]}"
        if (receiver, head_input) in labelled:
            return port
        labelled.add((receiver, head_input))
        return f", headlabel={head_input}, {HEAD_LABEL}{port}"

    for sender, receiver, key, data in edges:
        width = edge_width(data["score"], largest)
        kind = feeds(data, receiver)
        colour = INPUT_COLOURS[kind]
        if reference is not None:
            colour = AGREEMENT["both" if truth.has_edge(sender, receiver, data) else "circuit only"]
        lines.append(
            f'  "{sender}" -> "{receiver}" [penwidth={width:.2f}, color="{colour}", '
            f'arrowsize=0.5, tooltip="{_escape(key)}"{head(receiver, data["input"])}];'
        )
    declared = {*nodes, *missed}
    for sender, receiver, head_input in missed_edges(picture, truth, edges):
        if sender in declared and receiver in declared:
            lines.append(
                f'  "{sender}" -> "{receiver}" [style=dashed, penwidth=1, '
                f'color="{AGREEMENT["reference only"]}", arrowsize=0.5, '
                f'tooltip="{_escape(edge_name(sender, receiver, head_input))}: in the reference '
                f'only"{head(receiver, head_input)}];'
            )
    lines.append("}")
    drawn = drawn_counts(nodes, len(edges), note)
    return "\n".join(lines) + "\n", drawn


# q, k or v at an edge's head: clear of the arrowhead and of the others into one head
HEAD_LABEL = "labelfontsize=8, labeldistance=1.6, labelangle=35"
# where q, k and v enter a head (its inputs come from below): side by side, as in the
# static picture, so that one label at each port names every edge that meets there
HEAD_PORTS = {"q": "sw", "k": "s", "v": "se"}
PNG_DPI = 200  # as the static picture's


def _html(text: str) -> str:
    """Text for a Graphviz HTML-like label."""
    return html.escape(text, quote=False)


def _stacked(texts: list[str]) -> str:
    """Lines of a label one above the other, with room between them (lines joined by
    ``<BR/>`` touch: a title's underscores met the next line)."""
    rows = "".join(f"<TR><TD>{text}</TD></TR>" for text in texts)
    return f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="0">{rows}</TABLE>'


def _coloured(text: str, colour: str) -> str:
    return f'<FONT COLOR="{colour}">{_html(text)}</FONT>'


def _key(against_reference: bool, fed: set[str], bound: float) -> str:
    """The picture's key, in its colours: what an edge's colour and width say (by what it
    feeds, or by agreement with the reference) and the node colour scale's ends."""
    if against_reference:
        edges = ", ".join(
            _coloured(k + (" (dashed)" if k == "reference only" else ""), c)
            for k, c in AGREEMENT.items()
        )
    else:
        edges = "into " + ", ".join(_coloured(k, c) for k, c in INPUT_COLOURS.items() if k in fed)
    scale = f"{_coloured(f'{-bound:.3g}', '#2166ac')} to {_coloured(f'+{bound:.3g}', '#b2182b')}"
    return f"edges: {edges}; width |score| · node fill: score, {scale}"


SLOW_DOT_EDGES = 1000  # above these, dot's layout takes minutes: a note says so
DOT_TIMEOUT_S = 600


def draw_with_dot(picture: Picture, path: str | Path) -> dict[str, Any]:
    """Lay out and render the picture with ``dot`` into ``path`` (.svg, .png or .pdf)."""
    program = dot_path()
    source, drawn = dot_source(picture)
    fmt = draw_format(path)
    if drawn["edges"] > SLOW_DOT_EDGES:  # a trial's 2,924 edges took dot 116 s, unsaid
        announce(
            f"note: dot lays out {drawn['edges']} edges, which takes minutes (--engine "
            "matplotlib takes seconds)"
        )
    try:
        result = subprocess.run(
            [program, f"-T{fmt}", *([f"-Gdpi={PNG_DPI}"] if fmt == "png" else [])],
            input=source.encode(),
            capture_output=True,
            timeout=DOT_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise CircuitxError(
            f"dot took more than {DOT_TIMEOUT_S} s to lay out {drawn['edges']} edges: draw "
            "fewer (--top) or use --engine matplotlib"
        ) from None
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise CircuitxError(f"dot failed: {why[0]}")
    picture = result.stdout
    if fmt == "png":  # dot draws at -Gdpi but does not record it: a document would size
        picture = _with_dpi(picture)  # the picture at 72 dpi, 2.8 times too large
    with atomic_open(path, "wb") as handle:
        handle.write(picture)
    return drawn


def _with_dpi(png: bytes) -> bytes:
    """``png`` recording :data:`PNG_DPI` as its resolution (as matplotlib's record theirs)."""
    from PIL import Image

    out = io.BytesIO()
    try:
        Image.open(io.BytesIO(png)).save(out, format="png", dpi=(PNG_DPI, PNG_DPI))
    except Image.DecompressionBombError:  # dot's own picture, too large for Pillow:
        return png  # as dot wrote it (72 dpi recorded)
    return out.getvalue()


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
