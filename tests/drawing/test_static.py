"""Static pictures of circuits: the drawing's structure, colours and files, and its
command line."""

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import assert_one_line_error, drawn_words, every_node_kept, run, scored_circuit
from matplotlib.figure import Figure

from circuitx.drawing import AGREEMENT, INPUT_COLOURS, draw, positions
from circuitx.drawing import places as places_module
from circuitx.drawing import static as static_module
from circuitx.drawing.page import page_data
from circuitx.drawing.places import (
    ROW_BOW,
    Picture,
    caption_text,
    edge_bends,
    edge_points,
    graph_places,
    labels_fit,
    role_abbreviations,
)
from circuitx.graph import edges_by_name, full_graph, select_nodes
from circuitx.graph_files import write_graph
from circuitx.progress import counted
from circuitx.reference import reference_graph
from circuitx.tasks import get_task


def svg_text(path) -> str:
    return path.read_text()


def test_the_layout_puts_each_node_in_its_layers_row():
    places = positions(3, 4)
    assert places["input"][1] < places["a0.h0"][1] < places["a1.h0"][1] < places["logits"][1]
    assert places["a1.h0"][1] == places["m1"][1]  # a layer's heads and MLP share a row
    assert [places[f"a2.h{h}"][0] for h in range(4)] == sorted(
        places[f"a2.h{h}"][0] for h in range(4)
    )


def test_the_svg_names_the_circuits_nodes_and_colours_edges_by_input(tmp_path):
    graph = scored_circuit()
    drawn = draw(graph, tmp_path / "c.svg")
    kept = [name for name, d in edges_by_name(graph).items() if d["in_circuit"]]
    assert drawn == {"nodes": 4, "edges": len(kept), "note": None}  # input, logits besides
    text = svg_text(tmp_path / "c.svg")
    ET.fromstring(text)  # well-formed
    for node in ("a0.h1", "a1.h2", "m1", "a2.h0", "input", "logits"):
        assert f">{node}<" in text, node
    assert ">a0.h0<" not in text and ">a1.h0<" not in text  # not in the circuit
    feeds = {
        d["input"] or ("logits" if r == "logits" else "mlp")
        for _, r, d in graph.edges(data=True)
        if d["in_circuit"]
    }
    for kind, colour in INPUT_COLOURS.items():
        assert (colour in text) == (kind in feeds), kind


def test_with_a_reference_the_colours_say_agreement(tmp_path):
    graph = scored_circuit()
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h2", "a1.h3"])  # a1.h3 missed; m1, a2.h0 extra
    draw(graph, tmp_path / "r.svg", reference)
    text = svg_text(tmp_path / "r.svg")
    assert all(colour in text for colour in AGREEMENT.values())
    assert "node precision 0.50, recall 0.67" in text
    assert text.count('id="missed-edge') == 7  # the reference's edges of a1.h3, dashed


