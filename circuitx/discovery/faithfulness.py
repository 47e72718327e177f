"""Faithfulness of a circuit, and MIB's curve over circuit sizes (CPR and CMD).

Circuits here are boolean vectors over the layout's edges in graph order
(:attr:`circuitx.layout.Layout.edges`); rankings are index vectors over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.graph import CIRCUIT_MEASURES
from circuitx.layout import Layout
from circuitx.methods import Scores
from circuitx.patching import PatchingEngine

# Circuit sizes of the MIB faithfulness curve, as fractions of all edges.
CURVE_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# How the curves are drawn, in a leaderboard cell's key: a change here reruns the cells
# a resumed leaderboard would otherwise keep (CPR by signed score since 2026-12-06; ties
# interpolated since 2026-12-07).
CURVE_RULE = "cpr signed, cmd by magnitude, ties interpolated"


def edge_scores(layout: Layout, scores: Scores) -> torch.Tensor | None:
    """The edge scores in graph order [n_edges], or None for a node-level method."""
    if scores.edges is None:
        return None
    senders, receivers = layout.edge_positions
    return scores.edges[senders, receivers]


@dataclass(frozen=True)
class EdgeRanking:
    """Edge indices (graph order) best first, and the value each was ranked by
    (descending; equal values are ties, which a curve does not break)."""

    order: torch.Tensor
    values: torch.Tensor

    def tie_span(self, size: int) -> tuple[int, int]:
        """The sizes ``(low, high)`` around ``size`` at which no tie is cut: ``(size,
        size)`` where the top ``size`` edges end a run of equal values, else the ends
        of the run of ties the top ``size`` cut into."""
        if size in (0, len(self.values)) or self.values[size - 1] != self.values[size]:
            return size, size  # NaN never equals: a NaN score ties with nothing
        run = (self.values == self.values[size]).nonzero().flatten()  # sorted: one block
        return int(run[0]), int(run[-1]) + 1


def edge_ranking(layout: Layout, scores: Scores, signed: bool = False) -> EdgeRanking:
    """The edges by decreasing |score| (``signed``: by decreasing score, as MIB ranks
    edges for CPR), ties in graph order (which the curves do not read); for a node-level
    method by the smaller |score| of an edge's two ends (the input and the logits rank
    first), signed or not."""
    by_edge = edge_scores(layout, scores)
    if by_edge is not None:
        magnitude = by_edge.double() if signed else by_edge.double().abs()
    else:
        size = scores.nodes.double().abs().clone()
        size[: layout.inputs] = torch.inf  # the input
        size = torch.cat([size, torch.tensor([torch.inf], dtype=size.dtype)])  # the logits
        ends = layout.edge_ends
        magnitude = torch.minimum(size[ends[:, 0]], size[ends[:, 1]])
    values, order = torch.sort(magnitude, descending=True, stable=True)
    return EdgeRanking(order, values)


FAITHFULNESS_KEYS = CIRCUIT_MEASURES  # what it reports


def faithfulness_report(
    engine: Engine | PatchingEngine,
    kept: torch.Tensor,
    ranking: EdgeRanking | None,
    signed_ranking: EdgeRanking | None = None,
) -> dict[str, Any]:
    """Faithfulness of the circuit ``kept`` (boolean, graph-order edges) and, given a
    ``ranking``, MIB's curves over circuit sizes.

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), where m(C) is the mean metric when
    every edge outside C carries its patch value. A curve takes the top n = int(x E)
    ranked edges for each x in :data:`CURVE_FRACTIONS`, pruned of dangling edges as MIB
    does; where the n-th and the next edge tie, the point (its faithfulness and its
    count of edges) interpolates linearly between the circuits with none and with all
    of the run of ties (as ROC AUC counts a tie half), so the order of tied edges never
    matters. CMD is the area of |1 - f| over x
    along ``ranking`` (by |score|), CPR the trapezoid area under f along
    ``signed_ranking`` (by signed score, as MIB's CPR; None: ``ranking``). The
    circuit's own f uses its edges as selected, unpruned.
    """
    layout = engine.layout
    n_edges = len(layout.edges)
    masks = [layout.edge_mask(kept)]
    rankings = [] if ranking is None else [ranking]
    if signed_ranking is not None and ranking is not None:
        rankings.append(signed_ranking)
    # each curve point: its size, and the indices (into masks) of the circuits at the
    # ends of its run of ties (one circuit where it cuts none)
    points: list[list[tuple[int, int, int, int, int]]] = []
    for order in rankings:
        points.append([])
        for x in CURVE_FRACTIONS:
            size = int(x * n_edges)
            low, high = order.tie_span(size)
            at = []
            for end in dict.fromkeys((low, high)):
                masks.append(layout.prune(layout.edge_mask(order.order[:end])))
                at.append(len(masks) - 1)
            points[-1].append((size, low, high, at[0], at[-1]))
    # the full circuit is the clean run; the empty one, every receiver reading the patch
    # values, is the corrupted run when those are the corrupted outputs. Every other
    # distinct circuit costs a masked pass: the curve's smallest sizes often prune to
    # nothing, and neighbouring sizes to the same circuit.
    empty_mask = torch.zeros(layout.n_senders, layout.n_receivers)
    known = {_key(layout, layout.valid.float()): engine.clean_metric}
    if engine.ablation == "corrupted":
        known[_key(layout, empty_mask)] = engine.corrupted_metric
    masks.append(empty_mask)
    keys = [_key(layout, mask) for mask in masks]
    todo = {key: mask for key, mask in zip(keys, masks) if key not in known}
    if todo:
        measured = engine.edge_mask_metrics(torch.stack(list(todo.values())), complement=True)
        known.update(zip(todo, measured.tolist()))
    full, empty = engine.clean_metric, known[keys[-1]]
    if abs(full - empty) < 1e-9:
        raise CircuitxError("the full and the empty circuit give the same metric; no faithfulness")
    faith = [(known[key] - empty) / (full - empty) for key in keys[:-1]]
    report: dict[str, Any] = {**dict.fromkeys(FAITHFULNESS_KEYS), "faithfulness": faith[0]}
    curves = [
        [
            {
                "fraction": x,
                "edges": _between(size, low, high, *(int(masks[i].sum()) for i in ends)),
                "faithfulness": _between(size, low, high, *(faith[i] for i in ends)),
            }
            for x, (size, low, high, *ends) in zip(CURVE_FRACTIONS, curve)
        ]
        for curve in points
    ]
    if curves:
        by_size, by_sign = curves[0], curves[-1]
        report["cpr"] = _trapezoid([p["faithfulness"] for p in by_sign], CURVE_FRACTIONS)
        report["cmd"] = _trapezoid([abs(1.0 - p["faithfulness"]) for p in by_size], CURVE_FRACTIONS)
        report["faithfulness_curve"], report["cpr_curve"] = by_size, by_sign
    return report


def _between(size: int, low: int, high: int, at_low: float, at_high: float) -> float:
    """The value at ``size`` on the line from (low, at_low) to (high, at_high)."""
    if high == low:
        return at_low
    return at_low + (size - low) / (high - low) * (at_high - at_low)


def _key(layout: Layout, mask: torch.Tensor) -> bytes:
    """Which of the layout's edges a mask [n_senders, n_receivers] keeps."""
    return mask[layout.valid].bool().numpy().tobytes()


def _trapezoid(values: list[float], xs: tuple[float, ...]) -> float:
    return float(
        sum((x1 - x0) * (a + b) / 2 for x0, x1, a, b in zip(xs, xs[1:], values, values[1:]))
    )
