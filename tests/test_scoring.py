import numpy as np
import pytest

from circuitx.discovery import overlap_notes, scoring_notes
from circuitx.errors import CircuitxError
from circuitx.graph import component_nodes, full_graph, layout_graph, select_edges, select_nodes
from circuitx.layout import PositionLayout
from circuitx.reference import require_shape
from circuitx.scoring import (
    overlap,
    pessimistic_roc_auc,
    roc_auc,
    roc_curve,
    score_graph,
    selection_metrics,
)


def test_roc_auc_known_values():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
    assert roc_auc(np.array([2.0, 1.0]), np.array([0, 1])) == 0.0
    assert roc_auc(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 1])) == 0.5  # ties count half
    assert roc_auc(np.array([1.0, 2.0]), np.array([1, 1])) is None


def test_roc_auc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc(scores, labels) == pytest.approx(pairwise)


def test_pessimistic_auc_counts_ties_as_misses():
    assert pessimistic_roc_auc(np.array([1.0, 1.0, 1.0]), np.array([0, 1, 1])) == 0.0
    assert pessimistic_roc_auc(np.array([0.0, 1.0, 1.0, 2.0]), np.array([0, 0, 1, 1])) == 0.75
    assert pessimistic_roc_auc(np.array([1.0, 2.0]), np.array([0, 0])) is None
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    strictly = (pos[:, None] > neg[None]).sum() / (len(pos) * len(neg))
    assert pessimistic_roc_auc(scores, labels) == pytest.approx(strictly)
    # the ACDC paper's staircase over the ROC points: each rise in TPR counts the FPR
    # reached after it (acdc/TLACDC pessimistic_auc: sum((1 - fpr)[1:] * diff(tpr)))
    curve = roc_curve(scores, labels)
    fpr, tpr = np.array(curve["fpr"]), np.array(curve["tpr"])
    staircase = ((1 - fpr)[1:] * np.diff(tpr)).sum()
    assert pessimistic_roc_auc(scores, labels) == pytest.approx(staircase)
    assert pessimistic_roc_auc(scores, labels) < roc_auc(scores, labels)


def test_selection_metrics_by_hand():
    precision, recall, f1 = selection_metrics(
        np.array([1, 1, 1, 0, 0], bool), np.array([1, 0, 0, 1, 0], bool)
    )
    assert (precision, recall) == (pytest.approx(1 / 3), pytest.approx(1 / 2))
    assert f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert selection_metrics(np.zeros(3, bool), np.ones(3, bool)) == (None, 0.0, 0.0)
    assert selection_metrics(np.ones(3, bool), np.zeros(3, bool)) == (0.0, None, 0.0)
    assert selection_metrics(np.zeros(3, bool), np.zeros(3, bool)) == (None, None, None)


def hand_graphs():
    """2 layers x 2 heads with MLPs: components a0.h0 a0.h1 m0 a1.h0 a1.h1 m1."""
    reference = full_graph(2, 2, True)
    select_nodes(reference, ["a0.h0", "a1.h1"])
    found = full_graph(2, 2, True)
    select_nodes(found, ["a0.h0", "m0", "a1.h0"])
    scores = {"a0.h0": 0.9, "a0.h1": 0.1, "m0": -0.5, "a1.h0": 0.4, "a1.h1": 0.3, "m1": 0.0}
    for node, value in scores.items():
        found.nodes[node]["score"] = value
    return found, reference


def test_node_metrics_on_a_hand_made_graph():
    found, reference = hand_graphs()
    metrics = score_graph(found, reference)
    assert metrics["node_precision"] == pytest.approx(1 / 3)
    assert metrics["node_recall"] == pytest.approx(1 / 2)
    # |score| ranking: positives 0.9, 0.3; negatives 0.5, 0.4, 0.1, 0.0 -> 1*4 + 0*... = (4 + 2) / 8
    assert metrics["node_auc"] == pytest.approx(6 / 8)
    assert metrics["edge_auc"] is None  # no edge scores: not invented


def test_edge_metrics_on_a_hand_made_graph():
    found, reference = hand_graphs()
    ref_edges = {k for *_, k, d in reference.edges(keys=True, data=True) if d["in_circuit"]}
    got_edges = {k for *_, k, d in found.edges(keys=True, data=True) if d["in_circuit"]}
    # induced edges: both endpoints in {input, logits} + selected components
    assert "a0.h0->a1.h1<q>" in ref_edges and "a0.h0->a1.h0<v>" in got_edges
    metrics = score_graph(found, reference)
    hits = len(ref_edges & got_edges)
    assert metrics["edge_precision"] == pytest.approx(hits / len(got_edges))
    assert metrics["edge_recall"] == pytest.approx(hits / len(ref_edges))


