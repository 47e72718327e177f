"""Circuit graphs in auto-circuit's edge names: the names, a round trip, a file written
by hand (no metadata: the shape told by the names) and what is refused."""

import json

import pytest
from conftest import assert_one_line_error, run

import circuitx as cx
from circuitx.auto_circuit_graphs import from_auto_circuit_dict, to_auto_circuit_dict
from circuitx.errors import CircuitxError
from circuitx.graph import edges_by_name, full_graph
from circuitx.names import auto_circuit_edge_name, parse_auto_circuit_edge_name, parse_edge_name


@pytest.fixture(scope="module")
def found():
    return cx.discover("planted-ioi", "ioi", "eap", n_prompts=8, faithfulness=False)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("a0.h1->a3.h0<k>", "A0.1->A3.0.K"),
        ("input->a0.h2<q>", "Resid Start->A0.2.Q"),
        ("input->m0", "Resid Start->MLP 0"),
        ("a1.h3->m4", "A1.3->MLP 4"),
        ("m2->logits", "MLP 2->Resid End"),
        ("input->logits", "Resid Start->Resid End"),
    ],
)
def test_edges_are_named_as_auto_circuits_edge_name(ours, theirs):
    assert auto_circuit_edge_name(*parse_edge_name(ours)) == theirs
    assert parse_auto_circuit_edge_name(theirs) == parse_edge_name(ours)


def test_a_graph_comes_back_as_it_went(found, tmp_path):
    path = tmp_path / "ac.json"
    cx.write_graph(found, path, fmt="auto-circuit")
    data = json.loads(path.read_text())
    assert len(data["scores"]) == found.number_of_edges() == len(set(data["scores"]))
    back = cx.read_graph(path)
    before, after = edges_by_name(found), edges_by_name(back)
    assert list(after) == list(before)
    for name, edge in before.items():
        assert after[name]["score"] == pytest.approx(edge["score"], abs=0), name
        assert after[name]["in_circuit"] == edge["in_circuit"], name
    assert dict(back.nodes(data="in_circuit")) == dict(found.nodes(data="in_circuit"))
    assert dict(back.nodes(data="score")) == dict(found.nodes(data="score"))
    assert back.graph["method"] == "eap" and cx.score(back) == cx.score(found)
    # the circuit's edge list is a reference as it stands
    assert cx.score(found, reference=path)["edge_f1"] == 1.0


@pytest.mark.parametrize("parallel", [False, True])
def test_a_file_without_metadata_tells_the_shape_by_its_names(parallel):
    graph = full_graph(3, 2, True, parallel)
    for index, (*_, data) in enumerate(graph.edges(data=True)):
        data["score"] = float(index % 7)
    written = to_auto_circuit_dict(graph)
    written["circuit"] = ["A0.1->A2.0.K"]
    bare = {"scores": written["scores"], "circuit": written["circuit"]}
    read = from_auto_circuit_dict(bare)
    assert (read.graph["n_layers"], read.graph["n_heads"], read.graph["has_mlp"]) == (3, 2, True)
    assert bool(read.graph.get("parallel")) is parallel
    kept = [name for name, data in edges_by_name(read).items() if data["in_circuit"]]
    assert kept == ["a0.h1->a2.h0<k>"] and read.nodes["a2.h0"]["in_circuit"]
    assert read.nodes["a0.h1"]["score"] == max(
        (d["score"] for *_, d in read.out_edges("a0.h1", data=True)), key=abs
    )  # no node scores given: each node's strongest outgoing edge's


def test_what_auto_circuit_cannot_take_is_one_line(found, tmp_path):
    graph = full_graph(2, 2, True)
    with pytest.raises(CircuitxError, match="none of this graph.s edges or nodes has a score"):
        to_auto_circuit_dict(graph)  # no edge scored: a node-level method's graph
    written = to_auto_circuit_dict(found)
    del written["scores"]["A0.1->A3.0.K"]
    with pytest.raises(CircuitxError, match="1 of the model's 761 edges has no score"):
        from_auto_circuit_dict(written)
    unscored = found.copy()
    unscored.edges["input", "m0", "input->m0"]["score"] = None
    with pytest.raises(CircuitxError, match="1 of this graph's 761 edges has none"):
        to_auto_circuit_dict(unscored)  # a trial's: "1 of ... edges have none"
    written = to_auto_circuit_dict(found)
    written["scores"]["A0.1->A3.0.K"] = None
    with pytest.raises(CircuitxError, match="every edge has a score"):
        from_auto_circuit_dict(written)
    written["scores"]["A0.1->A3.0.K"] = float("nan")  # a trial's: it offered null
    with pytest.raises(CircuitxError, match=r"score must be a finite number, not nan"):
        from_auto_circuit_dict(written)
    written = to_auto_circuit_dict(found)
    written["circuit"].append("A0.1->Attn 3")
    with pytest.raises(CircuitxError, match="'Attn 3' is not an auto-circuit node"):
        from_auto_circuit_dict(written)
    written["circuit"][-1] = "A9.9->Resid End"  # a trial's: it said "has no score"
    with pytest.raises(CircuitxError, match="edge 'A9.9->Resid End' is not in a 5 x 4 model"):
        from_auto_circuit_dict(written)
    positions = cx.discover("planted-ioi", "ioi", "eap", n_prompts=4, positions="named",
                            faithfulness=False)  # fmt: skip
    with pytest.raises(CircuitxError, match="collapse them to the components first"):
        to_auto_circuit_dict(positions)
    cx.write_graph(found, tmp_path / "g.json")
    out = tmp_path / "ac.graphml"
    refused = run("export", tmp_path / "g.json", "--format", "auto-circuit", "--out", out)
    assert_one_line_error(refused, "names a graphml file, but --format is auto-circuit")
