"""The interactive page without a browser: what it carries, that it stands alone, and the
selection rule its slider follows (the browser tests are in test_browser.py)."""

import json
import re

import pytest
from conftest import METHOD_GRAPHS, run, scored_circuit

from circuitx.drawing import Picture, draw, positions
from circuitx.drawing.page import page_data
from circuitx.graph import INPUT, LOGITS, edges_by_name, score_level, selection_by_score
from circuitx.methods import METHODS


def embedded_data(path) -> dict:
    text = path.read_text()
    pattern = r'<script type="application/json" id="circuit-data">(.*?)</script>'
    match = re.search(pattern, text, re.S)
    return json.loads(match.group(1))


def saved_circuit(graph) -> tuple[set[str], set[str]]:
    """The graph's nodes and edges in the circuit."""
    nodes = {n for n, kept in graph.nodes(data="in_circuit") if kept}
    edges = {key for *_, key, kept in graph.edges(keys=True, data="in_circuit") if kept}
    return nodes, edges


@pytest.mark.parametrize("method", METHOD_GRAPHS)
def test_the_pythons_selection_is_discoverys(method_graphs, method):
    """The rule the page's slider follows, at the threshold discovery used, gives the
    circuit discovery selected, for every method (node- and edge-level)."""
    graph = method_graphs[method]
    assert score_level(graph) == graph.graph["selected_by"]
    assert graph.graph["selected_by"] == METHODS[graph.graph["method"]].granularity
    chosen = selection_by_score(graph, graph.graph["threshold"], graph.graph["top_k"])
    assert chosen == saved_circuit(graph)  # edge pruning's is a top k


def test_features_follow_their_mlp(method_graphs):
    graph = method_graphs["transcoder-features"]
    features = {n for n, kind in graph.nodes(data="kind") if kind == "feature"}
    nodes, edges = selection_by_score(graph, top_k=3)  # by top k: every feature of a kept MLP
    kept_mlps = {n for n in nodes if n.startswith("m") and "." not in n}
    assert {f for f in features if f.split(".")[0] in kept_mlps} == nodes & features
    nodes, _ = selection_by_score(graph, threshold=0.3)
    assert all(abs(graph.nodes[f]["score"]) >= 0.3 for f in nodes & features)


def test_top_k_keeps_the_largest_and_breaks_ties_in_graph_order():
    graph = scored_circuit(granularity="edge")
    _, edges = selection_by_score(graph, top_k=5)
    magnitudes = {key: abs(d["score"]) for key, d in edges_by_name(graph).items()}
    assert len(edges) == 5 and min(magnitudes[e] for e in edges) == max(magnitudes.values())
    order = list(magnitudes)
    tied = [key for key in order if magnitudes[key] == max(magnitudes.values())]
    assert edges == set(tied[:5])
    nodes, edges = selection_by_score(scored_circuit(granularity="node"), top_k=2)
    assert len(nodes) == 4 and {INPUT, LOGITS} <= nodes


def test_the_page_carries_every_score_and_stands_alone(tmp_path):
    graph = scored_circuit(granularity="edge")
    graph.graph["task"] = "ioi</script><b>x"  # text from a file must not end the script
    drawn = draw(graph, tmp_path / "c.html")
    text = (tmp_path / "c.html").read_text()
    data = embedded_data(tmp_path / "c.html")
    scores = {key: d["score"] for key, d in edges_by_name(graph).items()}
    assert dict(zip(data["edges"]["name"], data["edges"]["score"])) == scores
    places = positions(3, 4)
    assert [(x, y) for x, y in zip(data["nodes"]["x"], data["nodes"]["y"])] == [
        places[name] for name in data["nodes"]["name"]
    ]
    assert data["title"] == "eap on ioi</script><b>x (planted-ioi)"
    assert "<title>eap on ioi&lt;/script&gt;&lt;b&gt;x (planted-ioi)</title>" in text
    # nothing fetched: no script or style from elsewhere, no address but SVG's namespace
    # (a url(#id) names a part of the page: the download's node scale)
    assert not re.search(r"<script[^>]+src=|<link|@import|url\((?!#)", text)
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) == {"http://www.w3.org/2000/svg"}
    nodes, edges = saved_circuit(graph)
    assert drawn == {"nodes": len(nodes) - 2, "edges": len(edges), "note": None}  # input, logits


def test_the_page_starts_where_asked():
    graph = scored_circuit(granularity="edge")
    assert page_data(Picture(graph))["initial"]["mode"] == "circuit"
    assert page_data(Picture(graph, top=7))["initial"] == {
        "mode": "top",
        "threshold": 0.5,  # the 7th largest |score|, where the threshold mode starts
        "top": 7,
    }
    every = page_data(Picture(graph, every=True))["initial"]
    assert every["mode"] == "threshold" and every["threshold"] == 0.1  # the least nonzero


def test_discover_writes_the_page(tmp_path):
    out = tmp_path / "eap.html"
    result = run(
        "discover", "--task", "ioi", "--model", "planted-ioi", "--method", "eap",
        "--n-prompts", 6, "--faithfulness-prompts", 6, "--draw", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = embedded_data(out)
    assert data["level"] == "edge" and data["has_reference"]
    assert sum(data["nodes"]["in_reference"]) > 2  # the planted circuit's heads


def test_the_summary_shows_a_negative_that_rounds_to_zero_as_zero(tmp_path):
    graph = scored_circuit(granularity="edge")
    graph.graph["faithfulness"] = -3.66e-7
    draw(graph, tmp_path / "c.html")
    assert "faithfulness 0.000;" in (tmp_path / "c.html").read_text()


def test_the_summary_counts_the_scored_edges_only(tmp_path):
    graph = scored_circuit(granularity="edge")
    n_edges = len(edges_by_name(graph))
    draw(graph, tmp_path / "edges.html")
    assert f"{n_edges} of {n_edges} edges scored" in (tmp_path / "edges.html").read_text()
    for data in edges_by_name(graph).values():  # as a node-level method leaves them
        data["score"] = None
    draw(graph, tmp_path / "nodes.html")
    text = (tmp_path / "nodes.html").read_text()
    scored_nodes = sum(score is not None for _, score in graph.nodes(data="score"))
    assert f"{scored_nodes} nodes scored, no edge" in text
    assert "edges scored" not in text