def test_different_shapes_cannot_be_scored():
    with pytest.raises(CircuitxError, match="different model shapes"):
        score_graph(full_graph(2, 2, True), full_graph(2, 3, True))
    # a helper's trial: the shapes were not named
    with pytest.raises(
        CircuitxError, match=r"\(graph: 2 layers x 2 heads; reference: 2 layers x 3 heads\)$"
    ):
        score_graph(full_graph(2, 2, True), full_graph(2, 3, True))
    with pytest.raises(
        CircuitxError, match=r"\(graph: 2 layers x 2 heads, attention-only; reference: 2 layers"
    ):
        score_graph(full_graph(2, 2, False), full_graph(2, 2, True))
    # a helper's trial: a hand-edited reference with a node removed was "different model
    # shapes (5 layers x 4 heads; 5 layers x 4 heads)"
    edited = full_graph(2, 2, True)
    edited.remove_nodes_from(["a0.h1", "m1"])
    with pytest.raises(CircuitxError, match=r"^the reference lacks a0.h1, m1: a reference holds"):
        score_graph(full_graph(2, 2, True), edited)
    assert len(component_nodes(full_graph(2, 3, True))) == 8
    with pytest.raises(CircuitxError, match="needs at least 1 layer x 10 heads; this model"):
        require_shape("ioi", 1, 2, True, [(0, 9)])  # a trial: "1 layers"


def test_edge_sets_that_differ_are_said_how():
    """A helper's trial: a Llama graph scored against a GPT-NeoX one of the same shape (its
    blocks parallel) said only "graph and reference have different edge sets"."""
    sequential, parallel = full_graph(2, 2, True), full_graph(2, 2, True, parallel=True)
    assert score_graph(parallel, sequential)  # the sequential universe narrowed to it
    with pytest.raises(CircuitxError, match="the reference is of a model whose blocks run "):
        score_graph(sequential, parallel)
    edited = full_graph(2, 2, True)
    edited.remove_edge("a0.h0", "m0", "a0.h0->m0")
    with pytest.raises(CircuitxError, match=r"edge sets: the reference lacks a0.h0->m0$"):
        score_graph(full_graph(2, 2, True), edited)
    reference = full_graph(2, 2, True)
    select_edges(reference, ["input->a0.h0<v>", "a0.h0->m0", "m0->logits", "a0.h0->logits"])
    assert scoring_notes(parallel, reference) == [  # a trial's: score dropped it unsaid
        "note: the graph's model runs attention and MLP in parallel (GPT-NeoX, GPT-J): the "
        "reference's circuit edge a0.h0->m0 has no place in it (a layer's heads into its MLP) "
        "and is left out of the scores"
    ]
    # two circuits over positions from prompts of other shapes (a helper's trial: the
    # later keys of one prompt against twelve's, "and 875 more" edges listed)
    one = layout_graph(
        PositionLayout(2, 2, True, positions=("S2", "END", "other"), readout=("END",))
    )
    other = layout_graph(
        PositionLayout(
            2, 2, True, positions=("S2", "END", "other"), readout=("END",),
            later_keys=(("END", "S2"),),
        )
    )  # fmt: skip
    with pytest.raises(CircuitxError, match=r"whose position_later_keys differ .* compare"):
        score_graph(one, other)
    select_edges(reference, ["input->a0.h0<v>", "a0.h0->logits"])
    assert scoring_notes(parallel, reference) == [
        "note: the graph's model runs attention and MLP in parallel (GPT-NeoX, GPT-J) and the "
        "reference's does not: the reference is scored without its edges from a layer's heads "
        "into its MLP, none of them in its circuit"
    ]
    assert scoring_notes(sequential, reference) == []
    assert overlap_notes(sequential, parallel) == [
        "note: graph B's model runs attention and MLP in parallel (GPT-NeoX, GPT-J), so it "
        "has no edge from a layer's heads to its MLP: graph A's such edges have no match there"
    ]


