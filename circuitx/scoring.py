"""Scoring a circuit graph against a reference circuit in the same universe.

Node metrics are over the heads and MLPs (input and logits are in every circuit); edge
metrics are over every edge. Precision, recall and F1 judge the selection
(``in_circuit``); ROC AUC judges the ranking by ``|score|``, tied scores counting half,
and ``*_auc_pessimistic`` counting them as misses (the ACDC paper's staircase). A metric
that does not apply (no scores, an empty selection's precision, a reference with one
class only) is None; F1 is 2TP / (2TP + FP + FN), 0 for an empty selection.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np

from circuitx.errors import CircuitxError
from circuitx.graph import (
    collapse_positions,
    component_graph,
    component_nodes,
    edges_by_name,
    parallel_view,
    position_groups,
    shape_of,
    shapes_text,
)

METRIC_NAMES = (
    "node_precision",
    "node_recall",
    "node_f1",
    "node_auc",
    "node_auc_pessimistic",
    "edge_precision",
    "edge_recall",
    "edge_f1",
    "edge_auc",
    "edge_auc_pessimistic",
)


def empty_metrics() -> dict[str, float | None]:
    return {name: None for name in METRIC_NAMES}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half), or None when a class is empty."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(
        np.asarray(scores, float), return_inverse=True, return_counts=True
    )
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0  # 1-based mean rank of each tied group
    ranks = average_rank[inverse]
    u_statistic = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> dict[str, list[float]] | None:
    """ROC points from the highest threshold down (tied scores move together, so the
    trapezoid area under the points is :func:`roc_auc`), or None when a class is empty."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    values, inverse = np.unique(-np.asarray(scores, float), return_inverse=True)
    positives = np.bincount(inverse, weights=labels, minlength=len(values))
    negatives = np.bincount(inverse, weights=~labels, minlength=len(values))
    tpr = np.concatenate([[0.0], np.cumsum(positives) / n_pos])
    fpr = np.concatenate([[0.0], np.cumsum(negatives) / n_neg])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def pessimistic_roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC staircase that takes each tied block's negatives before its
    positives (the ACDC paper's ``pessimistic_auc``): the share of (positive, negative)
    pairs whose positive scores strictly higher. None when a class is empty."""
    curve = roc_curve(scores, labels)
    if curve is None:
        return None
    fpr, tpr = np.asarray(curve["fpr"]), np.asarray(curve["tpr"])
    return float(((1.0 - fpr[1:]) * np.diff(tpr)).sum())  # each rise at the FPR after it


def selection_metrics(selected: np.ndarray, reference: np.ndarray) -> tuple[float | None, ...]:
    """Precision, recall and F1 of a boolean selection against a boolean reference."""
    selected, reference = np.asarray(selected, bool), np.asarray(reference, bool)
    hits = int((selected & reference).sum())
    precision = hits / int(selected.sum()) if selected.any() else None
    recall = hits / int(reference.sum()) if reference.any() else None
    # 2TP / (2TP + FP + FN): 0 for an empty selection of a non-empty reference (as
    # scikit-learn's), so that a seed that kept nothing counts in a mean as a miss
    either = int(selected.sum()) + int(reference.sum())
    f1 = 2 * hits / either if either else None
    return precision, recall, f1


def _columns(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    selected = np.array([bool(r.get("in_circuit")) for r in rows], dtype=bool)
    scores = [r.get("score") for r in rows]
    if any(s is None for s in scores):
        return selected, None
    return selected, np.abs(np.array(scores, dtype=float))


def check_same_model(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph) -> None:
    """A one-line error unless the graph and the reference have the same component nodes,
    saying so where the reference is over token positions and the graph is not."""
    if set(component_nodes(graph)) == set(component_nodes(reference)):
        return
    at, reference_at = position_groups(graph), position_groups(reference)
    if reference_at is not None and at is None:
        raise CircuitxError(
            "the reference is a circuit over token positions and the graph is not: score a "
            "graph found with --positions against it, or use a reference without positions"
        )
    if None not in (at, reference_at) and at != reference_at:
        raise CircuitxError(
            f"the graph is over the token positions {_some(list(at))} and the reference over "
            f"{_some(list(reference_at))}: score them as their components "
            "(--collapse-positions), or against a reference at the graph's"
        )
    try:
        edited = shape_of(graph) == shape_of(reference)  # one shape: the nodes were edited
    except CircuitxError:
        edited = False
    if edited:
        missing = sorted(set(component_nodes(graph)) - set(component_nodes(reference)))
        extra = sorted(set(component_nodes(reference)) - set(component_nodes(graph)))
        said = [f"lacks {_some(missing)}"] if missing else []
        said += [f"has {_some(extra)}, which the graph lacks"] if extra else []
        raise CircuitxError(
            f"the reference {' and '.join(said)}: a reference holds every head and MLP of "
            "the model, its circuit marked in_circuit (leave nodes out of the circuit that "
            "way, not out of the graph)"
        )
    raise CircuitxError(
        "graph and reference are for different model shapes"
        + (
            shapes_text({"graph": graph, "reference": reference})
            or " (their heads and MLPs differ)"
        )
    )


def _edge_sets_differ(
    graph: nx.MultiDiGraph,
    reference: nx.MultiDiGraph,
    edges: dict[str, Any],
    reference_edges: dict[str, Any],
) -> str:
    """Why two graphs of one model shape differ in their edges: one model's blocks run
    attention and MLP in parallel (GPT-NeoX, GPT-J), two circuits over positions come
    from prompts of other shapes, or the edges each lacks."""
    if reference.graph.get("parallel") and not graph.graph.get("parallel"):
        return (
            "the reference is of a model whose blocks run attention and MLP in parallel "
            "(GPT-NeoX, GPT-J; no edge from a layer's heads to its MLP), the graph of one "
            "whose blocks run them in turn"
        )
    universe = ("positions", "position_readout", "position_later_keys")
    differ = [key for key in universe if graph.graph.get(key) != reference.graph.get(key)]
    if position_groups(graph) is not None and differ:
        return (
            f"two circuits over token positions whose {', '.join(differ)} differ (made "
            "from prompts of other shapes: other lengths, other read tokens, or keys "
            "that come after their queries in every prompt, which have no edge); "
            "--collapse-positions scores their components, and `circuitx compare` their "
            "shared edges"
        )
    missing = sorted(set(edges) - set(reference_edges))
    extra = sorted(set(reference_edges) - set(edges))
    said = [f"the reference lacks {_some(missing)}"] if missing else []
    said += [f"has {_some(extra)}, which the graph lacks"] if extra else []
    return " and ".join(said)


def _some(names: list[str]) -> str:
    """The first five names, and how many more."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def _paired_rows(
    graph: nx.MultiDiGraph, reference: nx.MultiDiGraph
) -> dict[str, tuple[list[dict[str, Any]], np.ndarray]]:
    """Per level (node, edge): the graph's rows, and whether the reference holds each."""
    if graph.graph.get("parallel"):  # a reference drawn for sequential blocks loses the
        reference = parallel_view(reference)  # edges a parallel block cannot have
    nodes = component_nodes(graph)
    check_same_model(graph, reference)
    edges, reference_edges = edges_by_name(graph), edges_by_name(reference)
    if set(edges) != set(reference_edges):
        why = _edge_sets_differ(graph, reference, edges, reference_edges)
        raise CircuitxError(f"graph and reference have different edge sets: {why}")
    levels = {
        "node": ([graph.nodes[n] for n in nodes], [reference.nodes[n] for n in nodes]),
        "edge": (list(edges.values()), [reference_edges[name] for name in edges]),
    }
    return {
        level: (rows, np.array([bool(r.get("in_circuit")) for r in truth], dtype=bool))
        for level, (rows, truth) in levels.items()
    }


