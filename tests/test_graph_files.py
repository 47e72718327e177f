import json
import math
import re
import subprocess

import networkx as nx
import numpy as np
import pytest
import torch

from circuitx import graph_files
from circuitx.errors import CircuitxError
from circuitx.graph import edges_by_name, full_graph, select_nodes
from circuitx.graph_files import read_graph, to_dot, write_graph


def scored_graph() -> nx.MultiDiGraph:
    graph = full_graph(
        3, 2, True, task="ioi", method="test", seed=7, runtime_s=1.5, extra=None, tags=["a", "b"]
    )
    rng = np.random.default_rng(0)
    for node, data in graph.nodes(data=True):
        if data["kind"] in ("head", "mlp"):
            data["score"] = float(rng.normal())
    for i, (_, _, data) in enumerate(graph.edges(data=True)):
        data["score"] = None if i % 5 == 0 else float(rng.normal())
    select_nodes(graph, ["a0.h1", "m1", "a2.h0"])
    graph.nodes["a0.h1"]["in_circuit"] = np.bool_(True)
    graph.nodes["a0.h1"]["notes"] = {"why": [1, 2]}
    return graph


def assert_same_graph(a: nx.MultiDiGraph, b: nx.MultiDiGraph) -> None:
    assert list(a.nodes) == list(b.nodes)
    assert dict(a.nodes(data=True)) == dict(b.nodes(data=True))
    assert edges_by_name(a) == edges_by_name(b)
    assert {k: v for k, v in a.graph.items()} == {k: v for k, v in b.graph.items()}


@pytest.mark.parametrize("suffix", ["graphml", "json"])
def test_round_trip_is_lossless(tmp_path, suffix):
    graph = scored_graph()
    path = tmp_path / f"g.{suffix}"
    write_graph(graph, path)
    back = read_graph(path)
    expected = scored_graph()
    expected.nodes["a0.h1"]["in_circuit"] = True
    # every node gains the attribute keys any node has, as None
    for _, data in expected.nodes(data=True):
        data.setdefault("notes", None)
    assert_same_graph(back, expected)
    assert isinstance(back.nodes["a0.h1"]["in_circuit"], bool)
    assert back.graph["tags"] == ["a", "b"] and back.graph["extra"] is None


def test_plain_networkx_reads_the_graphml_scores(tmp_path):
    graph = scored_graph()
    write_graph(graph, tmp_path / "g.graphml")
    raw = nx.read_graphml(tmp_path / "g.graphml")
    assert set(raw.nodes) == set(graph.nodes)
    assert raw.number_of_edges() == graph.number_of_edges()
    for node, data in graph.nodes(data=True):
        assert raw.nodes[node].get("score") == data["score"]
    raw_edges = {key: d for _, _, key, d in raw.edges(keys=True, data=True)}
    assert set(raw_edges) == set(edges_by_name(graph))
    for key, data in edges_by_name(graph).items():
        assert raw_edges[key].get("score") == data["score"]


def test_json_uses_mib_edge_names(tmp_path):
    write_graph(scored_graph(), tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert "a0.h1->a2.h0<q>" in data["edges"] and data["metadata"]["task"] == "ioi"
    assert data["edges"]["a0.h1->a2.h0<q>"]["in_circuit"] is True


@pytest.mark.parametrize(
    "name, text",
    [
        ("bad.graphml", "<graphml><node"),
        ("bad.json", "{not json"),
        ("other.json", json.dumps({"nodes": []})),
        (
            "edges.json",
            json.dumps(
                {
                    "format": "circuitx-graph",
                    "metadata": {},
                    "nodes": {"input": {}},
                    "edges": {"input->zz": {}},
                }
            ),
        ),
        (
            "shape.json",
            json.dumps(
                {"format": "circuitx-graph", "metadata": {}, "nodes": {"input": {}}, "edges": {}}
            ),
        ),
        ("odd.graphml", "\n".join(nx.generate_graphml(nx.path_graph(3)))),
    ],
)
def test_malformed_graph_files_raise_one_line(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CircuitxError, match="malformed graph file") as caught:
        read_graph(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, said",
    [  # a trial's: each said only "Expecting value: line 1 column 1 (char 0)"
        ("", "it is empty"),
        ("\n".join(nx.generate_graphml(nx.path_graph(3))), "it holds XML, not JSON (GraphML?"),
    ],
)
def test_a_json_graph_file_that_is_empty_or_xml_says_so(tmp_path, text, said):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(CircuitxError, match=re.escape(f"malformed graph file {path}: {said}")):
        read_graph(path)


@pytest.mark.parametrize(
    "data, pattern",
    [  # a helper's trial: each said 'not a circuitx graph (missing "format": ...)'
        ({"scores": {}}, "an auto-circuit graph needs 'scores', 'circuit'; this has no 'circuit'"),
        ({"circuit": []}, "an auto-circuit graph needs 'scores', 'circuit'; this has no 'scores'"),
        (
            {"cfg": {}, "nodes": {}},
            "an EAP-IG graph needs 'cfg', 'nodes', 'edges'; this has no 'edges'",
        ),
        ({"classes": {}, "edges": []}, "a circuit of head classes is a reference, not a graph"),
        ({"nodes": {}, "edges": {}}, 'needs "format": "circuitx-graph"'),
        ({"nodes": [], "links": []}, 'a networkx node-link graph ("nodes", "links")'),
        ({"format": "x"}, '"format" is \'x\', not "circuitx-graph"'),
        ([1], "not a graph of a form circuitx reads"),
        (  # a trial's: as GRAPH, no hint that it is a reference
            ["A0.0->A1.0.Q"],
            "a list of edge names is a circuit, not a scored graph: give it as --reference, "
            "or as compare's B",
        ),
    ],
)
def test_json_of_no_graph_form_names_what_its_form_lacks(tmp_path, data, pattern):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match=re.escape(pattern)):
        read_graph(path)