def test_png_and_pdf_are_real_pictures(tmp_path):
    from matplotlib.image import imread

    draw(scored_circuit(), tmp_path / "c.png")
    pixels = imread(tmp_path / "c.png")
    assert pixels.shape[0] > 300 and float(np.std(pixels)) > 0.05
    draw(scored_circuit(), tmp_path / "c.pdf")
    assert (tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"


def test_a_wide_png_is_drawn_at_fewer_dots_an_inch(tmp_path, monkeypatch):
    """A picture of 57 position panels at 200 dpi was 260 million pixels, which Pillow
    refused to open (a helper's trial): past the cap the resolution drops to fit it."""
    from matplotlib.image import imread

    monkeypatch.setattr(static_module, "PNG_MAX_PIXELS", 400_000)
    draw(scored_circuit(), tmp_path / "c.png")
    height, width = imread(tmp_path / "c.png").shape[:2]
    assert 300_000 < width * height <= 400_000


@pytest.mark.parametrize("kind", ["svg", "html"])
def test_an_empty_circuit_draws_with_a_note(tmp_path, kind):
    graph = full_graph(2, 2, True, task="ioi")
    for _, data in graph.nodes(data=True):
        data["in_circuit"] = False
    path = tmp_path / "empty.graphml"
    write_graph(graph, path)
    result = run("draw", path, "--out", tmp_path / f"empty.{kind}")
    assert result.exit_code == 0 and "no component is in the circuit" in result.stderr
    assert "no component is in the circuit<" in svg_text(tmp_path / f"empty.{kind}")


def test_an_empty_circuits_caption_has_no_precision_rather_than_nan():
    # a helper's trial: "node precision nan" against a reference
    graph = full_graph(2, 2, True, task="ioi")
    truth = places_module.Truth(frozenset({"a0.h1", "input"}), frozenset({"input->a0.h1<q>"}))
    text = caption_text(Picture(graph), ["input", "logits"], [], 0, truth)
    assert text == (
        "0 nodes, 0 edges drawn; node precision -, recall 0.00, edge precision -, recall 0.00"
    )


@pytest.mark.parametrize("method", ["activation-patching", "eap", "cdt", "acdc"])
def test_discover_draws_every_kind_of_graph(tmp_path, method):
    out = tmp_path / f"{method}.svg"
    result = run(
        "discover", "--task", "greater-than", "--model", "planted", "--method", method,
        "--n-prompts", 6, "--faithfulness-prompts", 6, "--draw", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ">logits<" in svg_text(out) and "node precision" in svg_text(out)
    assert json.loads(result.stdout)["drawing"] == str(out)  # where it went, for a script


def test_a_circuit_over_positions_draws_a_panel_per_position_and_no_features(tmp_path, monkeypatch):
    out = tmp_path / "positions.svg"
    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda f, *a, **k: figures.append(f) or save(f, *a, **k))
    result = run(
        "discover", "--task", "ioi", "--model", "planted", "--method", "eap",
        "--positions", "named", "--n-prompts", 6, "--no-faithfulness", "--draw", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = svg_text(out)
    assert ">input@IO<" in text and ">input@END<" in text
    assert ">features<" not in text  # the panels widen the picture; there are no features
    assert ">heads @IO<" in text and ">heads @other<" in text  # each panel names its position
    # a helper's trial: a0.h0@IO's label ran into a0.h1@IO's; the panel names the position
    assert ">a0.h1<" in text and ">a0.h1@IO<" not in text
    assert text.count(">MLP<") == 6
    svg = ET.fromstring(out.read_text())  # a trial's was 4.8 times as wide as tall
    width, height = (float(svg.get(side).removesuffix("pt")) for side in ("width", "height"))
    assert 2.5 < width / height <= 3.0
    # the logits above the headers' row, inside the axes with room for their label
    (axes,) = [axes for axes in figures[0].axes if axes.texts]  # not the colour bars
    at = {a.get_text(): a.xy[1] for a in axes.texts}
    assert at["heads @IO"] < at["logits"] and at["logits"] + 0.5 <= axes.get_ylim()[1]


@pytest.mark.parametrize("groups", [("IO", "S1", "END"), ("IO", "S1", "S2", "END")])
def test_the_logits_sit_above_the_panels_headers(groups):
    # a trial: in the headers' row (a layer above the last) the logits sat on a panel's
    # "heads @S2" or "MLP", whichever the middle of the panels fell on
    places = positions(2, 4, groups)
    header_row = 2 + 1.0
    assert places["logits"][1] >= header_row + 0.5
    assert places["a1.h0@IO"][0] < places["logits"][0] < places["m1@END"][0]


def test_panels_of_every_position_name_the_tasks_positions(tmp_path):
    # a helper's trial: --positions all labelled its panels by index alone
    out = tmp_path / "every.svg"
    result = run(
        "discover", "--task", "greater-than", "--model", "planted", "--method", "eap",
        "--positions", "all", "--n-prompts", 4, "--no-faithfulness", "--top-k", 4, "--draw", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = svg_text(out)
    assert ">heads @12 (END)<" in text and ">heads @2 (NOUN)<" in text and ">heads @0<" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["draw", "{bad}", "--out", "{tmp}/x.svg"], "malformed graph file"),
        (["draw", "{good}", "--out", "{tmp}/x.txt"], "cannot tell the picture format"),
        (["draw", "{good}", "--out", "/no/such/dir/x.svg"], "output directory does not exist"),
        (["draw", "{good}", "--out", "/no/such/dir/x.html"], "output directory does not exist"),
        (["draw", "{bad}", "--out", "{tmp}/x.html"], "malformed graph file"),
        (["draw", "{good}", "--out", "{tmp}/x.svg", "--all", "--top", "3"], "--all or --top"),
    ],
)
def test_bad_draw_input_is_one_line(tmp_path, args, message):
    good, bad = tmp_path / "g.graphml", tmp_path / "bad.json"
    write_graph(scored_circuit(), good)
    bad.write_text("{not json")
    filled = [a.format(bad=bad, good=good, tmp=tmp_path) for a in args]
    assert_one_line_error(run(*filled), message)
    assert not (tmp_path / "x.svg").exists() and not (tmp_path / "x.html").exists()


