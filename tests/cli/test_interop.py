"""Graphs in and out in EAP-IG's (MIB's) format, through the command line (issue 25)."""

import errno
import json
import re
import subprocess
import sys

import pytest
from conftest import assert_one_line_error, run

from circuitx.builtin.hf import save_tl_legacy_attn_only, word_level_tokenizer
from circuitx.errors import CircuitxError
from circuitx.graph import edges_by_name, full_graph, layout_graph, select_edges
from circuitx.graph_files import read_graph, write_graph
from circuitx.layout import PositionLayout
from circuitx.names import parse_edge_name, parse_node
from circuitx.reference import read_reference
from circuitx.tasks import get_task, task_vocabulary
from circuitx.tasks.ioi import CLASS_EDGES, CLASSES


@pytest.fixture(scope="module")
def discovered(tmp_path_factory):
    path = tmp_path_factory.mktemp("interop") / "eap.json"
    result = run(
        "discover", "--task", "ioi", "--model", "planted-ioi", "--method", "eap",
        "--n-prompts", 8, "--faithfulness-prompts", 8, "--out", path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return path


def test_export_eap_ig_loads_back_equal_and_scores_alike(discovered, tmp_path):
    mib = tmp_path / "mib.json"
    result = run("export", discovered, "--format", "eap-ig", "--out", mib)
    assert result.exit_code == 0, result.output
    data = json.loads(mib.read_text())
    assert set(data) >= {"cfg", "nodes", "edges"}
    ours, theirs = read_graph(discovered), read_graph(mib)
    assert edges_by_name(theirs) == edges_by_name(ours)
    assert dict(theirs.nodes(data=True)) == dict(ours.nodes(data=True))
    scored = [
        json.loads(run("score", path, "--reference", "planted-ioi", "--json").stdout)
        for path in (discovered, mib)
    ]
    assert scored[0]["metrics"] == scored[1]["metrics"]
    assert scored[0]["metrics"]["node_auc"] == pytest.approx(1.0)
    # and as a reference: a circuit against itself
    itself = run("score", discovered, "--reference", mib, "--json")
    assert itself.exit_code == 0, itself.output
    metrics = json.loads(itself.stdout)["metrics"]
    assert metrics["node_precision"] == metrics["node_recall"] == 1.0


def test_compare_takes_a_hand_written_circuit_for_the_first_graphs_model(discovered, tmp_path):
    """A helper's trial: compare refused an edge list ("malformed graph file")."""
    kept = sorted(k for k, d in edges_by_name(read_graph(discovered)).items() if d["in_circuit"])
    listed = tmp_path / "mine.json"
    listed.write_text(json.dumps(kept[:3]))
    result = run("compare", discovered, listed, "--json")
    assert result.exit_code == 0, result.output
    edges = json.loads(result.stdout)["edges"]
    assert (edges["a"], edges["b"], edges["shared"]) == (len(kept), 3, 3)
    assert edges["b_in_a"] == 1.0


def test_an_eap_ig_file_of_another_tool_against_planted_is_one_line(discovered, tmp_path):
    """EAP-IG's own graph JSON records no task: --reference planted says so (and a
    planted model's name works)."""
    mib = tmp_path / "mib.json"
    assert run("export", discovered, "--format", "eap-ig", "--out", mib).exit_code == 0
    data = json.loads(mib.read_text())
    data.pop("circuitx_metadata")
    mib.write_text(json.dumps(data))
    result = run("score", mib, "--reference", "planted")
    assert_one_line_error(result, "--reference planted needs the graph's task, which this graph")
    assert run("score", mib, "--reference", "planted-ioi").exit_code == 0


def test_export_eap_ig_to_stdout_and_a_refused_suffix(discovered, tmp_path):
    result = run("export", discovered, "--format", "eap-ig")
    assert result.exit_code == 0 and json.loads(result.stdout)["cfg"]["n_layers"] == 5
    bad = run("export", discovered, "--format", "eap-ig", "--out", tmp_path / "x.graphml")
    assert bad.exit_code != 0 and "names a graphml file, but --format is eap-ig" in bad.stderr
    # a trial's: x.eap-ig was written, and no command could read it back
    for fmt, wanted in (("eap-ig", ".json"), ("auto-circuit", ".json"), ("graphml", ".graphml")):
        unread = run("export", discovered, "--format", fmt, "--out", tmp_path / f"x.{fmt}-graph")
        assert_one_line_error(unread, f"so give this {fmt} graph the extension {wanted}")
        assert not (tmp_path / f"x.{fmt}-graph").exists()
    assert run("export", discovered, "--format", "dot", "--out", tmp_path / "x.txt").exit_code == 0
    for picture in ("x.svg", "x.PNG"):  # a helper's trial: DOT text was written into x.svg
        result = run("export", discovered, "--format", "dot", "--out", tmp_path / picture)
        assert_one_line_error(result, "names a picture, and export writes DOT text: draw")
        assert not (tmp_path / picture).exists()


def ioi_classes(heads_as) -> dict:
    """IOI's published circuit as a class JSON (ACDC's and auto-circuit's way of writing
    official circuits)."""

    return {
        "classes": {cls: [heads_as(*h) for h in heads] for cls, heads in CLASSES.items()},
        "edges": [list(edge) for edge in CLASS_EDGES],
    }


@pytest.mark.parametrize(
    "heads_as", [lambda at, h: f"{at}.{h}", lambda at, h: f"a{at}.h{h}", lambda at, h: [at, h]]
)
def test_a_class_circuit_file_is_the_built_in_reference(tmp_path, heads_as):

    graph = full_graph(12, 12, True, task="ioi", model="gpt2")
    for i, data in enumerate(edges_by_name(graph).values()):
        data["score"] = ((i * 7919) % 1000) / 1000
    for i, node in enumerate(graph.nodes):
        graph.nodes[node]["score"] = ((i * 31) % 100) / 100
    path = tmp_path / "g.json"
    write_graph(graph, path)
    reference = tmp_path / "ioi-classes.json"
    reference.write_text(json.dumps(ioi_classes(heads_as)))
    scored = [
        json.loads(run("score", path, "--reference", spec, "--json").stdout)["metrics"]
        for spec in ("ioi", reference)
    ]
    assert scored[0] == scored[1] and scored[0]["node_auc"] is not None


@pytest.mark.parametrize(
    "classes, edges, message",
    [
        ({"movers": ["99.0"]}, [], "needs at least 100 layers"),
        ({"movers": ["9.9"]}, [["INPUT", "nobody", "q"]], "names no class 'nobody'"),
        ({"movers": ["9.9"]}, [["INPUT", "movers", "x"]], "inputs are letters of qkv"),
        ({"movers": ["nine"]}, [], 'a head is "9.9"'),
        ({}, [], "its classes list no heads"),
        ({"movers": []}, [], "its classes list no heads"),
        ({"movers": "9.9"}, [], "each class is a list of heads"),
        ({"movers": ["9.9"]}, [["movers", "OUTPUT", "x"]], "the output reads no q, k or v"),
        # a helper's trial: both were read as circuits with no head edge, in silence
        ({"movers": ["9.9"]}, [["OUTPUT", "movers"]], "INPUT only sends and OUTPUT only reads"),
        (
            {"late": ["9.0"], "early": ["0.1"]},
            [["late", "early", "q"]],
            "class edge late -> early is no edge of the model: no head of late runs before",
        ),
        ({"movers": ["9.9"]}, None, "has 'classes' but no 'edges' (a list of [sender class"),
        ({"movers": ["9.9"]}, "x", "'edges' must be a list"),
        ("x", [], "'classes' must be an object"),
    ],
)
def test_bad_class_circuits_are_one_line(tmp_path, classes, edges, message):
    path = tmp_path / "g.json"
    write_graph(full_graph(12, 12, True, task="ioi"), path)
    reference = tmp_path / "bad.json"
    written = {"classes": classes} if edges is None else {"classes": classes, "edges": edges}
    reference.write_text(json.dumps(written))
    result = run("score", path, "--reference", reference)
    assert result.exit_code != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_eap_ig_reference_naming_a_node_the_model_lacks(discovered, tmp_path):
    mib = tmp_path / "mib.json"
    run("export", discovered, "--format", "eap-ig", "--out", mib)
    data = json.loads(mib.read_text())
    data["nodes"]["a99.h0"] = True
    mib.write_text(json.dumps(data))
    result = run("score", discovered, "--reference", mib)
    assert result.exit_code != 0 and "node 'a99.h0' is not in a 5 x 4 model" in result.stderr


def test_export_eap_ig_notes_the_edges_eap_ig_would_prune(tmp_path):
    """MIB evaluates a circuit after EAP-IG's Graph.prune: the export says how many of
    the circuit's edges that leaves (a1.h0 reads no kept edge, so its edge goes)."""

    graph = full_graph(2, 2, True, task="ioi", method="eap", d_model=8)
    for data in edges_by_name(graph).values():
        data["score"] = 0.5
    select_edges(graph, ["input->a0.h1<v>", "a0.h1->logits", "a1.h0->logits"])
    write_graph(graph, tmp_path / "g.json")
    result = run("export", tmp_path / "g.json", "--format", "eap-ig", "--out", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        "note: 1 of the circuit's 3 edges lies on no path from input to logits "
        "(a1.h0->logits); EAP-IG's evaluate_graph prunes them first, so MIB counts 2"
    )
    assert run("export", tmp_path / "g.json", "--format", "json").stderr == ""


def auto_circuit_name(edge: str) -> str:
    """An edge as auto-circuit names it (A0.1->A7.3.K, MLP 3, Resid Start, Resid End)."""

    def node(name: str) -> str:
        kind, layer, head = parse_node(name)
        names = {"input": "Resid Start", "logits": "Resid End", "mlp": f"MLP {layer}"}
        return names.get(kind, f"A{layer}.{head}")

    sender, receiver, head_input = parse_edge_name(edge)
    return f"{node(sender)}->{node(receiver)}" + (f".{head_input.upper()}" if head_input else "")


def test_a_list_of_edge_names_is_a_reference_in_either_naming(tmp_path):
    """The built-in IOI reference's edges as a JSON list, named as circuitx and MIB name
    them or as auto-circuit does (its official circuits are edge sets), is a reference
    with exactly those edges."""

    builtin = get_task("ioi").reference("", 12, 12, True)
    kept = sorted(key for key, data in edges_by_name(builtin).items() if data["in_circuit"])
    ours, theirs = tmp_path / "ours.json", tmp_path / "auto-circuit.json"
    ours.write_text(json.dumps(kept))
    theirs.write_text(json.dumps([auto_circuit_name(edge) for edge in kept]))
    assert auto_circuit_name("input->a0.h1<q>") == "Resid Start->A0.1.Q"
    for path in (ours, theirs):
        reference = read_reference(str(path), 12, 12, True)
        edges = edges_by_name(reference)
        assert sorted(key for key, data in edges.items() if data["in_circuit"]) == kept
        ends = {end for key in kept for end in parse_edge_name(key)[:2]}
        assert {n for n, c in reference.nodes(data="in_circuit") if c} == ends
        roles = dict(reference.nodes(data="role"))  # the ends keep theirs; a list has none
        assert roles["input"] == "input" and roles["logits"] == "logits"
        assert roles["a9.h9"] is None


@pytest.mark.parametrize(
    "content, message",
    [
        (["A0.1->A99.3.K"], r"'A0.1->A99.3.K' \(a0.h1->a99.h3<k>\) is not an edge of a 2 x 2"),
        (["A0.1->Attn 3"], "'Attn 3' is not an auto-circuit node"),
        ([7], "7 is not an edge name"),
        (["a0.h1->a1.hx<k>"], r"reference edges.json: not a circuit node name: 'a1.hx'"),
        (["A0.1->A1.1"], r"without naming its input: .* \(A1.1.Q, .K or .V\) in a model made with"),
        ([], "its list of edges is empty"),
        (["input->a1.h1"], r"without naming the head's input: write input->a1.h1<q>, <k> or <v>"),
        ({"IOI_CIRCUIT": {}}, "JSON of none of the forms read"),
    ],
)
def test_bad_edge_lists_are_one_line(tmp_path, content, message):

    path = tmp_path / "edges.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CircuitxError, match=message) as caught:
        read_reference(str(path), 2, 2, True)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "text, said",
    [
        ('{"classes": {"NM": ["1.1"], "NM": ["1.0"]}, "edges": []}', "gives 'NM' twice"),
        ("", "it is empty"),  # a trial's: "Expecting value: line 1 column 1 (char 0)"
        ("<graphml></graphml>", "it holds XML, not JSON (GraphML? name it .graphml)"),
    ],
)
def test_a_reference_file_that_is_no_one_json_says_why(tmp_path, text, said):
    path = tmp_path / "classes.json"
    path.write_text(text)
    with pytest.raises(CircuitxError, match=f"^cannot read reference {path}: .*{re.escape(said)}"):
        read_reference(str(path), 2, 2, True)