def test_a_graph_of_unknown_suffix_names_the_formats_read(tmp_path):
    path = tmp_path / "g.json.out"
    with pytest.raises(CircuitxError, match="give this json graph the extension .json$"):
        write_graph(scored_graph(), path, "json")  # written, it could not be read back
    write_graph(scored_graph(), tmp_path / "g.json")
    (tmp_path / "g.json").rename(path)
    reads = (
        r"circuitx reads .graphml, .json \(its own, EAP-IG's or auto-circuit's\) and EAP-IG's .pt$"
    )
    with pytest.raises(CircuitxError, match=r"'.*g.json.out': " + reads):
        read_graph(path)


def test_missing_graph_file(tmp_path):
    with pytest.raises(CircuitxError, match="not found"):
        read_graph(tmp_path / "none.graphml")
    with pytest.raises(CircuitxError, match="is a directory, not a graph file"):
        read_graph(tmp_path)
    # a trial: /dev/null was "not found"
    with pytest.raises(CircuitxError, match="/dev/null is not a regular file, so not a graph"):
        read_graph("/dev/null")


@pytest.mark.parametrize("model", ["a\x01b", "a\udcffb"])  # a control character, not UTF-8
def test_a_value_graphml_cannot_hold_is_one_line_and_no_file(tmp_path, model):
    graph = scored_graph()
    graph.graph["model"] = model
    with pytest.raises(CircuitxError, match="a character XML cannot .*: write the graph as JSON"):
        write_graph(graph, tmp_path / "g.graphml")
    assert list(tmp_path.iterdir()) == []
    write_graph(graph, tmp_path / "g.json")
    assert read_graph(tmp_path / "g.json").graph["model"] == model


def test_a_graph_file_the_disk_fails_to_give_is_not_called_malformed(tmp_path, monkeypatch):
    """A trial's read error (EIO) was said as "malformed graph file"."""
    path = tmp_path / "g.json"
    write_graph(scored_graph(), path)

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(type(path), "read_text", failing)
    with pytest.raises(CircuitxError, match=f"^cannot read graph file {path}: Input/output error$"):
        read_graph(path)


def test_write_into_missing_directory_fails_and_leaves_nothing(tmp_path):
    with pytest.raises(CircuitxError, match="does not exist"):
        write_graph(scored_graph(), tmp_path / "missing" / "g.graphml")
    assert list(tmp_path.iterdir()) == []


def test_dot_shows_the_circuit_only_a_row_a_layer_and_each_edges_score():
    graph = scored_graph()
    dot = to_dot(graph)
    score = graph.edges["a0.h1", "a2.h0", "a0.h1->a2.h0<q>"]["score"]
    assert f'"a0.h1" -> "a2.h0" [label="q", score="{score:.6g}", penwidth=' in dot
    assert '"a0.h0"' not in dot
    # a helper's trial: m0 sat in layer 1's row, heads out of order, every edge one width
    select_nodes(graph, ["a1.h0", "a1.h1", "m1", "m0"])
    rows = [line.strip() for line in to_dot(graph).splitlines() if "rank=same" in line]
    assert rows == ['{ rank=same; "m0"; }', '{ rank=same; "a1.h0"; "a1.h1"; "m1"; }']
    widths = {float(w) for w in re.findall(r"penwidth=([0-9.]+)", to_dot(graph))}
    assert max(widths) == 4.0 and len(widths) > 2


def test_dot_with_scores_of_any_size_is_read_by_graphviz(tmp_path, graphviz):
    """A helper's trial: a CD-T circuit's score -6.91949e-13, written bare, was a syntax
    error to dot (its numerals have no exponent)."""
    graph = scored_graph()
    for index, (*_, data) in enumerate(graph.edges(data=True)):
        data["score"] = [-6.91949e-13, 3.2e21, 0.5][index % 3]
    graph.edges["a0.h1", "a2.h0", "a0.h1->a2.h0<q>"]["in_circuit"] = True
    path = tmp_path / "g.dot"
    path.write_text(to_dot(graph))
    assert "e-13" in path.read_text()
    done = subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


EDGE = {"input": "q", "score": 0.1, "in_circuit": False}
BACKWARD = {"a1.h0->a0.h1<q>": EDGE}  # a later head into an earlier one
SIDEWAYS = {"a0.h0->a0.h1<q>": EDGE}  # a head into another of its layer


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d["nodes"]["a0.h1"].pop("in_circuit"), "node a0.h1 has no 'in_circuit'"),
        (lambda d: d["nodes"]["a0.h1"].pop("kind"), "node a0.h1 has no 'kind'"),
        (lambda d: d["nodes"]["m0"].update(kind="head"), "node m0: kind must be 'mlp'"),
        (lambda d: d["nodes"]["m0"].update(in_circuit="yes"), "in_circuit must be true or false"),
        (lambda d: d["edges"]["input->m0"].pop("score"), "edge input->m0 has no 'score'"),
        (lambda d: d["edges"]["input->m0"].update(score="high"), "score must be a finite number"),
        (lambda d: d["edges"]["input->a0.h0<q>"].update(input="k"), "do not match its name"),
        (lambda d: d["metadata"].update(n_layers=1), r"node a1.h0 is not in .* \(1 layers x 2"),
        (lambda d: d["metadata"].update(n_heads=1), "node a0.h1 is not in the model its metadata"),
        (lambda d: d["metadata"].update(has_mlp=False), "node m0 is not in .* without MLPs"),
        (lambda d: d["metadata"].update(n_layers=10**9), "describes a model of 1000000000 lay"),
        (lambda d: d["metadata"].update(n_heads=0), "has no heads"),
        (lambda d: d["edges"].update(BACKWARD), "a0.h1 runs before a1.h0 and cannot read it"),
        (lambda d: d["edges"].update(SIDEWAYS), "a0.h1 runs before a0.h0 and cannot read it"),
        (lambda d: d.update(version=99), "graph format version 99; this circuitx reads"),
        (lambda d: d["metadata"].update(threshold=-1), "threshold must be a number >= 0"),
        (lambda d: d["metadata"].update(top_k="abc"), "top_k must be a whole number >= 1"),
        (  # found by a new user's trial: read, and scored as a circuit without the edge
            lambda d: d["edges"].pop("input->a0.h1<v>"),
            r"1 of its model's \d+ edges is missing \(input->a0.h1<v>\)",
        ),
        (lambda d: d["nodes"]["a1.h0"].update(layer=7), "node a1.h0: layer and head must be 1"),
        (lambda d: d["nodes"]["a1.h0"].update(head=1), "node a1.h0: layer and head must be 1"),
    ],
)
def test_a_graph_file_missing_or_garbling_an_attribute_names_it(tmp_path, edit, pattern):
    path = tmp_path / "g.json"
    write_graph(full_graph(2, 2, True, task="ioi"), path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match=pattern):
        read_graph(path)