def test_the_legend_lists_what_the_edges_feed(tmp_path):
    draw(scored_circuit(("a0.h1", "a1.h2")), tmp_path / "heads.svg")  # no MLP in it
    text = svg_text(tmp_path / "heads.svg")
    assert ">into q<" in text and ">into logits<" in text
    assert ">into mlp<" not in text and INPUT_COLOURS["mlp"] not in text


def test_transcoder_features_sit_in_their_mlps_row(method_graphs, tmp_path):
    graph = method_graphs["transcoder-features"]
    places = graph_places(graph)
    features = [n for n, kind in graph.nodes(data="kind") if kind == "feature"]
    assert features
    for feature in features:
        mlp = feature.split(".")[0]
        assert places[feature][1] == places[mlp][1] and places[feature][0] > places[mlp][0]
    rows = {}
    for feature in features:
        rows.setdefault(feature.split(".")[0], []).append(places[feature][0])
    assert all(len(set(xs)) == len(xs) for xs in rows.values())  # none on top of another
    draw(graph, tmp_path / "features.svg", every=True)
    text = svg_text(tmp_path / "features.svg")
    assert ">features<" in text and ">rest<" in text


def test_a_drawings_counts_are_its_captions(tmp_path):
    """A helper's trial: draw returned 8 nodes where the caption (and discover's summary)
    said 6: it counted input and logits (test_dot checks the dot engine's)."""
    graph = scored_circuit()
    drawn = draw(graph, tmp_path / "c.svg")
    kept = [n for n, on in graph.nodes(data="in_circuit") if on and n not in ("input", "logits")]
    nodes, edges = counted(drawn["nodes"], "node"), counted(drawn["edges"], "edge")
    assert drawn["nodes"] == len(kept) and f"{nodes}, {edges} drawn" in drawn_words(
        tmp_path / "c.svg"
    )


def test_of_more_edges_than_a_picture_holds_the_largest_are_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(places_module, "MAX_DRAWN_EDGES", 40)
    graph = scored_circuit()
    drawn = draw(graph, tmp_path / "many.svg", every=True)
    nonzero = [d for *_, d in graph.edges(data="score") if d]
    assert drawn["edges"] == 40 < len(nonzero)
    assert f"40 edges drawn (the largest of {len(nonzero)})" in drawn_words(tmp_path / "many.svg")


def test_of_too_many_unscored_edges_those_between_the_strongest_nodes_are_drawn(
    tmp_path, monkeypatch
):
    """A node-level method's circuit edges have no scores: a trial's caption said "the
    largest of 22076" of edges drawn in graph order. Each is weighed by its weaker end;
    the page orders them alike."""
    monkeypatch.setattr(places_module, "MAX_DRAWN_EDGES", 5)
    graph = scored_circuit(nodes=[n for n in full_graph(3, 4, True).nodes if n[0] in "am"])
    for *_, data in graph.edges(data=True):
        data["score"] = None
    strong = {"a0.h3": 9.0, "a1.h0": 8.0, "a2.h1": 7.0}
    for node, score in strong.items():
        graph.nodes[node]["score"] = score
    circuit = {key for *_, key, kept in graph.edges(keys=True, data="in_circuit") if kept}
    drawn, chosen = places_module.chosen_edges(graph, circuit)
    assert chosen > 5 and {(s, r) for s, r, *_ in drawn} <= {
        (s, r) for s in strong for r in (*strong, "logits")
    }
    draw(graph, tmp_path / "u.svg")
    said = f"5 edges drawn (of {chosen}: those between the strongest nodes)"
    assert said in svg_text(tmp_path / "u.svg")
    page = page_data(Picture(graph, None, None, False))["edges"]
    weights = dict(zip(page["name"], page["weight"]))
    assert (
        sorted(weights.values(), reverse=True)[:5] == [weights[key] for _, _, key, _ in drawn]
        and min(weights[key] for _, _, key, _ in drawn) >= 7.0
    )


