"""Faithfulness of a circuit, and MIB's curve over circuit sizes (CPR and CMD).

Circuits here are boolean vectors over the layout's edges in graph order
(:attr:`circuitx.layout.Layout.edges`); rankings are index vectors over them.
"""

from __future__ import annotations

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


def edge_scores(layout: Layout, scores: Scores) -> torch.Tensor | None:
    """The edge scores in graph order [n_edges], or None for a node-level method."""
    if scores.edges is None:
        return None
    senders, receivers = layout.edge_positions
    return scores.edges[senders, receivers]


def edge_ranking(layout: Layout, scores: Scores, signed: bool = False) -> torch.Tensor:
    """Edge indices (graph order) by decreasing |score| (``signed``: by decreasing score,
    as MIB ranks edges for CPR), ties in graph order; for a node-level method by the
    smaller |score| of an edge's two ends (the input and the logits rank first), signed
    or not."""
    by_edge = edge_scores(layout, scores)
    if by_edge is not None:
        magnitude = by_edge.double() if signed else by_edge.double().abs()
    else:
        size = scores.nodes.double().abs().clone()
        size[: layout.inputs] = torch.inf  # the input
        size = torch.cat([size, torch.tensor([torch.inf], dtype=size.dtype)])  # the logits
        ends = layout.edge_ends
        magnitude = torch.minimum(size[ends[:, 0]], size[ends[:, 1]])
    return torch.sort(magnitude, descending=True, stable=True).indices


FAITHFULNESS_KEYS = CIRCUIT_MEASURES  # what it reports


def faithfulness_report(
    engine: Engine | PatchingEngine,
    kept: torch.Tensor,
    ranking: torch.Tensor | None,
    signed_ranking: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Faithfulness of the circuit ``kept`` (boolean, graph-order edges) and, given a
    ``ranking``, MIB's curves over circuit sizes.

    f(C) = (m(C) - m(empty)) / (m(full) - m(empty)), where m(C) is the mean metric when
    every edge outside C carries its patch value. A curve takes the top n = int(x E)
    ranked edges for each x in :data:`CURVE_FRACTIONS`, pruned of dangling edges as MIB
    does; CMD is the area of |1 - f| over x along ``ranking`` (by |score|), CPR the
    trapezoid area under f along ``signed_ranking`` (by signed score, as MIB's CPR;
    None: ``ranking``). The circuit's own f uses its edges as selected, unpruned.
    """
    layout = engine.layout
    n_edges = len(layout.edges)
    masks = [layout.edge_mask(kept)]
    rankings = [] if ranking is None else [ranking]
    if signed_ranking is not None and ranking is not None:
        rankings.append(signed_ranking)
    for order in rankings:
        sizes = [int(x * n_edges) for x in CURVE_FRACTIONS]
        masks += [layout.prune(layout.edge_mask(order[:size])) for size in sizes]
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
    metrics = [known[key] for key in keys[:-1]]
    if abs(full - empty) < 1e-9:
        raise CircuitxError("the full and the empty circuit give the same metric; no faithfulness")
    faith = [(m - empty) / (full - empty) for m in metrics]
    report: dict[str, Any] = {**dict.fromkeys(FAITHFULNESS_KEYS), "faithfulness": faith[0]}
    points = len(CURVE_FRACTIONS)
    curves = [
        [
            {"fraction": x, "edges": int(mask.sum()), "faithfulness": f}
            for x, mask, f in zip(
                CURVE_FRACTIONS,
                masks[1 + i * points : 1 + (i + 1) * points],
                faith[1 + i * points : 1 + (i + 1) * points],
            )
        ]
        for i in range(len(rankings))
    ]
    if curves:
        by_size, by_sign = curves[0], curves[-1]
        report["cpr"] = _trapezoid([p["faithfulness"] for p in by_sign], CURVE_FRACTIONS)
        report["cmd"] = _trapezoid([abs(1.0 - p["faithfulness"]) for p in by_size], CURVE_FRACTIONS)
        report["faithfulness_curve"], report["cpr_curve"] = by_size, by_sign
    return report


def _key(layout: Layout, mask: torch.Tensor) -> bytes:
    """Which of the layout's edges a mask [n_senders, n_receivers] keeps."""
    return mask[layout.valid].bool().numpy().tobytes()


def _trapezoid(values: list[float], xs: tuple[float, ...]) -> float:
    return float(
        sum((x1 - x0) * (a + b) / 2 for x0, x1, a, b in zip(xs, xs[1:], values, values[1:]))
    )