def score_graph(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph) -> dict[str, float | None]:
    """Node and edge precision, recall, F1 and ROC AUC (ties half, and pessimistic) of
    ``graph`` against ``reference``."""
    metrics = empty_metrics()
    for prefix, (rows, labels) in _paired_rows(graph, reference).items():
        selected, scores = _columns(rows)
        precision, recall, f1 = selection_metrics(selected, labels)
        metrics[f"{prefix}_precision"] = precision
        metrics[f"{prefix}_recall"] = recall
        metrics[f"{prefix}_f1"] = f1
        metrics[f"{prefix}_auc"] = None if scores is None else roc_auc(scores, labels)
        metrics[f"{prefix}_auc_pessimistic"] = (
            None if scores is None else pessimistic_roc_auc(scores, labels)
        )
    return metrics


def one_class_levels(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph) -> dict[str, bool]:
    """The levels (node, edge) at which ``graph`` has scores but has no ROC AUC because
    the reference puts all its items in the circuit (True) or none (False)."""
    found = {}
    for level, (rows, labels) in _paired_rows(graph, reference).items():
        if _columns(rows)[1] is not None and len(labels) and labels.all() == labels.any():
            found[level] = bool(labels.all())
    return found


def roc_curves(
    graph: nx.MultiDiGraph, reference: nx.MultiDiGraph
) -> dict[str, dict[str, list[float]] | None]:
    """Node and edge ROC curves of ``graph``'s |scores| against ``reference`` (None where
    the graph has no scores at that level)."""
    curves = {}
    for level, (rows, labels) in _paired_rows(graph, reference).items():
        _, scores = _columns(rows)
        curves[level] = None if scores is None else roc_curve(scores, labels)
    return curves


OVERLAP_LEVELS = ("heads", "nodes", "edges")


def overlap(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> dict[str, dict[str, float | int | None]]:
    """How far the circuits of two graphs of one model shape agree, for heads, nodes
    (heads and MLPs) and edges: counts in each, shared, Jaccard, and the shares of A's
    circuit found in B's (``a_in_b``) and of B's in A's (``b_in_a``). Transcoder
    feature nodes are left out: they compare as their MLPs; a circuit over token
    positions meets one without them, or over other positions, collapsed to its
    components."""
    a, b = component_graph(a), component_graph(b)
    if position_groups(a) != position_groups(b):  # one without positions, or other ones
        a, b = collapse_positions(a), collapse_positions(b)
    if set(component_nodes(a)) != set(component_nodes(b)):
        raise CircuitxError(
            "the graphs are for different model shapes"
            + (shapes_text({"A": a, "B": b}) or " (their heads and MLPs differ)")
        )
    result = {}
    for level in OVERLAP_LEVELS:
        in_a, in_b = _circuit_items(a, level), _circuit_items(b, level)
        shared, union = len(in_a & in_b), len(in_a | in_b)
        result[level] = {
            "a": len(in_a),
            "b": len(in_b),
            "shared": shared,
            "jaccard": shared / union if union else None,
            "a_in_b": shared / len(in_a) if in_a else None,
            "b_in_a": shared / len(in_b) if in_b else None,
        }
    return result


def _circuit_items(graph: nx.MultiDiGraph, level: str) -> set[str]:
    if level == "edges":
        return {key for _, _, key, on in graph.edges(keys=True, data="in_circuit") if on}
    kinds = ("head",) if level == "heads" else ("head", "mlp")
    return {n for n, d in graph.nodes(data=True) if d["kind"] in kinds and d["in_circuit"]}