def test_top_and_all_draw_only_scored_edges_and_say_so_when_none_are(tmp_path):
    """--top N takes edges with a non-zero score, as --all does; a graph with no score at
    all gets a note instead of a silently empty picture."""
    graph = scored_circuit()
    nonzero = [k for *_, k, s in graph.edges(keys=True, data="score") if s]
    assert draw(graph, tmp_path / "t.svg", top=10**6)["edges"] == len(nonzero)
    for _, _, data in graph.edges(data=True):
        data["score"] = None
    for node in graph.nodes:
        graph.nodes[node]["score"] = None
    path = tmp_path / "nodes.graphml"
    write_graph(graph, path)
    result = run("draw", path, "--out", tmp_path / "n.svg", "--top", 5)
    assert result.exit_code == 0, result.output
    assert "nothing has a non-zero score to select" in result.stderr
    assert "no component is in the circuit" not in result.stderr


def test_top_selects_as_the_page_and_discover_do(tmp_path):
    """A helper's trial: --top 30 drew the 19 non-zero edges of an edge-level circuit where
    the page took 30 (11 scored 0), and --top 3 of a node-level circuit drew its 6 nodes and
    no edge where the page drew the top 3 nodes and the edges among them. Both now take the
    top N non-zero items at the graph's score level, as discover's --top-k ranks them."""
    graph = scored_circuit()
    for index, (*_, data) in enumerate(graph.edges(data=True)):  # no ties, every 4th 0
        data["score"] = 0.0 if index % 4 == 0 else (-1) ** index * (index + 1) / 1000
    nonzero = sorted(
        ((abs(s), k) for *_, k, s in graph.edges(keys=True, data="score") if s), reverse=True
    )
    edges, chosen, nodes = Picture(graph, top=3).contents()
    assert {k for _, _, k, _ in edges} == {k for _, k in nonzero[:3]} and chosen == 3
    assert set(nodes) == {n for s, r, *_ in edges for n in (s, r)} | {"input", "logits"}
    assert page_data(Picture(graph, top=3))["initial"]["top"] == 3
    # node level: the top 2 heads and MLPs by |score| and the edges among them
    for _, _, data in graph.edges(data=True):
        data["score"] = None
    strongest = sorted(
        (n for n in graph.nodes if n not in ("input", "logits") and graph.nodes[n]["score"]),
        key=lambda n: -abs(graph.nodes[n]["score"]),
    )[:2]
    edges, chosen, nodes = Picture(graph, top=2).contents()
    assert set(nodes) == {*strongest, "input", "logits"}
    assert edges and all({s, r} <= set(nodes) for s, r, *_ in edges)
    # a top-k circuit's page starts its threshold mode at the k-th |score|, not at 0
    for index, (*_, data) in enumerate(graph.edges(data=True)):
        data["score"] = 0.0 if index % 4 == 0 else (-1) ** index * (index + 1) / 1000
    graph.graph.pop("threshold", None)
    graph.graph["top_k"] = 2
    assert page_data(Picture(graph))["initial"]["threshold"] == nonzero[1][0]


def test_reference_auto_without_a_reference_draws_without_one_as_discover_does(tmp_path):
    """A new user's trial: `draw --reference auto` (the README's) refused a graph of a
    model with no reference, where discover notes it and goes on; a reference named
    outright is still refused."""
    graph = scored_circuit()
    graph.graph.update(model="my-own-model")
    good = tmp_path / "g.graphml"
    write_graph(graph, good)
    result = run("draw", good, "--out", tmp_path / "x.svg", "--reference", "auto")
    assert result.exit_code == 0, result.output
    assert "drawn without one" in result.stderr and (tmp_path / "x.svg").is_file()
    assert_one_line_error(run("draw", good, "--out", tmp_path / "y.svg", "--reference", "ioi"), "")
    assert not (tmp_path / "y.svg").exists()