@pytest.mark.parametrize(
    "edit, pattern",
    [  # found by a new user's trial: a NaN score was written as null (no score), and
        # in_circuit "False" counted as in the circuit
        (lambda g: g.nodes["a0.h1"].update(score=float("nan")), "node a0.h1: score must be a fin"),
        (lambda g: g.nodes["a0.h1"].update(in_circuit="False"), "in_circuit must be true or fa"),
        (lambda g: g.graph.pop("n_layers"), "lacks the model shape"),
    ],
)
@pytest.mark.parametrize("name", ["g.json", "g.graphml"])
def test_a_graph_its_reader_would_refuse_is_not_written(tmp_path, edit, pattern, name):
    graph = scored_graph()
    edit(graph)
    with pytest.raises(CircuitxError, match=f"cannot write .*{name}: .*{pattern}"):
        write_graph(graph, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_numpy_and_torch_scalars_are_written_as_numbers(tmp_path):
    graph = scored_graph()
    graph.nodes["m1"]["score"] = np.float32(0.5)
    graph.nodes["a2.h0"]["score"] = torch.tensor(0.25)
    write_graph(graph, tmp_path / "g.json")
    read = read_graph(tmp_path / "g.json")
    assert (read.nodes["m1"]["score"], read.nodes["a2.h0"]["score"]) == (0.5, 0.25)
    assert read.nodes["a0.h1"]["in_circuit"] is True  # np.bool_


def test_non_finite_metadata_is_written_as_null(tmp_path):
    for name in ("g.json", "g.graphml"):
        path = tmp_path / name
        write_graph(full_graph(1, 1, True, big=float("inf"), odd=float("nan")), path)
        meta = read_graph(path).graph
        assert meta["big"] is None and meta["odd"] is None


# ---------------------------------------------------------------- EAP-IG / MIB graphs


def eap_ig_universe(n_layers: int, n_heads: int, parallel: bool) -> tuple[list[str], list[str]]:
    """EAP-IG's node and edge names, built as its Graph.from_model builds them (read from
    hannamw/EAP-IG), independently of ours."""
    nodes, edges, stream = ["input"], [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        mlp = f"m{layer}"
        nodes += [*heads, mlp]
        edges += [f"{s}->{h}<{x}>" for s in stream for h in heads for x in "qkv"]
        if parallel:
            edges += [f"{s}->{mlp}" for s in stream]
            stream += [*heads, mlp]
        else:
            stream += heads
            edges += [f"{s}->{mlp}" for s in stream]
            stream.append(mlp)
    edges += [f"{s}->logits" for s in stream]
    return [*nodes, "logits"], edges


def edge_scored_graph(parallel: bool) -> nx.MultiDiGraph:
    """A 3 x 2 graph with every edge and component scored (tenths), a0.h1 and m1 kept."""
    graph = full_graph(3, 2, True, parallel, task="ioi", method="eap", d_model=16)
    for i, (name, data) in enumerate(edges_by_name(graph).items()):
        data["score"] = (i % 7 - 3) / 10
    for i, node in enumerate(graph.nodes):
        graph.nodes[node]["score"] = i / 10 if node not in ("input", "logits") else None
    select_nodes(graph, ["a0.h1", "m1"])
    return graph


@pytest.mark.parametrize("parallel", [False, True])
def test_eap_ig_export_has_eap_igs_universe_and_round_trips(tmp_path, parallel):
    graph = edge_scored_graph(parallel)
    path = tmp_path / "g.json"
    write_graph(graph, path, "eap-ig")
    data = json.loads(path.read_text())
    nodes, edges = eap_ig_universe(3, 2, parallel)
    # what EAP-IG's Graph.from_json reads: cfg with d_model, each node's in_graph, each
    # edge's score (a number) and in_graph; our node scores where it does not read them
    # (with them it would load a node-level graph, which its to_json cannot write back)
    cfg = {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": parallel, "d_model": 16}
    assert data["cfg"] == cfg
    assert list(data["nodes"]) == nodes or set(data["nodes"]) == set(nodes)
    assert data["nodes"]["a0.h1"] == {"in_graph": True, "circuitx_score": 0.2}
    assert data["nodes"]["input"] == {"in_graph": True} and data["nodes"]["logits"] == {
        "in_graph": True
    }
    assert not any("score" in row for row in data["nodes"].values())
    assert set(data["edges"]) == set(edges)
    assert all(set(row) == {"score", "in_graph"} for row in data["edges"].values())
    assert all(isinstance(row["score"], float) for row in data["edges"].values())
    back = read_graph(path)
    assert edges_by_name(back) == edges_by_name(graph)
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert back.graph["task"] == "ioi" and back.graph["source_format"] == "eap-ig"


def test_a_graph_eap_ig_writes_now_is_read_with_its_node_scores(tmp_path):
    """EAP-IG's Graph.to_json today: each node {"in_graph", "score"} (the score where the
    graph scores nodes)."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
        "nodes": {name: {"in_graph": name == "a1.h0", "score": 0.5} for name in nodes},
        "edges": {name: {"score": 0.25, "in_graph": False} for name in edges},
    }
    path = tmp_path / "mib.json"
    path.write_text(json.dumps(data))
    graph = read_graph(path)
    assert graph.nodes["a1.h0"]["in_circuit"] and not graph.nodes["a0.h0"]["in_circuit"]
    assert graph.nodes["a0.h0"]["score"] == 0.5 and graph.graph["d_model"] == 8
    # written back, its node scores stay where EAP-IG reads them (a node-level graph)
    write_graph(graph, tmp_path / "again.json", "eap-ig")
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["nodes"]["a0.h0"] == {"in_graph": False, "score": 0.5}
    assert "eap_ig_node_scores" not in again["circuitx_metadata"]


def test_a_graph_without_d_model_says_what_to_add_and_goes_to_pt(tmp_path):
    """EAP-IG wrote no d_model before 2025, nor does an auto-circuit file hold one: such
    a file reads, its EAP-IG JSON export names where to add it (not 'discover it again':
    circuitx never discovered it; a trial's), and its .pt export needs none, as EAP-IG's
    from_pt reads none (a trial's: it was refused)."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False},
        "nodes": dict.fromkeys(nodes, False),
        "edges": {name: {"score": 0.25, "in_graph": False} for name in edges},
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    auto_circuit = tmp_path / "ac.json"
    write_graph(read_graph(path), auto_circuit, "auto-circuit")
    plain = json.loads(auto_circuit.read_text())
    auto_circuit.write_text(json.dumps({"scores": plain["scores"], "circuit": []}))
    for source in (path, auto_circuit):
        graph = read_graph(source)
        with pytest.raises(CircuitxError, match="add it \\(an EAP-IG file's cfg, the metadata"):
            write_graph(graph, tmp_path / "x.json", "eap-ig")
        write_graph(graph, tmp_path / "x.pt")
        saved = torch.load(tmp_path / "x.pt", weights_only=True)
        assert "d_model" not in saved["cfg"] and saved["edges_scores"].shape == (7, 15)
        back = edges_by_name(read_graph(tmp_path / "x.pt"))
        assert {k: v["score"] for k, v in back.items()} == {
            k: v["score"] for k, v in edges_by_name(graph).items()
        }


def test_an_eap_ig_graph_whose_cfg_does_not_match_its_nodes_is_refused(tmp_path):
    """A cfg of a billion heads over a 2 x 2 graph's nodes: refused at once, without
    building the graph it describes."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 10**9, "parallel_attn_mlp": False},
        "nodes": {name: {"in_graph": False, "score": 0.5} for name in nodes},
        "edges": {name: {"score": 0.25, "in_graph": False} for name in edges},
    }
    path = tmp_path / "mib.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match="2 layers x 1000000000 heads, 2000000004 nodes"):
        read_graph(path)


def test_graphs_eap_ig_cannot_read_are_not_exported(tmp_path):
    graph = full_graph(2, 2, True, task="ioi", method="activation-patching")
    with pytest.raises(CircuitxError, match="needs the model's d_model"):
        write_graph(graph, tmp_path / "a.json", "eap-ig")
    graph.graph["d_model"] = 8
    # no score on any edge or node (a node method's graph has its node scores): a trial's
    # said "activation-patching scores nodes only: export --format json keeps its node
    # scores" of a file with none, and "eap scores nodes only" of an edge method's
    for method in ("activation-patching", "eap", None):
        graph.graph["method"] = method
        for fmt in ("eap-ig", "auto-circuit"):
            with pytest.raises(CircuitxError, match="none of this graph's edges or nodes has a"):
                write_graph(graph, tmp_path / "c.json", fmt)
    with pytest.raises(CircuitxError, match="or every node of a node-level graph, and none"):
        write_graph(graph, tmp_path / "c.json", "eap-ig")
    graph.nodes["a0.h1"]["score"] = 0.5  # a node method's: auto-circuit says so
    graph.graph["method"] = "hisp"
    with pytest.raises(CircuitxError, match="hold every edge's, and hisp scores nodes only"):
        write_graph(graph, tmp_path / "c.json", "auto-circuit")
    assert list(tmp_path.iterdir()) == []


def node_scored_graph() -> nx.MultiDiGraph:
    """A node method's circuit of a 2 x 2 model: every head and MLP scored, no edge."""
    graph = full_graph(2, 2, True, task="ioi", method="hisp", d_model=8, selected_by="node")
    for i, node in enumerate(graph.nodes):
        if node not in ("input", "logits"):
            graph.nodes[node]["score"] = (i % 4 - 1) / 4
    select_nodes(graph, ["a0.h1", "m1"])
    return graph


@pytest.mark.parametrize("suffix", ["json", "pt"])
def test_a_node_methods_circuit_goes_to_eap_ig_as_a_node_level_graph(tmp_path, suffix):
    """MIB evaluates node-level circuits (--level node ranks EAP-IG's node scores): a node
    method's graph is written with its node scores where EAP-IG reads them and every edge
    scored 0, as EAP-IG's node attribution leaves them (it was refused), and read back
    as it was."""
    graph = node_scored_graph()
    path = tmp_path / f"g.{suffix}"
    write_graph(graph, path, "eap-ig")
    if suffix == "json":
        data = json.loads(path.read_text())
        assert data["nodes"]["a0.h1"] == {"in_graph": True, "score": graph.nodes["a0.h1"]["score"]}
        assert data["nodes"]["input"] == {"in_graph": True}  # unscored: EAP-IG keeps it
        assert {row["score"] for row in data["edges"].values()} == {0.0}
        in_graph = {name for name, row in data["edges"].items() if row["in_graph"]}
    else:
        saved = torch.load(path, weights_only=True)
        scores = saved["nodes_scores"].tolist()
        assert math.isnan(scores[0]) and scores[2] == graph.nodes["a0.h1"]["score"]
        assert not saved["edges_scores"].any() and "circuitx_nodes_scores" not in saved
        in_graph = {
            n for n in edges_by_name(graph) if saved["edges_in_graph"][eap_ig_indices(n, 2)]
        }
    kept = {name for name, d in edges_by_name(graph).items() if d["in_circuit"]}
    assert in_graph == kept and kept
    back = read_graph(path)
    assert all(d["score"] is None for d in edges_by_name(back).values())
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert back.graph["selected_by"] == "node"


def test_an_eap_ig_node_level_graph_is_read_without_edge_scores(tmp_path):
    """EAP-IG's own node attribution leaves every edge at 0: read, the edges have no
    score (not 761 tied zeros an edge AUC would rank); one non-zero edge keeps them."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
        "nodes": {name: {"in_graph": True, "score": 0.5} for name in nodes},
        "edges": {name: {"score": 0.0, "in_graph": True} for name in edges},
    }
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(data))
    graph = read_graph(path)
    assert all(d["score"] is None for d in edges_by_name(graph).values())
    assert graph.nodes["a1.h0"]["score"] == 0.5
    data["edges"][edges[0]]["score"] = 0.25
    path.write_text(json.dumps(data))
    assert edges_by_name(read_graph(path))[edges[0]]["score"] == 0.25


def eap_ig_indices(name: str, n_heads: int) -> tuple[int, int]:
    """Where EAP-IG's Graph keeps an edge in its (source, destination) tensors: its
    _forward_index and _backward_index (read from hannamw/EAP-IG), written out here."""
    sender, _, rest = name.partition("->")
    receiver, _, letter = rest.rstrip(">").partition("<")

    def forward(node: str) -> int:
        if node == "input":
            return 0
        layer = int(node[1:].split(".")[0])
        within = n_heads if node[0] == "m" else int(node.split(".h")[1])
        return 1 + layer * (n_heads + 1) + within

    def backward(node: str) -> int:
        if node == "logits":
            return -1
        layer = int(node[1:].split(".")[0])
        if node[0] == "m":
            return layer * (3 * n_heads + 1) + 3 * n_heads
        return layer * (3 * n_heads + 1) + "qkv".index(letter) * n_heads + int(node.split(".h")[1])

    return forward(sender), backward(receiver)


@pytest.mark.parametrize("parallel", [False, True])
def test_eap_ig_pt_files_hold_eap_igs_tensors_and_round_trip(tmp_path, parallel):
    """MIB takes a circuit as EAP-IG's .json or .pt (Graph.to_pt): a .pt is written with
    EAP-IG's node order and tensor layout, and read back as the graph it was."""
    graph = edge_scored_graph(parallel)
    path = tmp_path / "g.pt"
    write_graph(graph, path)
    saved = torch.load(path, weights_only=True)
    cfg = {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": parallel, "d_model": 16}
    assert saved["cfg"] == cfg
    nodes, edges = eap_ig_universe(3, 2, parallel)
    assert saved["src_nodes"] == nodes[:-1]  # EAP-IG's forward order, logits not a source
    assert saved["dst_nodes"][-1] == "logits" and len(saved["dst_nodes"]) == 3 * 7 + 1
    assert saved["edges_scores"].shape == saved["edges_in_graph"].shape == (10, 22)
    for name, data in edges_by_name(graph).items():
        at = eap_ig_indices(name, 2)
        assert saved["edges_scores"][at].item() == data["score"]
        assert saved["edges_in_graph"][at].item() == data["in_circuit"]
    assert int(saved["edges_in_graph"].sum()) == sum(
        d["in_circuit"] for d in edges_by_name(graph).values()
    )
    assert saved["nodes_in_graph"].tolist() == [graph.nodes[n]["in_circuit"] for n in nodes[:-1]]
    assert "nodes_scores" not in saved  # ours are not EAP-IG's (a node-level graph to it)
    back = read_graph(path)
    assert edges_by_name(back) == edges_by_name(graph)
    assert dict(back.nodes(data=True)) == dict(graph.nodes(data=True))
    assert back.graph["task"] == "ioi" and back.graph["source_format"] == "eap-ig"
    assert back.graph["d_model"] == 16


def eap_ig_saved_pt() -> dict:
    """A 2 x 2 model's graph as EAP-IG's to_pt saves it, node-scored (NaN for a node it
    did not score): a0.h1->a1.h0<k> the one edge in the circuit."""
    nodes, _ = eap_ig_universe(2, 2, False)
    sources = nodes[:-1]
    destinations = [f"a{n}.h{h}<{x}>" for n in range(2) for x in "qkv" for h in range(2)]
    destinations = [*destinations[:6], "m0", *destinations[6:], "m1", "logits"]
    scores = torch.zeros(len(sources), len(destinations))
    member = torch.zeros(len(sources), len(destinations), dtype=torch.bool)
    scores[eap_ig_indices("a0.h1->a1.h0<k>", 2)] = 0.75
    member[eap_ig_indices("a0.h1->a1.h0<k>", 2)] = True
    node_scores = torch.full((len(sources),), float("nan"))
    node_scores[sources.index("a0.h1")] = 0.5
    saved = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
        "src_nodes": sources,
        "dst_nodes": destinations,
        "edges_scores": scores,
        "edges_in_graph": member,
        "nodes_in_graph": torch.tensor([n in ("input", "a0.h1", "a1.h0") for n in sources]),
        "nodes_scores": node_scores,
    }
    return saved


def test_a_pt_file_eap_ig_saved_is_read(tmp_path):
    """As EAP-IG's to_pt saves a node-scored graph: NaN for a node it did not score."""
    saved = eap_ig_saved_pt()
    scores, node_scores = saved["edges_scores"], saved["nodes_scores"]
    torch.save(saved, tmp_path / "mib.pt")
    graph = read_graph(tmp_path / "mib.pt")
    edges = edges_by_name(graph)
    assert edges["a0.h1->a1.h0<k>"]["score"] == 0.75 and edges["a0.h1->a1.h0<k>"]["in_circuit"]
    assert [k for k, d in edges.items() if d["in_circuit"]] == ["a0.h1->a1.h0<k>"]
    assert graph.nodes["a0.h1"]["score"] == 0.5 and graph.nodes["m0"]["score"] is None
    assert graph.nodes["a1.h0"]["in_circuit"] and not graph.nodes["m1"]["in_circuit"]
    write_graph(graph, tmp_path / "again.pt")  # EAP-IG's node scores stay EAP-IG's
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert torch.equal(again["nodes_scores"].isnan(), node_scores.isnan())
    assert torch.equal(again["edges_scores"], scores)


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (  # a trial's: read by name, 9 of 13 circuit edges fell on edges no model has
            lambda d: d.update(src_nodes=d["src_nodes"][::-1]),
            "src_nodes are not EAP-IG's order for a 2 layers x 2 heads model (entry 0 is 'm1', "
            "where EAP-IG has 'input'): its from_pt reads the tensors in its own order",
        ),
        (
            lambda d: d.update(dst_nodes=d["dst_nodes"][:-1]),
            "dst_nodes are not EAP-IG's order for a 2 layers x 2 heads model (it has 14 names, "
            "where EAP-IG has 15)",
        ),
        (
            lambda d: d["cfg"].update(n_heads="2"),
            "EAP-IG graph cfg's n_heads must be a whole number of at least 1, not '2'",
        ),
        (
            lambda d: d["cfg"].update(n_layers=-1),
            "EAP-IG graph cfg's n_layers must be a whole number of at least 1, not -1",
        ),
    ],
)
def test_a_pt_file_eap_ig_would_read_otherwise_is_one_line(tmp_path, edit, pattern):
    """EAP-IG's from_pt lays the tensors out in its own order and ignores the name lists;
    circuitx had read them by name, so such a file meant one graph to it and another to
    EAP-IG (and MIB)."""
    saved = eap_ig_saved_pt()
    edit(saved)
    torch.save(saved, tmp_path / "x.pt")
    with pytest.raises(CircuitxError, match=re.escape(pattern)):
        read_graph(tmp_path / "x.pt")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ({"weight": torch.zeros(2)}, "not a graph EAP-IG's to_pt saved: it lacks cfg, src_nodes"),
        ([1, 2], "not a graph EAP-IG's to_pt saved: it holds a list"),
        ({"neurons_in_graph": torch.zeros(2)}, "neuron-level EAP-IG graphs are not supported"),
        (  # a trial's: to_pt's keys before February 2025 were said to be no EAP-IG graph
            {"cfg": {"n_layers": 1}, "edges": torch.zeros(2), "edges_in_graph": torch.zeros(2)},
            "an EAP-IG graph saved by to_pt before February 2025",
        ),
        (b"truncated", "not a graph EAP-IG's to_pt saved: it is no zip archive, as torch.save"),
        (  # a trial's copy cut short: the zip's start without its end
            b"PK\x03\x04" + bytes(60),
            "not a graph EAP-IG's to_pt saved: it is a zip archive cut short",
        ),
        (  # a trial's: torch's message offered to run it, cut off mid-sentence
            {"cfg": ValueError("any object")},
            "not a graph EAP-IG.s to_pt saved: it holds objects other than tensors and plain",
        ),
    ],
)
def test_pt_files_that_are_no_eap_ig_graph_are_one_line(tmp_path, content, pattern):
    path = tmp_path / "x.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CircuitxError, match=re.escape(f"malformed graph file {path}: ") + pattern):
        read_graph(path)


def test_eap_ig_reads_0_and_1_as_membership(tmp_path):
    """A helper's trial: EAP-IG's from_json reads in_graph 1 (it sets a boolean tensor)."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False},
        "nodes": {name: {"in_graph": int(name in ("input", "a0.h1", "logits"))} for name in nodes},
        "edges": {name: {"score": 0.0, "in_graph": 0} for name in edges},
    }
    data["edges"]["a0.h1->logits"] = {"score": 0.25, "in_graph": 1}
    path = tmp_path / "ints.json"
    path.write_text(json.dumps(data))
    graph = read_graph(path)
    assert [k for k, d in edges_by_name(graph).items() if d["in_circuit"]] == ["a0.h1->logits"]
    assert graph.nodes["a0.h1"]["in_circuit"] is True
    data["edges"]["a0.h1->logits"]["in_graph"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match=r"in_graph must be true or false \(or 0 or 1\), not 2"):
        read_graph(path)


def test_a_graph_eap_ig_wrote_is_read_with_its_scores(tmp_path):
    """A file as EAP-IG writes it (no node scores): membership and edge scores come in,
    each node scores its strongest outgoing edge."""
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
        "nodes": {name: name in ("input", "a0.h1", "logits") for name in nodes},
        "edges": {name: {"score": 0.0, "in_graph": False} for name in edges},
    }
    data["edges"]["input->a0.h1<v>"] = {"score": -0.5, "in_graph": True}
    data["edges"]["a0.h1->logits"] = {"score": 0.25, "in_graph": True}
    path = tmp_path / "mib.json"
    path.write_text(json.dumps(data))
    graph = read_graph(path)
    assert graph.nodes["a0.h1"]["in_circuit"] and not graph.nodes["a1.h0"]["in_circuit"]
    assert graph.nodes["a0.h1"]["score"] == 0.25 and graph.nodes["input"]["score"] == -0.5
    kept = [name for name, d in edges_by_name(graph).items() if d["in_circuit"]]
    assert sorted(kept) == ["a0.h1->logits", "input->a0.h1<v>"]
    # written again, the edges' node scores are not passed off as the graph's own (a
    # helper's trial: each node gained a circuitx_score)
    for fmt in ("eap-ig", "auto-circuit"):
        write_graph(graph, tmp_path / f"{fmt}.json", fmt)
    nodes_written = json.loads((tmp_path / "eap-ig.json").read_text())["nodes"]
    assert nodes_written["a0.h1"] == {"in_graph": True}
    assert json.loads((tmp_path / "auto-circuit.json").read_text())["circuitx_node_scores"] == {}
    assert read_graph(tmp_path / "eap-ig.json").nodes["a0.h1"]["score"] == 0.25


@pytest.mark.parametrize(
    "edit, pattern",
    [
        (lambda d: d.update(neurons_in_graph=[1]), "neuron-level EAP-IG graphs are not supported"),
        (  # as EAP-IG writes a neuron-level graph now: the neurons in each node
            lambda d: d["nodes"].update({"m0": {"in_graph": True, "neurons": [True] * 8}}),
            "neuron-level EAP-IG graphs are not supported",
        ),
        (
            lambda d: d["edges"].update({"input->a0.h0<q>": {"score": "NaN", "in_graph": True}}),
            r"edge input->a0.h0<q>: score must be a finite number or null, not 'NaN'",
        ),
        (lambda d: d["nodes"].update({"a9.h0": True}), "node 'a9.h0' is not in a 2 x 2 model"),
        (  # found by a new user's trial: the string "false" was read as in the circuit
            lambda d: d["edges"].update({"input->a0.h0<q>": {"score": 1.4, "in_graph": "false"}}),
            r"edge 'input->a0.h0<q>': in_graph must be true or false \(or 0 or 1\), not 'false'",
        ),
        (  # EAP-IG's from_json needs it; circuitx had read it as off the circuit
            lambda d: d["edges"].update({"input->a0.h0<q>": {"score": 1.4}}),
            r"edge 'input->a0.h0<q>' has no in_graph \(true or false, or 0 or 1\)",
        ),
        (
            lambda d: d["nodes"].update({"a0.h1": {"in_graph": 2, "score": 0.5}}),
            r"node 'a0.h1': in_graph must be true or false \(or 0 or 1\), not 2",
        ),
        (lambda d: d["cfg"].pop("n_heads"), "cfg lacks n_layers and n_heads"),
        (  # a trial's: read as 2 layers, where EAP-IG's range(2.0) fails
            lambda d: d["cfg"].update(n_layers=2.0),
            r"cfg's n_layers must be a whole number of at least 1, not 2.0",
        ),
        (lambda d: d["nodes"].update({"a0.h1": {}}), r"node 'a0.h1' has no in_graph"),
        (  # found by a new user's trial: read as an edge with no score, off the circuit
            lambda d: d["edges"].pop("input->a0.h1<v>"),
            r"1 of a 2 x 2 model's \d+ edges is missing \(input->a0.h1<v>\)",
        ),
    ],
)
def test_eap_ig_graphs_we_cannot_read_are_one_line(tmp_path, edit, pattern):
    nodes, edges = eap_ig_universe(2, 2, False)
    data = {
        "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False},
        "nodes": dict.fromkeys(nodes, True),
        "edges": {name: {"score": 1.0, "in_graph": True} for name in edges},
    }
    edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match=pattern):
        read_graph(path)


def test_eap_ig_has_no_graph_without_mlps():
    from circuitx.graph_files import graph_to_text

    with pytest.raises(CircuitxError, match="EAP-IG graphs always have MLPs"):
        graph_to_text(full_graph(2, 2, False), "eap-ig")


def test_a_graph_file_missing_a_node_or_its_edges_says_so(tmp_path):
    """A second trial's edits: a GraphML node element deleted (its edges name it), and a
    JSON graph with no edges at all."""
    path = tmp_path / "g.graphml"
    write_graph(full_graph(2, 2, True, task="ioi"), path)
    text = path.read_text()
    declared = re.search(r'<node id="a1.h1">.*?</node>', text, re.S)
    path.write_text(text.replace(declared.group(0), ""))
    with pytest.raises(CircuitxError, match="node a1.h1 is not declared"):
        read_graph(path)
    path = tmp_path / "g.json"
    write_graph(full_graph(2, 2, True, task="ioi"), path)
    data = json.loads(path.read_text())
    data["edges"] = {}
    path.write_text(json.dumps(data))
    with pytest.raises(CircuitxError, match="graph has no edges"):
        read_graph(path)
    path = tmp_path / "g.graphml"  # a GraphML edge element deleted
    write_graph(full_graph(2, 2, True, task="ioi"), path)
    text = path.read_text()
    edge = re.search(r'<edge source="a0.h0" target="m1" id="a0.h0-&gt;m1">.*?</edge>', text, re.S)
    path.write_text(text.replace(edge.group(0), ""))
    with pytest.raises(CircuitxError, match=r"edges is missing \(a0.h0->m1\)"):
        read_graph(path)


def test_a_non_finite_score_is_refused_before_discover_writes_it():
    """discover checks its own graph's scores alone (the whole check took 21 s of a
    position graph's write); a NaN, a model's overflow, would be written as no score."""
    graph = full_graph(2, 2, True)
    graph_files.check_scores(graph, "cannot write g.graphml")
    graph.nodes["a1.h0"]["score"] = np.float32("inf")
    with pytest.raises(CircuitxError, match=r"^cannot write g.graphml: node a1.h0: score must"):
        graph_files.check_scores(graph, "cannot write g.graphml")


def test_a_graph_file_without_repeats_is_walked_once(tmp_path, monkeypatch):
    """The search for a repeated element (a second walk of the file: 20 s of a 140 MB
    file's 60) runs only where the file opens more elements than networkx's graph holds."""
    path = tmp_path / "g.graphml"
    write_graph(scored_graph(), path)

    def walked(_):
        raise AssertionError("walked twice")

    monkeypatch.setattr(graph_files, "_refuse_repeated_elements", walked)
    assert read_graph(path).number_of_edges() == scored_graph().number_of_edges()
    node = re.search(r'<node id="m1">.*?</node>', path.read_text(), re.S).group(0)
    path.write_text(path.read_text().replace(node, node + node))
    with pytest.raises(CircuitxError, match="walked twice"):  # read_graph's one line
        read_graph(path)


def test_a_graph_file_giving_a_node_or_edge_twice_is_refused(tmp_path):
    """A trial: an edge element copied with other values (a hand-edited or merged file)
    read as whichever copy came last, without a word; the same for a JSON key."""
    path = tmp_path / "g.graphml"
    write_graph(scored_graph(), path)
    text = path.read_text()
    edge = re.search(r'<edge source="a0.h0" target="m1" id="a0.h0-&gt;m1">.*?</edge>', text, re.S)
    changed = re.sub(r'key="(d\d+)">-?[0-9][^<]*</data>', r'key="\1">-5.0</data>', edge.group(0))
    assert changed != edge.group(0)
    for copy in (edge.group(0) + changed, changed + edge.group(0)):  # either copy first
        path.write_text(text.replace(edge.group(0), copy))
        with pytest.raises(CircuitxError, match=r": edge a0.h0->m1 is given twice$"):
            read_graph(path)
    raw = edge.group(0).replace("-&gt;", "->")  # the same id, its > unescaped (legal XML)
    path.write_text(text.replace(edge.group(0), edge.group(0) + raw))
    with pytest.raises(CircuitxError, match=r": edge a0.h0->m1 is given twice$"):
        read_graph(path)
    node = re.search(r'<node id="m1">.*?</node>', text, re.S).group(0)
    path.write_text(text.replace(node, node + node))
    with pytest.raises(CircuitxError, match=r": node m1 is given twice$"):
        read_graph(path)
    path.write_text(text.replace(node, f"{node}<!-- was: {node} -->"))  # a comment is no copy
    assert read_graph(path).number_of_nodes() == scored_graph().number_of_nodes()
    edited = nx.read_graphml(tmp_path / "g.graphml", force_multigraph=True)
    for sender, receiver in (("input", "m0"), ("a0.h0", "m1")):  # networkx numbers each
        key = next(iter(edited[sender][receiver]))  # pair's new edge 0: no repeat
        data = edited[sender][receiver][key]
        edited.remove_edge(sender, receiver, key)
        edited.add_edge(sender, receiver, **data)
    nx.write_graphml(edited, tmp_path / "edited.graphml")
    assert read_graph(tmp_path / "edited.graphml").number_of_edges() == edited.number_of_edges()
    path = tmp_path / "g.json"
    write_graph(scored_graph(), path)
    text = path.read_text()
    first = re.search(r'\n  "a0.h0->m1": \{.*?\n  \}', text, re.S).group(0)
    path.write_text(text.replace(first, first + "," + first.replace('"score"', '"was"')))
    with pytest.raises(CircuitxError, match=r"a JSON object in it gives 'a0.h0->m1' twice$"):
        read_graph(path)


def test_a_graphml_file_edited_with_networkx_or_by_hand_reads_or_names_what_is_wrong(tmp_path):
    """A helper's trial: an edge removed and added back with networkx (which numbers the
    edges it adds) gave "expected string or bytes-like object, got 'int'"; values edited by
    hand gave "'yes'"; a file without circuitx's schema said "node input has no 'head'";
    a node removed was counted, not named."""
    path = tmp_path / "g.graphml"
    write_graph(scored_graph(), path)
    raw = nx.read_graphml(path, force_multigraph=True)
    name = "a0.h1->a2.h0<q>"
    (data,) = [d for *_, key, d in raw.edges(keys=True, data=True) if key == name]
    raw.remove_edge("a0.h1", "a2.h0", key=name)
    raw.add_edge("a0.h1", "a2.h0", **data)
    nx.write_graphml(raw, tmp_path / "readded.graphml")
    assert edges_by_name(read_graph(tmp_path / "readded.graphml"))[name] == data
    raw.add_edge("a0.h1", "a2.h0", **data)  # the same edge twice
    nx.write_graphml(raw, tmp_path / "twice.graphml")
    with pytest.raises(CircuitxError, match=rf"twice.graphml: edge {re.escape(name)} is in the f"):
        read_graph(tmp_path / "twice.graphml")
    no_schema = nx.read_graphml(path, force_multigraph=True)
    del no_schema.graph["circuitx_schema"]
    nx.write_graphml(no_schema, tmp_path / "no-schema.graphml")
    assert read_graph(tmp_path / "no-schema.graphml").nodes["input"]["head"] is None
    text = path.read_text()
    key = re.search(r'<key id="(\w+)" for="node" attr.name="in_circuit"', text).group(1)
    for attribute, value, said in (
        ("in_circuit", "yes", "in_circuit 'yes' is not true or false"),
        ("score", "high", "score 'high' is not a number"),
        ("layer", "abc", "layer 'abc' is not a whole number"),
    ):
        key = re.search(rf'<key id="(\w+)" for="node" attr.name="{attribute}"', text).group(1)
        node = re.search(r'<node id="a2.h0">.*?</node>', text, re.S).group(0)
        edited = re.sub(rf'(<data key="{key}">)[^<]*(</data>)', rf"\g<1>{value}\g<2>", node)
        (tmp_path / "edited.graphml").write_text(text.replace(node, edited))
        with pytest.raises(CircuitxError, match=rf"edited.graphml: node a2.h0: {said}$"):
            read_graph(tmp_path / "edited.graphml")
    removed = nx.read_graphml(path, force_multigraph=True)
    removed.remove_node("m1")
    nx.write_graphml(removed, tmp_path / "removed.graphml")
    with pytest.raises(CircuitxError, match=r"but it has \d+ \(missing m1\)$"):
        read_graph(tmp_path / "removed.graphml")


def test_eap_ig_export_names_an_edge_without_a_score(tmp_path):
    graph = scored_graph()
    graph.graph["d_model"] = 8
    for _, _, data in graph.edges(data=True):
        data["score"] = 0.5
    graph.edges["input", "m0", "input->m0"]["score"] = None
    with pytest.raises(
        CircuitxError, match=r"1 of this graph's \d+ edges has no score \(input->m0\)"
    ):
        write_graph(graph, tmp_path / "e.json", "eap-ig")
