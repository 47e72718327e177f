"""Faithfulness of a circuit and MIB's curve (CPR, CMD), on tensors over the layout."""

import numpy as np
import pytest
import torch
from conftest import find

from circuitx.discovery import CURVE_FRACTIONS, faithfulness_report
from circuitx.discovery.faithfulness import EdgeRanking, edge_ranking
from circuitx.graph import component_nodes, full_graph, select_edges, select_nodes
from circuitx.methods import Scores
from circuitx.models import head_output_hook
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task


def kept(graph):
    """The graph's circuit as a boolean vector over its edges (graph order)."""
    return torch.tensor([bool(on) for *_, on in graph.edges(data="in_circuit")])


def _engine_and_graph(model, n_prompts=6):
    task = get_task("ioi")
    engine = PatchingEngine(model, task, task.make_data(model, n_prompts, seed=7))
    return engine, full_graph(model.n_layers, model.n_heads, model.has_mlp)


def test_faithfulness_of_the_full_and_the_empty_circuit(tiny_model):

    engine, graph = _engine_and_graph(tiny_model)
    select_edges(graph, [key for _, _, key in graph.edges(keys=True)])
    assert faithfulness_report(engine, kept(graph), None)["faithfulness"] == pytest.approx(
        1.0, abs=1e-5
    )
    select_edges(graph, [])
    report = faithfulness_report(engine, kept(graph), None)
    assert report["faithfulness"] == pytest.approx(0.0, abs=1e-5)
    assert report["cpr"] is None and report["faithfulness_curve"] is None  # nothing to rank


def test_faithfulness_without_one_head_is_activation_patching(tiny_model):
    """A circuit of every node but a1.h2 against a hand-written patch of that head."""

    engine, graph = _engine_and_graph(tiny_model)
    select_nodes(graph, [n for n in component_nodes(graph) if n != "a1.h2"])
    data, name = engine.data, head_output_hook(1)
    _, corrupted = tiny_model.run_with_cache(data.corrupted, [name])

    def patch(z):
        z = z.clone()
        z[:, :, 2] = corrupted[name][:, :, 2]
        return z

    patched = tiny_model.run(data.clean, [(name, patch)], engine.end)
    m = float(engine.metric(patched).mean())
    expected = (m - engine.corrupted_metric) / (engine.clean_metric - engine.corrupted_metric)
    assert abs(expected - 1.0) > 1e-3  # the head matters
    assert faithfulness_report(engine, kept(graph), None)["faithfulness"] == pytest.approx(
        expected, abs=1e-4
    )


def test_curve_areas_are_trapezoids_of_the_curve(tiny_model):

    graph = find(tiny_model, "ioi", "eap", n_prompts=6)
    curve = graph.graph["faithfulness_curve"]
    assert [point["fraction"] for point in curve] == list(CURVE_FRACTIONS)
    assert curve[-1]["faithfulness"] == pytest.approx(1.0, abs=1e-5)  # every edge
    sizes = [point["edges"] for point in curve]
    assert sizes == sorted(sizes) and sizes[-1] == graph.number_of_edges()
    f = np.array([point["faithfulness"] for point in curve])
    x = np.array(CURVE_FRACTIONS)
    assert graph.graph["cmd"] == pytest.approx(float(np.trapezoid(np.abs(1 - f), x)))
    # CPR's curve ranks the edges by signed score, as MIB's (a trial's: by |score| EAP's
    # CPR on planted IOI read 0.871 where MIB's ranking gives 1.138)
    signed = np.array([point["faithfulness"] for point in graph.graph["cpr_curve"]])
    assert graph.graph["cpr"] == pytest.approx(float(np.trapezoid(signed, x)))
    scores = [d["score"] for *_, d in graph.edges(data=True)]
    assert min(scores) < 0 and not np.allclose(signed, f)  # the two rankings differ here


def test_cpr_ranks_by_signed_score_and_cmd_by_magnitude(tiny_model):
    """The CPR curve's circuits are the top edges by signed score; CMD's by |score|."""
    task = get_task("ioi")
    engine = PatchingEngine(tiny_model, task, task.make_data(tiny_model, 6, seed=7))
    layout = tiny_model.layout
    n_edges = len(layout.edges)
    values = torch.linspace(-1.0, 0.5, n_edges)[torch.randperm(n_edges)]
    edges = torch.zeros(layout.n_senders, layout.n_receivers)
    edges[layout.edge_positions] = values
    scores = Scores.of_edges(edges)
    signed = edge_ranking(layout, scores, signed=True)
    expected = torch.sort(values.double(), descending=True, stable=True).indices
    assert torch.equal(signed.order, expected)
    by_size = edge_ranking(layout, scores)
    expected = torch.sort(values.double().abs(), descending=True, stable=True).indices
    assert torch.equal(by_size.order, expected)
    kept = torch.zeros(n_edges, dtype=torch.bool)
    report = faithfulness_report(engine, kept, by_size, signed)
    alone = faithfulness_report(engine, kept, signed)  # the signed curve by itself
    assert report["cpr"] == pytest.approx(alone["cpr"], abs=1e-5)  # other passes: rounding
    for point, single in zip(report["cpr_curve"], alone["faithfulness_curve"]):
        assert point["edges"] == single["edges"]
        assert point["faithfulness"] == pytest.approx(single["faithfulness"], abs=1e-4)
    assert report["cmd"] == pytest.approx(
        faithfulness_report(engine, kept, by_size)["cmd"], abs=1e-5
    )