def test_an_edge_within_a_row_curves_below_it():
    """A helper's trial: a head's edge into its own layer's MLP ran straight through the
    heads between, and read as a head-to-head edge."""
    xs, ys = edge_points((0.0, 2.0), (4.5, 2.0))
    assert (xs[0], ys[0], xs[-1], ys[-1]) == (0.0, 2.0, 4.5, 2.0)
    assert min(ys) == pytest.approx(2.0 - ROW_BOW / 2) and max(ys) == 2.0
    assert edge_points((0.0, 1.0), (4.5, 2.0)) == ([0.0, 4.5], [1.0, 2.0])  # across rows


def test_an_edge_whose_line_runs_through_nodes_bends_around_them(tmp_path):
    """A helper's trial: m1->m4 was a straight line through m2 and m3, and read as the
    chain m1->m2->m3->m4; a0.h3->a2.h3<v> read as two edges through a1.h3."""
    places = positions(8, 8)
    segments = [
        (places["m1"], places["m4"]),  # one column, three rows up: through m2 and m3
        (places["m1"], places["m2"]),  # the next row: nothing between
        (places["a0.h3"], places["m0"]),  # one row: it bows below instead
        (places["input"], places["logits"]),  # up the middle, between the columns
    ]
    bends = edge_bends(places, segments)
    assert bends[0] != 0.0 and bends[1:] == [0.0, 0.0, 0.0]
    xs, ys = edge_points(*segments[0], bends[0], steps=30)
    assert (xs[0], ys[0], xs[-1], ys[-1]) == (*places["m1"], *places["m4"])
    for node in ("m2", "m3"):  # the curve keeps clear of the nodes it passed through
        x, y = places[node]
        assert min(abs(px - x) for px, py in zip(xs, ys) if abs(py - y) < 0.05) > 0.25
    # both drawings bend it alike: the page's script reads the same bends
    graph = full_graph(8, 8, True)
    for _, _, data in graph.edges(data=True):
        data.update(score=0.0, in_circuit=False)
    graph.edges["m1", "m4", "m1->m4"].update(score=1.0, in_circuit=True)
    page = page_data(Picture(graph))
    index = page["edges"]["name"].index("m1->m4")
    assert page["edges"]["bend"][index] == bends[0]
    assert page["edges"]["bend"][page["edges"]["name"].index("m1->m2")] == 0.0


def test_roles_too_wide_for_their_row_go_by_short_names_with_a_key(tmp_path):
    """A helper's trial: on a 12 x 12 model the IOI roles ran into each other
    ("a11.lbackup narnegative name mo"); on the planted model they fit and stay whole."""
    assert role_abbreviations({"backup name mover", "induction", "name mover"}) == {
        "backup name mover": "BNM",
        "induction": "IND",
        "name mover": "NM",
    }
    assert role_abbreviations({"name mover", "negative mover"}) == {
        "name mover": "NM1",  # NM twice: numbered (each had kept its name, as wide as before)
        "negative mover": "NM2",
    }
    # a tracr model's values: words split at _ , and - too (a trial saw them overlap)
    assert role_abbreviations({"opp_idx_4", "length_5,length_5_selector_width_attn_output"}) == {
        "opp_idx_4": "OI4",
        "length_5,length_5_selector_width_attn_output": "L5L5",
    }
    places = positions(1, 3)
    wide = {"a0.h0": "a0.h0\nbackup name mover", "a0.h1": "a0.h1\nname mover"}
    assert not labels_fit(wide, places, column=12)
    assert labels_fit(wide, places, column=14)  # (17 + 10) / 2 characters apart
    assert labels_fit({"a0.h0": "a0.h0", "a0.h1": "a0.h1"}, places, column=1)  # no role
    graph = every_node_kept(12, 12)
    draw(graph, tmp_path / "big.svg", get_task("ioi").reference("", 12, 12, True))
    text = svg_text(tmp_path / "big.svg")
    assert ">BNM<" in text and ">backup name mover<" not in text
    assert "roles: BNM backup name mover; DT duplicate token;" in text
    small = reference_graph("ioi", 3, 4, True)  # roles two columns apart fit
    small.nodes["a2.h0"].update(in_circuit=True, role="name mover")
    small.nodes["a2.h2"].update(in_circuit=True, role="negative name mover")
    draw(scored_circuit(), tmp_path / "small.svg", small)
    text = svg_text(tmp_path / "small.svg")
    assert ">negative name mover<" in text and "roles:" not in text


