"""draw --engine dot: Graphviz lays the circuit out (the ``graphviz`` fixture: .ci/run
installs it)."""

import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from conftest import METHOD_GRAPHS, assert_one_line_error, drawn_words, run, scored_circuit

from circuitx.drawing import AGREEMENT, INPUT_COLOURS, Picture, draw
from circuitx.drawing.dot import dot_source
from circuitx.errors import CircuitxError
from circuitx.graph import full_graph, select_edges, select_nodes
from circuitx.graph_files import write_graph
from circuitx.progress import counted


def laid_out(source: str) -> dict[str, tuple[float, float]]:
    """Where dot places each node of ``source`` (x, y; y grows upward here)."""
    plain = subprocess.run(["dot", "-Tplain"], input=source, capture_output=True, text=True)
    return {
        fields[1].strip('"'): (float(fields[2]), float(fields[3]))
        for fields in (line.split() for line in plain.stdout.splitlines())
        if fields[0] == "node"
    }


def test_dot_draws_the_circuit_with_its_colours(graphviz, tmp_path):
    graph = scored_circuit()
    drawn = draw(graph, tmp_path / "c.svg", engine="dot")
    text = (tmp_path / "c.svg").read_text()
    root = ET.fromstring(text)
    titles = [e.text for e in root.iter("{http://www.w3.org/2000/svg}title")]
    kept = [key for *_, key, kept in graph.edges(keys=True, data="in_circuit") if kept]
    assert drawn == {"nodes": 4, "edges": len(kept), "note": None}  # input, logits besides
    for node in ("a0.h1", "a1.h2", "m1", "a2.h0", "input", "logits"):
        assert node in titles, node
    assert "a0.h0" not in titles  # not in the circuit
    assert sum("&#45;&gt;" in t or "->" in t for t in titles if t) == len(kept)
    used = {colour for colour in INPUT_COLOURS.values() if colour in text}
    assert INPUT_COLOURS["q"] in used and INPUT_COLOURS["logits"] in used
    draw(graph, tmp_path / "c.png", engine="dot")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    draw(graph, tmp_path / "c.pdf", engine="dot")
    assert (tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"


def test_dot_against_a_reference_says_agreement_and_draws_the_missed(graphviz):
    reference = full_graph(3, 4, True)
    select_nodes(reference, ["a0.h1", "a1.h2", "a1.h3"])
    graph = scored_circuit()
    graph.nodes["a1.h3"]["score"] = -5.0  # a helper's trial: a large score's white ink
    source, _ = dot_source(Picture(graph, reference))
    assert re.search(r'"a1\.h3" \[[^]]*style=dashed', source)  # missed
    assert re.search(r'"a1\.h3" \[[^]]*fontcolor="#222222"', source)  # unfilled: dark ink
    missed = re.findall(r'-> "(\S+)" \[style=dashed[^]]*in the reference only', source)
    assert sorted(missed) == ["a1.h3"] * 6 + ["logits"]  # its q, k, v from two, its write
    assert all(colour in source for colour in AGREEMENT.values())
    assert "node precision 0.50, recall 0.67" in source


def test_every_methods_graph_draws_with_dot(graphviz, method_graphs, tmp_path):
    for name in METHOD_GRAPHS:
        drawn = draw(method_graphs[name], tmp_path / f"{name}.svg", engine="dot")
        ET.fromstring((tmp_path / f"{name}.svg").read_text())
        nodes, edges = counted(drawn["nodes"], "node"), counted(drawn["edges"], "edge")
        assert f"{nodes}, {edges}" in drawn_words(tmp_path / f"{name}.svg"), name


def test_dot_for_the_page_or_without_graphviz_is_one_line(tmp_path, monkeypatch):
    good = tmp_path / "g.graphml"
    write_graph(scored_circuit(), good)
    result = run("draw", good, "--out", tmp_path / "x.html", "--engine", "dot")
    assert_one_line_error(result, "drawn by circuitx itself")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    result = run("draw", good, "--out", tmp_path / "x.svg", "--engine", "dot")
    assert_one_line_error(result, "needs Graphviz's dot on the PATH")
    assert not (tmp_path / "x.svg").exists()


def test_dot_keeps_each_layer_in_head_order(graphviz):
    """A helper's trial: dot put layer 0 as a0.h0, a0.h2, m0, a0.h3, a0.h1."""
    row = ["a0.h0", "a0.h1", "a0.h2", "a0.h3", "m0"]
    graph = scored_circuit(nodes=(*row, "a1.h2", "m1", "a2.h0"))
    xs = {node: x for node, (x, _) in laid_out(dot_source(Picture(graph))[0]).items()}
    heads = row[:-1]  # m0, which they feed, a rank above them
    assert sorted(heads, key=xs.get) == heads


def test_dot_has_a_key_one_circle_size_and_the_empty_note(graphviz):
    """A helper's trial: dot's pictures had no key to their colours, circles sized by their
    labels' lengths, and no note on an empty circuit."""
    graph = scored_circuit()
    source, _ = dot_source(Picture(graph))
    key = re.search(r"label=<(.*)>;", source).group(1)
    assert f'<FONT COLOR="{INPUT_COLOURS["q"]}">q</FONT>' in key and "width |score|" in key
    drawn_nodes = Picture(graph).contents()[2]
    bound = max(abs(graph.nodes[n]["score"]) for n in drawn_nodes if n not in ("input", "logits"))
    assert f"+{bound:.3g}</FONT>" in key
    assert "fixedsize=true" in source
    graph.nodes["input"]["score"] = 1000.0  # a file's input, scored with its edges' total
    loud, _ = dot_source(Picture(graph))
    assert re.search(r'"input" \[[^]]*fillcolor="#ffffff"', loud)  # white, as drawn elsewhere
    assert re.search(r"label=<(.*)>;", loud).group(1) == key  # and not on the scale
    against, _ = dot_source(Picture(graph, full_graph(3, 4, True)))
    assert "reference only (dashed)" in against
    empty = scored_circuit(nodes=())
    source, drawn = dot_source(Picture(empty))
    assert drawn["note"] == "no component is in the circuit" and drawn["note"] in source


def test_dot_names_the_roles_and_draws_a_png_at_the_static_pictures_resolution(graphviz, tmp_path):
    """A helper's trial: --engine dot dropped the reference's roles, its q/k/v labels sat
    under the arrowheads at 7 points, and its PNG was 741 x 435 px."""
    from matplotlib.image import imread

    from circuitx.tasks import get_task

    reference = get_task("ioi").reference("", 12, 12, True)
    graph = full_graph(12, 12, True, task="ioi")
    select_nodes(graph, ["a9.h9", "a10.h0"])
    source, _ = dot_source(Picture(graph, reference))
    assert "roles: a9.h9 name mover, a10.h0 name mover" in source
    assert "headlabel=q, labelfontsize=8, labeldistance=1.6" in source
    draw(scored_circuit(), tmp_path / "c.png", engine="dot")
    draw(scored_circuit(), tmp_path / "s.png")
    assert imread(tmp_path / "c.png").shape[1] > 1000 and imread(tmp_path / "s.png").shape[1] > 1200
    from PIL import Image  # a trial's: dot's PNG recorded no resolution, so 72 dpi

    for name in ("c.png", "s.png"):
        assert Image.open(tmp_path / name).info["dpi"] == pytest.approx((200, 200), abs=0.01)


def test_q_k_and_v_enter_a_head_at_their_own_port_with_one_label_each():
    """A session's note: dot's q/k/v labels sat on each other near a busy head (a2.h1 of
    EAP-IG's planted IOI circuit read 'k q k v k v'). Each input now enters at its own
    side of the head, as in the static picture, and one label names the port."""
    graph = full_graph(3, 2, True)
    select_edges(
        graph,
        ["input->a2.h0<k>", "a0.h1->a2.h0<k>", "a1.h0->a2.h0<k>", "a0.h1->a2.h0<q>",
         "a1.h0->a2.h0<v>", "a2.h0->logits"],
    )  # fmt: skip
    source, _ = dot_source(Picture(graph))
    into = [line for line in source.splitlines() if '-> "a2.h0"' in line]
    ports = {p: sum(f"headport={p}]" in line for line in into) for p in ("sw", "s", "se")}
    assert ports == {"sw": 1, "s": 3, "se": 1}
    assert [sum(f"headlabel={x}," in line for line in into) for x in "qkv"] == [1, 1, 1]
    assert all("headport=s]" in line for line in into if "<k>" in line)


def test_a_heads_edge_into_its_own_layers_mlp_goes_up_a_rank(graphviz):
    """A trial's: on the heads' rank the edge ran flat out of the head's lower right, where
    its v edges come in; the MLP now sits a rank above its layer's heads and below the
    next layer's (dot's y grows upward here: the input is at the bottom)."""
    graph = scored_circuit(nodes=("a0.h1", "m0", "a1.h2", "m1", "a2.h0"))
    select_edges(graph, ["a0.h1->m0", "m0->a1.h2<k>", "a1.h2->a2.h0<v>", "a2.h0->logits"])
    source, _ = dot_source(Picture(graph))
    ys = {node: y for node, (_, y) in laid_out(source).items()}
    assert ys["a0.h1"] < ys["m0"] < ys["a1.h2"] < ys["a2.h0"]
    assert "m0" not in next(line for line in source.splitlines() if '"a0.h1";' in line)
    select_edges(graph, ["input->m0", "a0.h1->a1.h2<k>", "m0->a1.h2<v>", "a1.h2->logits"])
    source, _ = dot_source(Picture(graph))  # a0.h1 does not feed m0: one rank
    assert '  { rank=same; "a0.h1"; "m0"; }' in source.splitlines()


def test_a_long_dot_layout_is_noted_and_a_stuck_one_is_one_line(
    graphviz, tmp_path, monkeypatch, capsys
):
    """A helper's trial: dot laid out 2,924 edges for 116 s without a word; past its
    time limit it raised subprocess's TimeoutExpired."""
    from circuitx.drawing import dot

    monkeypatch.setattr(dot, "SLOW_DOT_EDGES", 3)
    drawn = draw(scored_circuit(), tmp_path / "c.svg", engine="dot")
    assert f"note: dot lays out {drawn['edges']} edges, which takes minutes" in (
        capsys.readouterr().err
    )

    def stuck(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], dot.DOT_TIMEOUT_S)

    monkeypatch.setattr(dot.subprocess, "run", stuck)
    with pytest.raises(CircuitxError, match=r"^dot took more than 600 s to lay out \d+ edges"):
        draw(scored_circuit(), tmp_path / "d.svg", engine="dot")
    assert not (tmp_path / "d.svg").exists()
