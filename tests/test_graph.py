import pytest

from circuitx.errors import CircuitxError
from circuitx.graph import (
    add_feature_level,
    edge_name,
    edges_by_name,
    edges_off_path,
    full_graph,
    parse_edge_name,
    select_edges,
)


def expected_edge_count(n_layers: int, n_heads: int, has_mlp: bool) -> int:
    """Edges counted sender by sender, independently of the builder."""
    mlp = 1 if has_mlp else 0
    total = 3 * n_heads * n_layers + mlp * n_layers + 1  # from input
    for layer in range(n_layers):
        later_heads = 3 * n_heads * (n_layers - 1 - layer)
        total += n_heads * (later_heads + mlp * (n_layers - layer) + 1)  # from each head
        total += mlp * (later_heads + (n_layers - 1 - layer) + 1)  # from the MLP
    return total


def test_gpt2_small_universe_has_the_mib_edge_count():
    graph = full_graph(12, 12, True)
    assert graph.number_of_nodes() == 1 + 144 + 12 + 1
    assert graph.number_of_edges() == 32491 == expected_edge_count(12, 12, True)


def test_attention_only_universe():
    graph = full_graph(4, 8, False)
    assert not any(kind == "mlp" for _, kind in graph.nodes(data="kind"))
    assert graph.number_of_edges() == expected_edge_count(4, 8, False)


def test_edges_into_heads_name_their_input():
    graph = full_graph(2, 2, True)
    names = edges_by_name(graph)
    assert {
        "a0.h1->a1.h0<q>",
        "a0.h1->a1.h0<k>",
        "a0.h1->a1.h0<v>",
        "a0.h1->m0",
        "m1->logits",
    } <= set(names)
    assert names["a0.h1->a1.h0<k>"]["input"] == "k"
    assert (
        "m0->m0" not in names and "a1.h0->a0.h0<q>" not in names and "a0.h0->a0.h1<q>" not in names
    )


def test_edge_names_parse_back():
    assert parse_edge_name("a0.h1->a3.h2<q>") == ("a0.h1", "a3.h2", "q")
    assert parse_edge_name("m2->logits") == ("m2", "logits", None)
    assert parse_edge_name(edge_name("input", "a1.h0", "v")) == ("input", "a1.h0", "v")
    for bad in ("a0.h1-a3.h2", "x->logits", "a0.h1->a3.h2<z>"):
        with pytest.raises(CircuitxError):
            parse_edge_name(bad)


def test_edges_off_a_path_from_input_to_logits_are_those_eap_ig_prunes():
    """EAP-IG's Graph.prune keeps an edge only while its sender has a kept edge in (the
    input always has) and its receiver one out (the logits always have)."""
    graph = full_graph(3, 2, True)
    on_path = ["input->a0.h1<v>", "a0.h1->m1", "m1->logits"]
    dead_start = ["a1.h0->a2.h1<q>", "a2.h1->logits"]  # a1.h0 has no kept edge in
    dead_end = ["input->a1.h1<k>"]  # a1.h1 has no kept edge out
    select_edges(graph, [*on_path, *dead_start, *dead_end])
    assert sorted(edges_off_path(graph)) == sorted([*dead_start, *dead_end])
    select_edges(graph, on_path)
    assert edges_off_path(graph) == []


def test_a_feature_edge_follows_its_component_edge():
    """A helper's trial: with the transcoder's path search, every input->m1.f* edge (score
    0 included) was in the circuit, as its ends were, though the search did not choose
    input->m1; the graph file kept 158 edges where the summary said 26."""
    graph = full_graph(2, 2, True)
    select_edges(graph, ["input->m1", "m1->logits", "a0.h0->m1"])
    edges_by_name(graph)["a0.h0->m1"]["in_circuit"] = False  # chosen ends, not this edge
    features = {"m1.f0": 0.5, "m1.rest": 0.1}
    edges = [
        ("input", "m1.f0", None, 0.0),
        ("a0.h0", "m1.f0", None, 0.3),
        ("m1.f0", "logits", None, 0.5),
    ]
    add_feature_level(graph, features, edges, None)
    kept = {name for name, data in edges_by_name(graph).items() if data["in_circuit"]}
    assert {"input->m1.f0", "m1.f0->logits"} <= kept and "a0.h0->m1.f0" not in kept