def test_top_takes_a_numpy_integer(tmp_path):
    """A helper's trial: top=np.int64(5) was "--top must be a whole number at least 1"."""
    drawn = draw(scored_circuit(), tmp_path / "t.svg", top=np.int64(5))
    assert drawn["edges"] == 5


def test_a_methods_settings_other_than_its_defaults_are_in_the_title():
    """A helper's trial: the leaderboard's pages of eap and eap[qk-fix=on] had one title."""
    from circuitx.discovery.run import method_label
    from circuitx.drawing.places import title
    from circuitx.methods import METHODS

    options = {"qk_fix": "on", "grad_drop": "off"}
    assert method_label(METHODS["eap"], options) == "eap[qk-fix=on]"
    assert method_label(METHODS["eap"], {**options, "qk_fix": "off"}) == "eap"
    transcoders = {o.name: o.default for o in METHODS["transcoder"].options}
    assert (
        method_label(METHODS["transcoder"], {**transcoders, "transcoders": "/a/b"}) == "transcoder"
    )
    graph = scored_circuit()
    assert title(graph) == "eap on ioi (planted-ioi)"
    graph.graph["method_label"] = "eap[qk-fix=on]"
    assert title(graph) == "eap[qk-fix=on] on ioi (planted-ioi)"


def test_a_picture_is_the_same_bytes_each_time_and_its_key_matches_it(tmp_path):
    """A helper's trial: two SVGs (and PDFs) of one graph differed by a date and random ids;
    the key's "reference only" was a solid line where those edges are dashed; a file's
    input, scored with its edges' total, took the colour scale's top and washed the heads
    out."""
    graph = scored_circuit()
    for fmt in ("svg", "pdf"):
        draw(graph, tmp_path / f"a.{fmt}")
        draw(graph, tmp_path / f"b.{fmt}")
        assert (tmp_path / f"a.{fmt}").read_bytes() == (tmp_path / f"b.{fmt}").read_bytes()
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h3"])
    draw(graph, tmp_path / "r.svg", reference)
    legend = [
        g for g in ET.parse(tmp_path / "r.svg").iter() if g.get("id", "").startswith("legend")
    ]
    dashed = [e for g in legend for e in g.iter() if "stroke-dasharray" in e.get("style", "")]
    assert dashed  # the reference-only entry
    # the colour scale: the same whatever score the input and logits carry
    bounds = []
    for loud in (0.0, 1000.0):
        graph.nodes["input"]["score"] = graph.nodes["logits"]["score"] = loud
        bounds.append(places_module.score_scale(graph, list(graph.nodes))[1].vmax)
    assert (
        bounds[0]
        == bounds[1]
        == max(abs(graph.nodes[n]["score"]) for n in graph if n not in ("input", "logits"))
    )


def test_many_missed_reference_edges_are_faint_and_the_caption_scores_edges(tmp_path, monkeypatch):
    """A helper's trial: on a large model the reference's ~600 missed edges, dashed at one
    strength, hid the circuit's 100, and the caption gave no edge precision or recall."""
    graph = scored_circuit()
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h2", "a1.h3", "a2.h3"])

    def opacities(path):
        missed = [e for e in ET.parse(path).iter() if e.get("id", "").startswith("missed-edge")]
        return {
            float(m.group(1))
            for e in missed
            for part in e.iter()
            if (m := re.search(r"stroke-opacity: ([0-9.]+)", part.get("style", "")))
        }

    draw(graph, tmp_path / "few.svg", reference)
    monkeypatch.setattr(static_module, "MANY_MISSED", 1)
    draw(graph, tmp_path / "many.svg", reference)
    assert max(opacities(tmp_path / "many.svg")) < min(opacities(tmp_path / "few.svg")) == 0.8
    assert ", edge precision " in svg_text(tmp_path / "few.svg")