@pytest.mark.parametrize("ablation", ["corrupted", "mean"])
def test_each_distinct_circuit_costs_one_masked_pass(tiny_model, ablation):
    """The curve's repeated and empty circuits are measured once (the empty one not at
    all under corrupted ablation) and read the same as each measured by itself."""

    task = get_task("ioi")
    engine = PatchingEngine(
        tiny_model, task, task.make_data(tiny_model, 6, seed=7), ablation=ablation
    )
    layout = tiny_model.layout
    n_edges = len(layout.edges)
    ranking = torch.randperm(n_edges, generator=torch.Generator().manual_seed(0))
    circuit = torch.zeros(n_edges, dtype=torch.bool)
    circuit[ranking[: n_edges // 4]] = True
    untied = EdgeRanking(ranking, torch.arange(n_edges, 0, -1).double())
    measured = []
    real = engine.edge_mask_metrics

    def counting(masks, complement=False):
        measured.extend(masks)
        return real(masks, complement)

    engine.edge_mask_metrics = counting
    report = faithfulness_report(engine, circuit, untied)
    sizes = [int(x * n_edges) for x in CURVE_FRACTIONS]
    circuits = [layout.edge_mask(circuit)]
    circuits += [layout.prune(layout.edge_mask(ranking[:size])) for size in sizes]
    distinct = {tuple(m[layout.valid].bool().tolist()) for m in circuits}
    n_valid = int(layout.valid.sum())
    distinct.discard((True,) * n_valid)  # the clean run
    empty = (False,) * n_valid
    assert empty in distinct  # the smallest sizes prune to nothing here
    if ablation == "corrupted":
        distinct.discard(empty)  # the corrupted run
    else:
        distinct.add(empty)
    assert len(measured) == len(distinct) < len(circuits)
    one_by_one = [float(real(m[None], complement=True)) for m in circuits]
    empty_metric = float(real(torch.zeros_like(circuits[0])[None], complement=True))
    gap = engine.clean_metric - empty_metric
    expected = [(m - empty_metric) / gap for m in one_by_one]
    got = [report["faithfulness"], *(p["faithfulness"] for p in report["faithfulness_curve"])]
    assert got == pytest.approx(expected, abs=1e-4)


def test_tie_span_gives_the_run_of_ties_a_size_cuts():
    ranking = EdgeRanking(torch.arange(7), torch.tensor([5.0, 4, 4, 4, 2, 0, 0]))
    spans = [ranking.tie_span(size) for size in range(8)]
    assert spans == [(0, 0), (1, 1), (1, 4), (1, 4), (4, 4), (5, 5), (5, 7), (7, 7)]
    # a NaN score ties with nothing, and the runs after it are found where they are
    nan = EdgeRanking(torch.arange(6), torch.tensor([torch.nan, torch.nan, 1, 1, 1, 0]))
    assert [nan.tie_span(size) for size in (1, 3, 4)] == [(1, 1), (2, 5), (2, 5)]


def _ties_reversed(ranking):
    """The same ranking with each run of tied edges in the opposite order."""
    order, values = ranking.order.flip(0), ranking.values.flip(0)
    within = torch.sort(values, descending=True, stable=True).indices
    return EdgeRanking(order[within], values[within])


def test_the_order_of_tied_edges_does_not_move_the_curves(tiny_model):
    """Edge scores of three values, most of them 0: the curves read the same whichever
    way the ties are ordered, and a point that cuts a run of ties lies on the line
    between the circuits with none and with all of it."""
    task = get_task("ioi")
    engine = PatchingEngine(tiny_model, task, task.make_data(tiny_model, 6, seed=7))
    layout = tiny_model.layout
    n_edges = len(layout.edges)
    values = torch.zeros(n_edges)
    values[torch.randperm(n_edges, generator=torch.Generator().manual_seed(1))[:12]] = 1.0
    values[::7] = torch.where(values[::7] == 0, -0.5, values[::7])
    edges = torch.zeros(layout.n_senders, layout.n_receivers)
    edges[layout.edge_positions] = values
    scores = Scores.of_edges(edges)
    kept = torch.zeros(n_edges, dtype=torch.bool)
    ranked = [edge_ranking(layout, scores), edge_ranking(layout, scores, signed=True)]
    flipped = [_ties_reversed(ranking) for ranking in ranked]
    assert not torch.equal(flipped[0].order, ranked[0].order)
    report, other = (faithfulness_report(engine, kept, *pair) for pair in (ranked, flipped))
    assert report["cpr"] == pytest.approx(other["cpr"], abs=1e-5)
    assert report["cmd"] == pytest.approx(other["cmd"], abs=1e-5)
    cut = [
        (i, size, *ranked[0].tie_span(size))
        for i, size in enumerate(int(x * n_edges) for x in CURVE_FRACTIONS)
        if ranked[0].tie_span(size) != (size, size)
    ]
    assert cut  # some point cuts a run of ties
    for i, size, low, high in cut:
        ends, counts = [], []
        for end in (low, high):
            circuit = layout.prune(layout.edge_mask(ranked[0].order[:end]))
            circuit = circuit[layout.edge_positions].bool()
            ends.append(faithfulness_report(engine, circuit, None)["faithfulness"])
            counts.append(int(circuit.sum()))
        share = (size - low) / (high - low)
        point = report["faithfulness_curve"][i]["faithfulness"]
        assert point == pytest.approx(ends[0] + share * (ends[1] - ends[0]), abs=1e-4)
        edges = report["faithfulness_curve"][i]["edges"]  # the edge count likewise
        assert edges == pytest.approx(counts[0] + share * (counts[1] - counts[0]))
        assert other["faithfulness_curve"][i]["faithfulness"] == pytest.approx(point, abs=1e-5)
