"""Pictures of circuits: static drawings (SVG, PNG, PDF; by matplotlib, :mod:`.static`,
or Graphviz's dot, :mod:`.dot`) and a self-contained interactive page (HTML,
:mod:`.page`), laid out alike (:mod:`.places`)."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.drawing.dot import dot_path, draw_with_dot
from circuitx.drawing.page import write_page
from circuitx.drawing.places import (
    AGREEMENT,
    DRAW_FORMATS,
    INPUT_COLOURS,
    Picture,
    draw_format,
    positions,
)
from circuitx.drawing.static import draw_static
from circuitx.errors import CircuitxError

__all__ = [
    "AGREEMENT",
    "DRAW_ENGINES",
    "DRAW_FORMATS",
    "INPUT_COLOURS",
    "Picture",
    "check_engine",
    "draw",
    "draw_format",
    "positions",
]

DRAW_ENGINES = ("matplotlib", "dot")


def check_engine(engine: str, path: str | Path) -> None:
    """A one-line error where ``engine`` cannot draw ``path`` (before any work)."""
    if engine not in DRAW_ENGINES:
        raise CircuitxError(f"unknown drawing engine {engine!r}: use {', '.join(DRAW_ENGINES)}")
    if engine == "dot":
        if draw_format(path) == "html":
            raise CircuitxError("the .html page is drawn by circuitx itself: leave out --engine")
        dot_path()


def draw(
    graph: nx.MultiDiGraph,
    path: str | Path,
    reference: nx.MultiDiGraph | None = None,
    top: int | None = None,
    every: bool = False,
    engine: str = "matplotlib",
) -> dict[str, Any]:
    """Draw ``graph`` to ``path``, its extension picking the kind (.svg, .png, .pdf, or
    .html for the interactive page); the circuit's edges, every scored edge (``every``) or
    the ``top`` by |score| (on the page, where its slider starts); a static picture by
    matplotlib or (``engine="dot"``) Graphviz. Returns what was drawn: node and edge
    counts, and the note on an empty circuit."""
    if every and top is not None:
        raise CircuitxError("choose --all or --top, not both")
    if top is not None and (isinstance(top, bool) or not isinstance(top, Integral) or top < 1):
        raise CircuitxError(f"--top must be a whole number at least 1, not {top!r}")
    top = None if top is None else int(top)  # a numpy integer, too
    check_engine(engine, path)
    picture = Picture(graph, reference, top, every)
    if draw_format(path) == "html":
        return write_page(picture, path)
    if engine == "dot":
        return draw_with_dot(picture, path)
    return draw_static(picture, path)