def test_overlap_matches_a_hand_count():
    a, b = full_graph(2, 2, True), full_graph(2, 2, True)
    select_nodes(a, ["a0.h0", "a1.h1", "m0"])
    select_nodes(b, ["a0.h0", "m0", "m1"])
    result = overlap(a, b)
    assert result["heads"] == {
        "a": 2,
        "b": 1,
        "shared": 1,
        "jaccard": 1 / 2,
        "a_in_b": 1 / 2,
        "b_in_a": 1.0,
    }
    assert result["nodes"] == {
        "a": 3,
        "b": 3,
        "shared": 2,
        "jaccard": 2 / 4,
        "a_in_b": 2 / 3,
        "b_in_a": 2 / 3,
    }
    # A's edges among input, a0.h0, a1.h1, m0, logits: input->a0.h0 (q,k,v), input->a1.h1
    # (q,k,v), input->m0, input->logits, a0.h0->a1.h1 (q,k,v), a0.h0->m0, a0.h0->logits,
    # m0->a1.h1 (q,k,v), m0->logits, a1.h1->logits = 18. B's among input, a0.h0, m0, m1,
    # logits: input->a0.h0 (3), input->m0, input->m1, input->logits, a0.h0->m0, a0.h0->m1,
    # a0.h0->logits, m0->m1, m0->logits, m1->logits = 12. Shared: input->a0.h0 (3),
    # input->m0, input->logits, a0.h0->m0, a0.h0->logits, m0->logits = 8.
    assert result["edges"] == {
        "a": 18,
        "b": 12,
        "shared": 8,
        "jaccard": 8 / 22,
        "a_in_b": 8 / 18,
        "b_in_a": 8 / 12,
    }
    empty = full_graph(2, 2, True)
    assert overlap(empty, b)["heads"]["a_in_b"] is None
    shapes = r"different model shapes \(A: \d+ layers x \d+ heads; B: 2 layers x 3 heads\)"
    with pytest.raises(CircuitxError, match=shapes):  # named, as score names them
        overlap(a, full_graph(2, 3, True))


def test_roc_curve_area_is_roc_auc_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 4, 20).astype(float)  # many ties
        labels = rng.random(20) < 0.4
        curve = roc_curve(scores, labels)
        if curve is None:
            assert roc_auc(scores, labels) is None
            continue
        assert curve["fpr"][0] == curve["tpr"][0] == 0.0
        assert curve["fpr"][-1] == curve["tpr"][-1] == 1.0
        assert np.trapezoid(curve["tpr"], curve["fpr"]) == pytest.approx(roc_auc(scores, labels))
    assert roc_curve(np.ones(3), np.zeros(3, bool)) is None


def test_a_parallel_model_is_scored_without_the_edges_it_cannot_have():
    """Pythia's blocks run attention and MLP in parallel: a reference drawn for sequential
    blocks loses its head -> same-layer MLP edges, and only those."""
    found = full_graph(2, 2, True, parallel=True)
    reference = full_graph(2, 2, True)
    kept = {"a0.h1->m0", "a0.h1->m1", "m0->logits", "a0.h1->logits"}
    for *_, key, data in reference.edges(keys=True, data=True):
        data["in_circuit"] = key in kept
    for *_, key, data in found.edges(keys=True, data=True):
        data["in_circuit"] = key in kept
        data["score"] = 1.0 if key in kept else 0.0
    assert reference.number_of_edges() - found.number_of_edges() == 2 * 2  # heads -> m0, m1
    metrics = score_graph(found, reference)
    assert metrics["edge_precision"] == metrics["edge_recall"] == metrics["edge_auc"] == 1.0


def test_a_reference_over_positions_against_a_graph_without_them_says_so():
    positions = PositionLayout(2, 2, True, positions=("S", "END"), readout=("END",))
    reference = layout_graph(positions)
    with pytest.raises(CircuitxError, match="the reference is a circuit over token positions"):
        score_graph(full_graph(2, 2, True), reference)
    with pytest.raises(CircuitxError, match="different model shapes"):
        score_graph(full_graph(2, 2, True), full_graph(3, 2, True))


def test_circuits_over_other_positions_say_so_and_compare_as_components():
    """A helper's trial: a --positions named circuit against a --positions all one was "for
    different model shapes (2 layers x 4 heads; 2 layers x 4 heads)" in compare, and in
    score advice about nodes left out of a reference."""
    named = layout_graph(PositionLayout(2, 2, True, positions=("S", "END"), readout=("END",)))
    every = layout_graph(
        PositionLayout(2, 2, True, positions=("0", "1", "2"), readout=("2",), ordered=True)
    )
    for graph in (named, every):
        graph.nodes["a1.h0@" + ("END" if graph is named else "2")]["in_circuit"] = True
    with pytest.raises(CircuitxError, match="over the token positions S, END and the reference"):
        score_graph(named, every)
    compared = overlap(named, every)
    assert compared["heads"]["shared"] == 1 and compared["heads"]["jaccard"] == 1.0
    assert overlap_notes(named, every) == [
        "note: the circuits are over different token positions: they are compared as their "
        "components"
    ]