def test_export_eap_ig_of_collapsed_positions_notes_the_graph_it_writes(tmp_path):
    """A new user's trial: with --collapse-positions the note counted the edges of the
    graph over positions, not of the components written. Two position edges of one
    component edge, both off any path, are one edge written."""

    layout = PositionLayout(2, 2, True, positions=("S", "END"), readout=("END",))
    graph = layout_graph(layout, task="ioi", method="eap", d_model=8)
    for data in edges_by_name(graph).values():
        data["score"] = 0.5
    kept = ["input@END->a0.h1@END<v>", "a0.h1@END->logits", "a0.h0@S->a1.h0@END<v>"]
    select_edges(graph, [*kept, "a0.h0@END->a1.h0@END<v>"])
    write_graph(graph, tmp_path / "p.json")
    out = tmp_path / "m.json"
    args = ["export", tmp_path / "p.json", "--format", "eap-ig", "--collapse-positions"]
    result = run(*args, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (
        "note: 1 of the circuit's 3 edges lies on no path from input to logits "
        "(a0.h0->a1.h0<v>); EAP-IG's evaluate_graph prunes them first, so MIB counts 2"
    )
    written = [k for k, d in edges_by_name(read_graph(out)).items() if d["in_circuit"]]
    assert len(written) == 3


def test_export_of_a_feature_graph_to_eap_ig_or_auto_circuit_writes_its_components(
    method_graphs, tmp_path
):
    """A helper's trial: the export was refused with "export the component graph", which
    no option of export does."""
    saved = tmp_path / "features.json"
    write_graph(method_graphs["transcoder-features"], saved)
    for fmt in ("eap-ig", "auto-circuit"):
        result = run("export", saved, "--format", fmt, "--out", tmp_path / f"{fmt}.json")
        assert result.exit_code == 0, result.output
        assert f"note: {fmt}'s graphs have no transcoder features" in result.stderr
        back = read_graph(tmp_path / f"{fmt}.json")
        assert not any(kind == "feature" for _, kind in back.nodes(data="kind"))
    with pytest.raises(CircuitxError, match="circuitx.graph.component_graph"):
        write_graph(method_graphs["transcoder-features"], tmp_path / "x.json", fmt="eap-ig")


def test_a_full_disk_under_stdout_is_one_line(discovered):
    """A helper's trial: `export ... > /dev/full` ended in a traceback."""
    for command in (["export", str(discovered), "--format", "json"], ["score", str(discovered)]):
        with open("/dev/full", "w") as full:
            done = subprocess.run(
                [sys.executable, "-m", "circuitx", *command],
                stdout=full, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        # score notes first that EAP's circuit has the planted nodes but is not faithful
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1] == "error: No space left on device"


def _raised(make_error):
    try:
        make_error()
    except Exception as error:  # noqa: BLE001 - the error itself is the test's subject
        return error
    raise AssertionError("nothing raised")


def _during(first: BaseException, then: BaseException):
    def make():
        try:
            raise first
        except type(first):
            raise then  # noqa: B904 - implicit context, as torch.save's RuntimeError has

    return make


def test_a_full_disk_under_a_library_is_the_systems_words():
    """A helper's trial: train-transcoders and a built-in model's first build on a full
    disk ended in a traceback: torch.save raises a RuntimeError during the OSError, and
    safetensors its own error naming the I/O error."""
    from circuitx.cli.common import _system_failure

    full = OSError(errno.ENOSPC, "No space left on device")
    torch_save = _during(full, RuntimeError("[enforce fail at inline_container.cc:672] ."))
    assert _system_failure(_raised(torch_save)) == "No space left on device"
    safetensors = RuntimeError("Error while serializing: I/O error: No space left on device")
    assert _system_failure(safetensors) == "No space left on device"
    # a bug met while handling an ordinary OSError stays a bug (a traceback)
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert _system_failure(_raised(_during(missing, KeyError("k")))) is None
    assert _system_failure(ValueError("x")) is None


def test_an_eap_ig_circuit_edge_whose_node_is_out_is_noted(discovered, tmp_path):
    """A helper's trial: an EAP-IG file keeping a0.h0->logits with a0.h0's in_graph false
    (a hand edit, or EAP-IG's graph written without its prune) scored without a word."""
    mib = tmp_path / "mib.json"
    assert run("export", discovered, "--format", "eap-ig", "--out", mib).exit_code == 0
    data = json.loads(mib.read_text())
    data["edges"]["a0.h0->logits"]["in_graph"] = True
    data["nodes"]["a0.h0"]["in_graph"] = False
    mib.write_text(json.dumps(data))
    said = "keeps 1 edge between nodes it does not keep (a0.h0->logits): they count as"
    scored = run("score", mib, "--reference", "planted-ioi")
    assert scored.exit_code == 0 and f"note: the graph {said}" in scored.stderr
    compared = run("compare", discovered, mib)
    assert compared.exit_code == 0 and f"note: the graph B {said}" in compared.stderr
    assert "between nodes" not in run("compare", discovered, discovered).stderr


def test_compare_notes_circuits_of_two_models(discovered, tmp_path):
    """A helper's trial: planted-ioi's circuit against planted-ioi-llama's (one shape)
    compared without a word."""
    other = read_graph(discovered)
    other.graph["model"] = "planted-ioi-llama"
    write_graph(other, tmp_path / "llama.json")
    said = "note: the circuits are of two models (planted-ioi, planted-ioi-llama): their"
    assert said in run("compare", discovered, tmp_path / "llama.json").stderr
    assert "two models" not in run("compare", discovered, discovered).stderr
    other.graph["model"] = read_graph(discovered).graph["model"]
    other.graph["task"] = "colored-objects"  # a trial compared two tasks' circuits unawares
    write_graph(other, tmp_path / "other_task.json")
    said = run("compare", discovered, tmp_path / "other_task.json").stderr
    assert "note: the circuits are of two tasks (ioi, colored-objects)" in said
    for name, digest in (("a", "1" * 64), ("b", "2" * 64)):  # t.csv and t.jsonl: task t
        other.graph.update(task="t", task_file=f"{name}/t.jsonl", task_file_sha256=digest)
        write_graph(other, tmp_path / f"{name}.json")
    said = run("compare", tmp_path / "a.json", tmp_path / "b.json").stderr
    assert "note: the circuits are of two task files named t whose bytes differ" in said
    assert "task files" not in run("compare", tmp_path / "a.json", tmp_path / "a.json").stderr


def test_compare_against_a_references_name_points_to_score(discovered):
    """A trial's `compare c.graphml planted-ioi` was told the graph file was not found."""
    for name in ("planted-ioi", "ioi"):
        assert_one_line_error(
            run("compare", discovered, name), f"`circuitx score GRAPH --reference {name}`"
        )


def test_compare_names_a_second_graph_it_cannot_read_a_graph_file(discovered, tmp_path):
    """A trial's `compare a.graphml cut.json` was told it could not read "reference"."""
    cut = tmp_path / "cut.json"
    cut.write_text('{"format": "circuitx-graph", "nodes": {')
    assert_one_line_error(run("compare", discovered, cut), f"cannot read graph file {cut}: ")


def test_an_empty_reference_is_one_line(discovered):
    """A trial's --reference '' was told ". is a directory, not a graph file"."""
    result = run("score", discovered, "--reference", "")
    assert_one_line_error(result, "--reference is empty")


def test_out_dev_stdout_redirected_takes_the_files_format(discovered, tmp_path):
    """usage.md's `--out /dev/stdout > g.dot`: the format is the redirect target's (a
    trial found every command refusing /dev/stdout's missing extension)."""
    for command, name, start in (
        (["export", str(discovered)], "g.dot", b"digraph"),
        (["draw", str(discovered)], "g.svg", b"<?xml"),
    ):
        with open(tmp_path / name, "wb") as target:
            done = subprocess.run(
                [sys.executable, "-m", "circuitx", *command, "--out", "/dev/stdout"],
                stdout=target, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (tmp_path / name).read_bytes().startswith(start)


def test_discover_out_pt_writes_eap_igs_file_or_refuses_before_any_work(tmp_path):
    """MIB takes EAP-IG's .pt; what it cannot hold is refused before the model runs (a
    node method's graph was refused after discovery, its work lost)."""
    out = tmp_path / "c.pt"
    result = run(
        "discover", "--task", "ioi", "--model", "planted-ioi", "--method", "eap",
        "--n-prompts", 4, "--no-faithfulness", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    graph = read_graph(out)
    assert graph.graph["method"] == "eap" and graph.graph["source_format"] == "eap-ig"
    assert any(d["in_circuit"] for d in edges_by_name(graph).values())
    scored = run("score", out, "--json")
    assert json.loads(scored.stdout)["metrics"]["node_auc"] == 1.0
    nodes = tmp_path / "nodes.pt"  # a node method's: MIB's --level node ranks its nodes
    result = run(
        "discover", "--task", "ioi", "--model", "planted-ioi", "--method", "activation-patching",
        "--n-prompts", 4, "--no-faithfulness", "--out", nodes,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "activation-patching scores nodes only: EAP-IG reads its node scores" in result.stderr
    scored = json.loads(run("score", nodes, "--json").stdout)["metrics"]
    assert scored["node_auc"] == 1.0 and scored["edge_auc"] is None
    refused = tmp_path / "x.pt"
    args = ("--method", "eap", "--positions", "named")
    result = run("discover", "--task", "ioi", "--model", "planted-ioi", *args, "--out", refused)
    assert_one_line_error(result, f"--out {refused}: EAP-IG's .pt holds a score for each")
    assert "a circuit over token positions has more" in result.stderr
    assert not refused.exists()
    directory = tmp_path / "attn-only"
    save_tl_legacy_attn_only(directory, word_level_tokenizer(task_vocabulary()), 2, 4, 32, seed=0)
    result = run(
        "discover", "--task", "ioi", "--model", directory, "--method", "eap", "--out", refused
    )
    assert_one_line_error(result, "EAP-IG's graphs always have MLPs, and this model has none")
    assert not refused.exists()


def test_a_reference_circuit_found_on_another_model_is_noted(discovered, tmp_path):
    """A helper's trial: planted IOI's circuit scored against planted-ioi-hard's (one
    shape) said nothing of the two models."""
    other = read_graph(discovered)
    other.graph["model"] = "planted-ioi-hard"
    write_graph(other, tmp_path / "hard.graphml")
    result = run("score", discovered, "--reference", tmp_path / "hard.graphml")
    assert result.exit_code == 0, result.output
    assert (
        "note: the graph is from planted-ioi and the reference is a circuit found on "
        "planted-ioi-hard, a model of the same shape" in result.stderr
    )
    assert "circuit found on" not in run("score", discovered, "--reference", discovered).stderr
