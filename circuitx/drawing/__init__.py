"""Pictures of circuits: static drawings (SVG, PNG, PDF, :mod:`.static`) and a
self-contained interactive page (HTML, :mod:`.page`), laid out alike (:mod:`.places`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.drawing.page import write_page
from circuitx.drawing.places import AGREEMENT, DRAW_FORMATS, INPUT_COLOURS, draw_format, positions
from circuitx.drawing.static import draw_static

__all__ = ["AGREEMENT", "DRAW_FORMATS", "INPUT_COLOURS", "draw", "draw_format", "positions"]


def draw(
    graph: nx.MultiDiGraph,
    path: str | Path,
    reference: nx.MultiDiGraph | None = None,
    top: int | None = None,
    every: bool = False,
) -> dict[str, Any]:
    """Draw ``graph`` to ``path``, its extension picking the kind (.svg, .png, .pdf, or
    .html for the interactive page); the circuit's edges, every scored edge (``every``) or
    the ``top`` by |score| (on the page, where its slider starts). Returns what was drawn:
    node and edge counts, and the note on an empty circuit."""
    if draw_format(path) == "html":
        return write_page(graph, path, reference, top, every)
    return draw_static(graph, path, reference, top, every)