def test_a_selection_drawn_against_a_reference_dashes_what_it_leaves_out(tmp_path):
    """A helper's trial: with --top or --all, the dashed "reference only" edges were the
    saved circuit's misses, not the picture's (recall 0.20 with 8 edges dashed of 20
    missed; under --all edges drawn both solid and dashed), and the caption did not say
    the picture was not the circuit."""
    graph = scored_circuit()
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h2", "a1.h3", "a2.h1"])
    in_reference = {k for k, d in edges_by_name(reference).items() if d["in_circuit"]}
    for top in (5, None):
        path = tmp_path / f"{top}.svg"
        draw(graph, path, reference, top=top, every=top is None)
        drawn = drawn_words(path)
        selected = "the top 5" if top else "every scored item"
        assert f"{selected} by |score|, not the saved circuit:" in drawn
        recall = float(re.search(r"edge precision [-\d.]+, recall ([\d.]+)", drawn)[1])
        missed = [e for e in ET.parse(path).iter() if e.get("id", "").startswith("missed-edge")]
        assert len(missed) == round((1 - recall) * len(in_reference))
        assert len({e.get("id") for e in missed}) == len(missed)  # ids unique, as SVG asks


def test_a_feature_graphs_caption_counts_edges_between_components(method_graphs, tmp_path):
    """A helper's trial: a transcoder feature circuit's caption said edge recall 4.60, each
    feature's edge counted as a hit of its MLP's reference edge; score said 1.000."""
    from circuitx.builtin import ground_truth
    from circuitx.discovery import evaluate

    graph = method_graphs["transcoder-features"]
    reference = ground_truth("planted-greater-than", "greater-than")
    draw(graph, tmp_path / "f.svg", reference)
    metrics = evaluate(graph, reference)
    expected = ", ".join(
        f"{level} precision {metrics[f'{level}_precision']:.2f}, "
        f"recall {metrics[f'{level}_recall']:.2f}"
        for level in ("node", "edge")
    )
    assert expected in drawn_words(tmp_path / "f.svg")


def test_edges_bend_around_the_nodes_drawn_not_the_faint_dots(tmp_path, monkeypatch):
    """A helper's trial: an edge bent round a faint dot (a head not in the circuit) and
    landed on another edge; one ran by a drawn node's label, reading as a backward edge.
    Edges now bend around what is drawn, with more room (CLEARANCE)."""
    seen = []

    def recording(places, segments):
        seen.append(set(places))
        return places_module.edge_bends(places, segments)

    monkeypatch.setattr(static_module, "edge_bends", recording)
    graph = scored_circuit()
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h3"])
    draw(graph, tmp_path / "c.svg", reference)
    drawn = {n for n, kept in graph.nodes(data="in_circuit") if kept} | {"a1.h3"}
    assert seen and all(places == drawn for places in seen)
    # a line 0.3 columns from a node between its rows now bends around it
    places = {"input": (0.0, -1.0), "a0.h0": (0.3, 0.0), "a1.h0": (0.0, 1.0)}
    assert places_module.edge_bends(places, [((0.0, -1.0), (0.0, 1.0))]) != [0.0]


def test_a_node_level_circuits_edges_scored_0_are_not_drawn_and_the_caption_says_so(tmp_path):
    """A trial's: CD-T's edges that carry no relevance (score exactly 0) between two of its
    circuit's nodes were drawn as circuit edges, at the thinnest width."""
    graph = scored_circuit(granularity="node")
    kept = {key for *_, key, on in graph.edges(keys=True, data="in_circuit") if on}
    zero = {key for *_, key, score in graph.edges(keys=True, data="score") if score == 0} & kept
    assert zero  # the fixture scores some of the circuit's edges 0
    summary = draw(graph, tmp_path / "c.svg")
    assert summary["edges"] == len(kept) - len(zero)
    words = drawn_words(tmp_path / "c.svg")
    assert f"({len(zero)} edges among the nodes scored 0 not drawn)" in words
    graph.graph["selected_by"] = "edge"  # an edge-level circuit draws what it selected
    assert draw(graph, tmp_path / "e.svg")["edges"] == len(kept)
