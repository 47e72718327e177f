import json
import os
import re

import networkx as nx
import pytest
import torch
from conftest import assert_one_line_error, run, scored_circuit, stderr_lines

import circuitx as cx
from circuitx.cli.discover import metric_value, selection_text
from circuitx.discovery import run_warnings
from circuitx.graph_files import read_graph, write_graph
from circuitx.methods import METHODS, unused_options
from circuitx.scoring import METRIC_NAMES
from circuitx.tasks import get_task

DISCOVER = ["discover", "--task", "ioi", "--method", "activation-patching"]


def discover(*args):
    """``circuitx discover --task ioi --method activation-patching`` with more arguments."""
    return run(*DISCOVER, *args)


@pytest.fixture(scope="module")
def discovered(dir_12x12, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "x.graphml"
    result = discover(
        "--model", dir_12x12, "--reference", "ioi", "--n-prompts", 4, "--out", out, "--json"
    )
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), out


@pytest.fixture(scope="module")
def discovered_graph(discovered):
    """The discovered graph as read from its file (read once: 1.3 s); tests that change it
    take a copy."""
    return read_graph(discovered[1])


def test_discover_prints_the_json_summary(discovered, discovered_graph):
    summary, out = discovered
    assert summary["graph"] == str(out)  # where the graph was written
    assert {
        "task",
        "method",
        "model",
        "seed",
        "runtime_s",
        "n_nodes_in_circuit",
        "n_edges_in_circuit",
    } <= set(summary)
    assert (
        summary["task"] == "ioi"
        and summary["method"] == "activation-patching"
        and summary["reference"] == "ioi"
    )
    metrics = summary["metrics"]
    for key in METRIC_NAMES:
        if not key.startswith("edge_auc"):
            assert isinstance(metrics[key], float), key
    # node-level method: no edge scores, none invented
    assert metrics["edge_auc"] is None and metrics["edge_auc_pessimistic"] is None
    assert summary["runtime_s"] > 0
    assert 0.0 <= summary["clean_accuracy"] <= 1.0
    # a helper's trial: a bfloat16 result could not be told from a float32 one
    assert (summary["dtype"], summary["device"]) == ("float32", "cpu")
    assert discovered_graph.graph["dtype"] == "float32"
    assert summary["positions"] is None and summary["position_aliases"] is None


def test_a_run_over_positions_names_its_groups_in_the_table_and_json():
    # a helper's trial: neither said that the circuit's nodes are per position
    args = ["--model", "planted", "--method", "eap", "--n-prompts", 4, "--no-faithfulness"]
    named = discover(*args, "--positions", "named")
    assert named.exit_code == 0, named.stderr
    assert "│ positions          │ IO, S1, S1+1, S2, END, other " in named.stdout
    every = discover(*args, "--task", "greater-than", "--positions", "all", "--json")
    summary = json.loads(every.stdout)
    assert summary["positions"] == [str(i) for i in range(13)]
    assert summary["position_aliases"] == {"NOUN": "2", "XX1": "7", "YY": "8", "END": "12"}


def test_networkx_reads_back_nodes_edges_and_scores(discovered, discovered_graph):
    summary, out = discovered
    raw = nx.read_graphml(out)
    ours = discovered_graph
    assert (
        set(raw.nodes) == set(ours.nodes)
        and raw.number_of_edges() == ours.number_of_edges() == 32491
    )
    for node, data in ours.nodes(data=True):
        assert raw.nodes[node].get("score") == data["score"]
    assert (
        sum(d["in_circuit"] for _, d in raw.nodes(data=True) if d["kind"] in ("head", "mlp"))
        == summary["n_nodes_in_circuit"]
    )


def test_score_command_agrees_with_discover(discovered):
    summary, out = discovered
    result = run("score", out, "--reference", "ioi", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"] == summary["metrics"]
    table = run("score", out, "--reference", "ioi").stdout
    node_row = next(line for line in table.splitlines() if line.startswith("│ node"))
    cells = [cell.strip() for cell in node_row.strip("│ ").split("│")]
    assert "pessimistic" in table and "as misses" in table
    assert cells[-1] == f"{summary['metrics']['node_auc_pessimistic']:.3f}"


def test_score_takes_the_reference_the_graph_was_discovered_with(
    discovered, discovered_graph, tmp_path
):
    """A helper's trial: a graph discovered with --reference ioi on its own 12 x 12 model
    scored "no reference" by default; auto now means the reference discovery was given."""
    summary, out = discovered  # discovered with --reference ioi
    assert discovered_graph.graph["reference_spec"] == "ioi"
    result = run("score", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"] == summary["metrics"]
    assert cx.score(out)["reference"] == "ioi"
    moved = discovered_graph.copy()  # a reference file discovery was given, since removed
    moved.graph["reference_spec"] = str(tmp_path / "gone.json")
    write_graph(moved, tmp_path / "moved.json")
    assert_one_line_error(
        run("score", tmp_path / "moved.json"), "discovered against the reference file"
    )


def test_a_reference_keeping_an_edge_whose_ends_it_drops_is_noted(
    discovered, discovered_graph, tmp_path
):
    """A helper's trial: a hand-edited reference with an edge kept between nodes it does
    not keep scored without a word (ACDC's greater-than reference has such edges, kept
    as published, and is not noted)."""
    summary, out = discovered
    reference = discovered_graph.copy()
    for node in reference.nodes:
        reference.nodes[node]["in_circuit"] = node in ("input", "logits", "a9.h9")
    for *_, data in reference.edges(data=True):
        data["in_circuit"] = False
    reference.edges["a0.h0", "a1.h0", "a0.h0->a1.h0<q>"]["in_circuit"] = True
    write_graph(reference, tmp_path / "edited.json")
    result = run("score", out, "--reference", tmp_path / "edited.json")
    assert result.exit_code == 0, result.stderr
    assert (
        "note: the reference keeps 1 edge between nodes it does not keep (a0.h0->a1.h0<q>)"
        in result.stderr
    )
    assert "between nodes" not in run("score", out, "--reference", "greater-than").stderr


def test_score_says_why_a_level_has_no_auc(discovered, discovered_graph, tmp_path):
    """A node-level method's graph has no edge scores at all, said nowhere; one unscored
    node of a scored level is noted."""
    _, out = discovered
    graph = discovered_graph.copy()
    assert "ROC AUC" not in run("score", out, "--reference", "ioi").stderr
    graph.nodes["a0.h0"]["score"] = None
    write_graph(graph, tmp_path / "one-unscored.json")
    result = run("score", tmp_path / "one-unscored.json", "--reference", "ioi", "--json")
    assert json.loads(result.stdout)["metrics"]["node_auc"] is None
    assert "note: 1 of the graph's 156 nodes has no score, so it has no node ROC AUC" in (
        result.stderr
    )
    everything = discovered_graph.copy()  # a reference with no node outside its circuit
    for node in everything.nodes:
        everything.nodes[node]["in_circuit"] = True
    write_graph(everything, tmp_path / "everything.json")
    result = run("score", out, "--reference", tmp_path / "everything.json", "--json")
    assert json.loads(result.stdout)["metrics"]["node_auc"] is None
    said = "note: the reference puts every node of the graph in its circuit, so there is no node"
    assert stderr_lines(result.stderr) == [f"{said} ROC AUC (it needs nodes on both sides)"]
    assert json.loads(result.stdout)["notes"] == [  # --json carries them too
        f"{said.removeprefix('note: ')} ROC AUC (it needs nodes on both sides)"
    ]


def test_auto_reference_on_another_model_scores_nothing(dir_12x12):
    args = ["--model", dir_12x12, "--n-prompts", 2, "--top-k", 5, "--no-faithfulness"]
    result = discover(*args, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["reference"] is None and set(summary["metrics"].values()) == {None}
    assert summary["n_nodes_in_circuit"] == 5
    lines = result.stderr.strip().splitlines()  # a random model may do the task backwards
    assert sum(line.startswith("note: no reference: ") for line in lines) == 1  # as draw's
    assert all(
        "no reference" in line or "does not do this task" in line or "noise of its size" in line
        for line in lines
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["discover", "--out", ""], "--out is empty: name a file"),
        (["discover", "--draw", " "], "--draw is empty: name a file"),
        (["export", "GRAPH", "--format", "dot", "--out", ""], "--out is empty: name a file"),
        (["leaderboard", "--tasks", "ioi", "--methods", "eap", "--out", ""], "--out is empty"),
        (["discover", "--cache-dir", ""], "--cache-dir is empty: name a directory"),
        (["score", "GRAPH", "--cache-dir", " "], "--cache-dir is empty: name a directory"),
    ],
)
def test_an_empty_output_path_is_refused_before_any_work(
    args, message, tiny_dir, tmp_path, monkeypatch
):
    """A new user's trial: an empty --out (an unset shell variable) ran the discovery and
    wrote nothing, or (leaderboard) wrote the results into the working directory; an empty
    --cache-dir built the models there."""
    graph = tmp_path / "g.json"
    assert discover("--model", tiny_dir, "--n-prompts", 2, "--out", graph).exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    args = [str(graph) if a == "GRAPH" else a for a in args]
    if args[0] not in ("export", "score"):
        args += ["--model", str(tiny_dir), "--n-prompts", "2"]
        args += ["--task", "ioi", "--method", "eap"] if args[0] == "discover" else ["--seeds", "1"]
    assert_one_line_error(run(*args), message)
    assert list(work.iterdir()) == []


def test_same_seed_same_output_file(tiny_dir, tmp_path):
    texts = []
    for name in ("a.json", "b.json"):
        result = discover(
            "--model", tiny_dir, "--n-prompts", 3, "--seed", 5, "--out", tmp_path / name
        )
        assert result.exit_code == 0, result.stderr
        data = json.loads((tmp_path / name).read_text())
        for timing in ("runtime_s", "discovery_s", "faithfulness_s"):
            data["metadata"].pop(timing)
        texts.append(data)
    assert texts[0] == texts[1]


def test_table_output(tiny_dir):
    result = discover("--model", tiny_dir, "--n-prompts", 2)
    assert result.exit_code == 0, result.stderr
    assert "nodes kept" in result.stdout and "node ROC AUC" in result.stdout
    # a helper's trial: the table did not say how the circuit was selected
    assert "│ |node score| >= 0.02 " in result.stdout
    result = discover("--model", tiny_dir, "--n-prompts", 2, "--top-k", 3, "--no-faithfulness")
    assert "│ the top 3 nodes by |score| " in result.stdout
    half = discover(
        "--model", tiny_dir, "--n-prompts", 2, "--dtype", "bfloat16", "--no-faithfulness"
    )
    assert half.stdout.startswith(f"activation-patching on ioi ({tiny_dir}, bfloat16)")


def test_the_selection_in_words():
    summary = {"method": "eap", "top_k": None, "threshold": 0.05}
    assert selection_text(summary) == "|edge score| >= 0.05"
    assert selection_text({**summary, "top_k": 19}) == "the top 19 edges by |score|"
    assert selection_text({**summary, "threshold": None}) == "eap's own search"


def test_export_formats(discovered, discovered_graph, tmp_path):
    _, out = discovered
    # a helper's trial: --format was required though --out's suffix says it
    assert run("export", out, "--out", tmp_path / "told.dot").exit_code == 0
    assert (tmp_path / "told.dot").read_text().startswith("digraph circuit {")
    assert_one_line_error(run("export", out), "give --format (graphml, json, dot, eap-ig")
    assert_one_line_error(
        run("export", out, "--out", tmp_path / "x.txt"),
        "use .graphml, .json, .dot or EAP-IG's .pt, or give --format",
    )
    with pytest.raises(cx.CircuitxError, match="unknown graph format 'xml'; choose from graphml"):
        write_graph(discovered_graph, tmp_path / "w.json", fmt="xml")
    # click's list of choices, one comma between them (it was ",,")
    assert_one_line_error(
        run("discover", "--task", "ioi"), "Choose from: activation-patching, path"
    )
    result = run("export", out, "--format", "dot")
    assert result.exit_code == 0 and result.stdout.startswith("digraph circuit {")
    result = run("export", out, "--format", "json", "--out", tmp_path / "x.json")
    assert result.exit_code == 0, result.stderr
    back = read_graph(tmp_path / "x.json")
    assert [d["score"] for _, d in back.nodes(data=True)] == [
        d["score"] for _, d in discovered_graph.nodes(data=True)
    ]


def test_listings():
    for command, name in (
        ("tasks", "ioi"),
        ("methods", "activation-patching"),
        ("models", "random-12x12"),
    ):
        result = run(command, "--json")
        assert result.exit_code == 0, result.stderr
        assert name in [row["name"] for row in json.loads(result.stdout)]
        assert name in run(command).stdout


def test_the_methods_table_names_flags_and_each_default_circuit(monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # a row to a line
    lines = run("methods").stdout.splitlines()
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│")}
    assert "--ig-steps 5, --ig-mode inputs" in rows["eap-ig"]
    assert "--n-codes (none)" in rows["sae"] and "n_codes" not in rows["sae"]
    assert "|score| >= 0.02" in rows["eap"] and "│ yes " in rows["eap"]
    assert "the 1 - --sparsity share of the edges" in rows["edge-pruning"]
    assert "|score| >= --tau" in rows["acdc"] and "│ - " in rows["activation-patching"]
    assert "--weight-form folded" in rows["cdt"]
    # a helper's trial: methods --json gave edge pruning a default threshold of 0.5, which
    # its default circuit (a size) does not use
    listed = {row["name"]: row for row in json.loads(run("methods", "--json").stdout)}
    assert listed["edge-pruning"]["default_threshold"] is None
    assert listed["eap"]["default_threshold"] == 0.02


def test_the_methods_listing_says_which_score_edges(method_graphs):
    """A helper's trial: the table listed the transcoder method as "node" and nothing
    more, yet its graph scores every edge and exports to EAP-IG, where HISP's and AtP*'s,
    also "node", are refused."""
    listed = {row["name"]: row for row in json.loads(run("methods", "--json").stdout)}
    for name, method in METHODS.items():
        graph = method_graphs[name]
        scored = [score for *_, score in graph.edges(data="score") if score is not None]
        assert bool(scored) == method.scores_edges == listed[name]["scores_edges"], name
    assert {m for m, method in METHODS.items() if method.scores_edges} == {
        "path-patching", "cdt", "sae", "transcoder", "acdc", "eap", "eap-ig", "edge-pruning"
    }  # fmt: skip


@pytest.mark.parametrize(
    "args, pattern",
    [
        (
            ["discover", "--task", "nope", "--method", "activation-patching"],
            "unknown task 'nope'; choose from ioi",
        ),
        (["discover", "--task", "ioi", "--method", "nope"], "Invalid value for '--method': 'nope'"),
        ([*DISCOVER, "--model", "./no/such/model"], "model directory not found"),
        ([*DISCOVER, "--model", "nobody/nothing"], "Hugging Face hub"),
        ([*DISCOVER, "--metric", "nope"], "task ioi has no metric 'nope'"),
        ([*DISCOVER, "--reference", "colored-objects"], "on task ioi it is this run's own"),
        ([*DISCOVER, "--n-prompts", "0"], "--n-prompts"),
        ([*DISCOVER, "--seed", "-2"], "-2 is not in the range 0<=x<=4294967295"),
        ([*DISCOVER, "--seed", "1.5"], "'1.5' is not an integer."),  # "integer range"
        ([*DISCOVER, "--threshold", "abc"], "'abc' is not a number."),
        (["score", "/dev/null"], "/dev/null is not a regular file, so not a graph file"),
        ([*DISCOVER, "--threshold", "0.1", "--top-k", "3"], "not both"),
        ([*DISCOVER, "--out", "/no/such/dir/x.graphml"], "output directory does not exist"),
        ([*DISCOVER, "--out", "x.txt"], "cannot tell the graph format"),
        (["score", "/no/such/graph.graphml"], "graph file not found"),
        (["export", "/no/such/graph.json", "--format", "dot"], "graph file not found"),
        (["frobnicate"], "No such command"),
        ([*DISCOVER, "--out", "/proc/x.graphml"], "cannot write to /proc"),
        ([*DISCOVER, "--out", "/dev/full"], "not a regular file"),
        ([*DISCOVER, "--cache-dir", "/dev/null/cache"], "/dev/null is not one"),
        (["score", "/no/such.json", "--reference", "none"], "score needs a reference"),
        (["discover", "--task", "ioi"], "Missing option '--method'. Choose from: activation-"),
        (
            [*DISCOVER, "--cache-dir", "/proc/cache"],
            "cannot make /proc/cache in /proc: it takes no new files",
        ),
        (["score", "/no/such/graph.json", "--cache-dir", "/proc/c"], "cannot make /proc/c"),
        ([*DISCOVER, "--threshold", "nan"], "--threshold must be a finite number"),
        ([*DISCOVER, "--threshold", "inf"], "--threshold must be a finite number"),
        (["discover", "--task", "ioi", "--method", "acdc", "--tau", "nan"], "finite number"),
        ([*DISCOVER, "--model", "plantd"], "unknown model 'plantd'; did you mean planted?"),
        ([*DISCOVER, "--threads", "0"], "--threads"),
        ([*DISCOVER, "--threads", "99999999999"], "not in the range 1<=x<=1024"),
        ([*DISCOVER, "--seed", str(2**64)], "is not in the range 0<=x<=4294967295"),
        ([*DISCOVER, "--backup-rounds", "1000"], "1000 is not in the range 0<=x<=100"),
        ([*DISCOVER, "--no-faithfulness", "--faithfulness-prompts", "3"], "give one of them"),
        (
            ["discover", "--task", "ioi", "--method", "eap-ig", "--ig-steps", str(10**20)],
            "not in the range 1<=x<=1000000",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, pattern):
    assert_one_line_error(run(*args), pattern)


def test_export_refuses_a_format_its_file_name_contradicts(discovered, tmp_path):
    _, out = discovered
    result = run("export", out, "--format", "json", "--out", tmp_path / "y.graphml")
    assert_one_line_error(result, "names a graphml file, but --format is json")
    assert list(tmp_path.iterdir()) == []


def test_an_output_path_that_is_an_input_file_is_refused_and_the_file_kept(discovered, tmp_path):
    _, graph = discovered
    tasks = tmp_path / "pairs.jsonl"
    tasks.write_text(json.dumps({"clean": "a b", "corrupted": "a c", "answer": " b"}) + "\n")
    for args, option in (
        (["--task", tasks, "--out", tasks], "--task"),
        (["--task", "ioi", "--reference", graph, "--out", graph], "--reference"),
        (["--task", "ioi", "--reference", graph, "--draw", graph], "--reference"),
    ):
        before = open(args[-1], "rb").read()
        result = run("discover", "--method", "eap", "--model", "planted-ioi", *args)
        assert_one_line_error(result, f"is the {option} file: writing there would replace it")
        assert open(args[-1], "rb").read() == before


def test_export_onto_its_own_input_is_refused_and_the_file_kept(discovered_graph, tmp_path):
    """Found by a new user's trial: export --out GRAPH replaced the graph it read."""
    copy = tmp_path / "self.json"
    write_graph(discovered_graph, copy)
    before = copy.read_bytes()
    result = run("export", copy, "--format", "eap-ig", "--out", copy)
    assert_one_line_error(result, "is the GRAPH file: writing there would replace it")
    assert copy.read_bytes() == before


@pytest.mark.parametrize(
    "name, fmt", [("x.json", "dot"), ("y.graphml", "json"), ("y.dot", "eap-ig")]
)
def test_write_graph_refuses_a_format_its_file_name_contradicts(tmp_path, name, fmt):
    """As export does: the file would not read back as what its name says."""
    from circuitx.errors import CircuitxError

    graph = scored_circuit()
    with pytest.raises(CircuitxError, match=f"names a .* file, but fmt is {fmt}"):
        write_graph(graph, tmp_path / name, fmt=fmt)
    assert list(tmp_path.iterdir()) == []
    write_graph(graph, tmp_path / "z.xml", fmt="graphml")  # .xml names GraphML
    assert read_graph(tmp_path / "z.xml").number_of_edges() > 0


def test_an_output_directory_is_refused_before_any_work(tmp_path):
    assert_one_line_error(discover("--model", "nowhere/at-all", "--out", tmp_path), "directory")


def test_faithfulness_can_be_skipped_and_the_timings_are_split(tiny_dir):
    measured = json.loads(discover("--model", tiny_dir, "--n-prompts", 3, "--json").stdout)
    skipped = discover("--model", tiny_dir, "--n-prompts", 3, "--no-faithfulness", "--json")
    assert skipped.exit_code == 0, skipped.stderr
    summary = json.loads(skipped.stdout)
    assert summary["faithfulness"] is None and summary["cpr"] is None
    assert summary["faithfulness_s"] is None and summary["discovery_s"] > 0
    assert summary["runtime_s"] == summary["discovery_s"]
    assert measured["faithfulness_s"] > 0 and measured["faithfulness"] is not None
    total = measured["discovery_s"] + measured["faithfulness_s"]
    assert measured["runtime_s"] == pytest.approx(total)
    # a helper's trial: 23 s of timings in a run of 78 s; the rest is loading and writing
    assert measured["total_s"] > total
    table = discover("--model", tiny_dir, "--n-prompts", 3, "--no-faithfulness").stdout
    assert re.search(r"│ runtime +│ [0-9.]+ s discovery; [0-9.]+ s in all", table), table


def test_threads_sets_torchs_thread_count(tiny_dir):
    before = torch.get_num_threads()
    try:
        result = discover("--model", tiny_dir, "--n-prompts", 2, "--threads", 1, "--json")
        assert result.exit_code == 0, result.stderr
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_top_k_beyond_the_graph_is_noted(tiny_dir):
    result = discover("--model", tiny_dir, "--n-prompts", 2, "--top-k", 999999, "--json")
    assert result.exit_code == 0, result.stderr
    # a helper's trial: notes and warnings on stderr did not all say which they were
    assert "note: --top-k 999999 is at least the graph's" in result.stderr
    assert json.loads(result.stdout)["n_nodes_in_circuit"] == json.loads(result.stdout)["n_nodes"]
    # a helper's trial: over positions the note counted the components (25), not the
    # graph's 150 nodes, and said a circuit of 30 of 150 kept them all
    over = ["--task", "ioi", "--method", "activation-patching", "--model", "planted-ioi"]
    over += ["--positions", "named", "--n-prompts", 4, "--no-faithfulness"]
    assert "is at least" not in run("discover", *over, "--top-k", 30).stderr
    assert "at least the graph's 150 nodes" in run("discover", *over, "--top-k", 150).stderr


def test_a_budget_under_one_prompts_need_is_warned_of():
    # a helper's trial: an impossible --max-memory ran over it without a word
    args = ["--model", "planted", "--n-prompts", 3, "--no-faithfulness", "--json"]
    result = discover(*args, "--max-memory", "1M")  # one prompt takes about 6.6 MiB
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["prompt_parts"] == 3 and summary["part_memory"] > summary["max_memory"]
    said = [w for w in summary["warnings"] if "over the memory budget of 1 MiB" in w]
    assert said and said[0] in result.stderr
    # a trial's: parts the budget cannot keep are made again at every sweep, several
    # times slower (ACDC 11x), and nothing said so
    assert summary["resident_parts"] < summary["prompt_parts"]
    assert any(
        w.startswith(f"the memory budget kept {summary['resident_parts']} of the 3 prompt parts")
        for w in summary["warnings"]
    )
    roomy = json.loads(discover(*args).stdout)
    assert not any("memory budget" in w for w in roomy["warnings"])
    assert roomy["resident_parts"] == roomy["prompt_parts"] == 1


def test_an_empty_circuit_and_too_few_prompts_are_warned_of():
    result = run(
        "discover", "--task", "tracr", "--model", "tracr-reverse", "--method", "eap",
        "--n-prompts", 20, "--no-faithfulness", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_prompts"] == 6 and summary["n_nodes_in_circuit"] == 0
    said = "the task has 6 prompt pairs: all of them ran (--n-prompts is 20)"
    assert said in summary["warnings"] and said in result.stderr
    assert "no component is in the circuit: every score is under 1e-06" in result.stderr
    assert "eap takes the gradient of l2 at the clean run" in result.stderr
    assert summary["largest_score"] < 1e-6
    result = run(
        "discover", "--task", "tracr", "--model", "tracr-reverse", "--method", "eap-ig",
        "--threshold", 1e6, "--no-faithfulness",
    )  # fmt: skip
    assert "no component is in the circuit: every score is below the threshold" in result.stderr


def test_a_gradient_at_the_clean_run_on_a_flat_metric_is_warned_of_whatever_it_keeps():
    """HISP divides its scores by each layer's norm, so KL's rounding-level gradients at
    the clean run become scores near 1 and a circuit: the warning must not wait for an
    empty circuit (found by a new user's trial)."""
    args = ["discover", "--task", "ioi", "--model", "planted-ioi", "--n-prompts", 4]
    args += ["--metric", "kl", "--no-faithfulness", "--json"]
    result = run(*args, "--method", "hisp")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["n_nodes_in_circuit"] > 0 and summary["largest_score"] > 0.5
    said = "hisp takes the gradient of kl at the clean run, its optimum, where it is flat"
    (warning,) = [warning for warning in summary["warnings"] if said in warning]
    advice = warning.partition("(use eap-ig")[2]  # the task's own metrics (a trial: tracr's
    for metric in ("logit-diff", "prob-diff", "log-prob"):  # advice named ones it refuses)
        assert (metric in advice) == (metric in get_task("ioi").metrics), metric
    measured = ("--faithfulness-prompts", 4, "--json", "--method", "hisp")
    logit_diff = run(*args[:-4], *measured)
    (note,) = json.loads(logit_diff.stdout)["warnings"]  # its gate's, under corrupted
    assert note.startswith("hisp gates each node toward zero whatever --ablation is")


def test_a_graph_name_that_is_not_utf8_is_written_and_shown(tiny_dir, tmp_path):
    # found by the fuzz test: the table's "graph" row could not be printed after the run
    out = tmp_path / os.fsdecode(b"\xff.json")
    result = discover("--model", tiny_dir, "--n-prompts", 2, "--out", out)
    assert result.exit_code == 0, result.stderr
    read_graph(out)


def test_malformed_graph_file(tmp_path):
    bad = tmp_path / "bad.graphml"
    bad.write_text("<graphml><oops")
    assert_one_line_error(run("score", bad), "malformed graph file")
    assert_one_line_error(run("export", bad, "--format", "json"), "malformed graph file")


def test_reference_on_a_model_too_small(tiny_dir, tmp_path):
    result = discover("--model", tiny_dir, "--reference", "ioi", "--out", tmp_path / "x.graphml")
    assert_one_line_error(result, "needs at least 12 layers x 12 heads")
    assert not (tmp_path / "x.graphml").exists()


def test_unknown_reference(tiny_dir):
    result = discover("--model", tiny_dir, "--reference", "nothing-like-this")
    assert_one_line_error(result, "unknown reference")


def test_score_with_auto_reference_and_no_paper_model(discovered_graph, tmp_path):
    graph = discovered_graph.copy()  # as if discovered with --reference auto
    del graph.graph["reference_spec"]
    write_graph(graph, tmp_path / "auto.json")
    assert_one_line_error(run("score", tmp_path / "auto.json"), "no reference")


@pytest.mark.parametrize("spec", ["auto", "planted"])
def test_score_says_the_graphs_model_directory_is_gone(discovered_graph, tmp_path, spec):
    """A helper's trial: a build-tracr directory moved, `score` said the tracr reference
    fits tracr-reverse only, not that the directory that shipped its truth was gone."""
    graph = discovered_graph.copy()
    del graph.graph["reference_spec"]
    graph.graph["model"] = str(tmp_path / "moved")
    write_graph(graph, tmp_path / "g.json")
    result = run("score", tmp_path / "g.json", "--reference", spec)
    assert_one_line_error(result, f"the graph's model directory {tmp_path / 'moved'} is not there")


def test_a_planted_reference_of_another_shape_is_refused_before_its_model_is_built(
    discovered, tmp_path
):
    """A helper's trial: scoring a 2-layer graph against --reference planted-ioi built the
    planted model first (a first use), then refused on shape."""
    cache = tmp_path / "cache"
    result = run("score", discovered[1], "--reference", "planted-ioi", "--cache-dir", cache)
    assert_one_line_error(
        result, "different model shapes (graph: 12 layers x 12 heads; reference: 5 layers"
    )
    assert not cache.exists()


def discover_task(task, *args):
    return run("discover", "--task", task, "--method", "activation-patching", *args)


@pytest.mark.parametrize("task", ["ioi", "greater-than", "docstring"])
def test_discover_with_each_published_reference(task, dir_12x12):
    result = discover_task(
        task, "--model", dir_12x12, "--reference", task, "--n-prompts", 3, "--top-k", 10,
        "--no-faithfulness", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["task"] == task and summary["reference"] == task
    assert isinstance(summary["metrics"]["node_auc"], float)
    assert summary["overlap"]["nodes"]["a"] == 10


def test_colored_objects_reference_is_the_ioi_circuit_on_the_same_model(tiny_dir, tmp_path):
    common = ["--model", tiny_dir, "--n-prompts", 3, "--top-k", 4, "--seed", 2]
    result = discover_task(
        "colored-objects",
        *common,
        "--reference",
        "colored-objects",
        "--json",
        "--out",
        tmp_path / "co.graphml",
    )
    assert result.exit_code == 0, result.stderr
    assert "discovering the ioi circuit" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["reference"] == "ioi circuit found by activation-patching"
    ioi = discover_task("ioi", *common, "--out", tmp_path / "ioi.graphml")
    assert ioi.exit_code == 0, ioi.stderr
    compared = run("compare", tmp_path / "co.graphml", tmp_path / "ioi.graphml", "--json")
    assert compared.exit_code == 0, compared.stderr
    compared = json.loads(compared.stdout)
    assert summary["overlap"] == {k: v for k, v in compared.items() if k not in ("a", "b", "notes")}
    assert compared["notes"] == ["the circuits are of two tasks (colored-objects, ioi)"]
    assert summary["metrics"]["node_precision"] == summary["overlap"]["nodes"]["a_in_b"]
    assert "heads" in run("compare", tmp_path / "co.graphml", tmp_path / "ioi.graphml").stdout
    assert_one_line_error(
        run("score", tmp_path / "co.graphml", "--reference", "colored-objects"),
        "pass --reference FILE",
    )


@pytest.mark.parametrize(
    "task, pattern",
    [
        ("greater-than", "needs at least 12 layers x 12 heads"),
        ("docstring", "needs at least 4 layers x 7 heads"),
    ],
)
def test_published_reference_on_a_model_too_small(task, pattern, tiny_dir):
    assert_one_line_error(discover_task(task, "--model", tiny_dir, "--reference", task), pattern)


@pytest.mark.parametrize("task", ["greater-than", "docstring", "colored-objects"])
def test_auto_reference_off_the_paper_model_gives_null_metrics(task, tiny_dir):
    result = discover_task(task, "--model", tiny_dir, "--n-prompts", 2, "--top-k", 3, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["reference"] is None and set(summary["metrics"].values()) == {None}
    assert "no reference" in result.stderr


def test_tasks_list_default_model_and_metric():
    from circuitx.models import HUB_ALIASES

    rows = {row["name"]: row for row in json.loads(run("tasks", "--json").stdout)}
    assert list(rows) == ["ioi", "greater-than", "docstring", "colored-objects", "tracr"]
    assert {name: (row["default_model"], row["default_metric"]) for name, row in rows.items()} == {
        "ioi": ("gpt2", "logit-diff"),
        "greater-than": ("gpt2", "prob-diff"),
        "docstring": ("attn-only-4l", "logit-diff"),
        "colored-objects": ("gpt2-medium", "logit-diff"),
        "tracr": ("tracr-reverse", "l2"),
    }
    for name, row in rows.items():
        if name != "tracr":  # the tracr models are built-in
            assert HUB_ALIASES[row["default_model"]] == row["paper_model"]
    # what --positions named places nodes at (a helper's trial found them nowhere)
    assert rows["ioi"]["positions"] == ["IO", "S1", "S1+1", "S2", "END"]
    assert rows["ioi"]["corruptions"] == ["abc", "s2_io_flip"]
    table = run("tasks").stdout
    assert "attn-only-4l" in table and "prob-diff" in table and "S1+1" in table


def test_default_model_is_the_tasks_paper_model():
    result = discover_task("docstring")  # the hub is offline in tests
    assert_one_line_error(result, "cannot load 'attn-only-4l'")


def test_corruption_option(tiny_dir):
    result = discover_task(
        "docstring",
        "--model",
        tiny_dir,
        "--corruption",
        "random_doc",
        "--n-prompts",
        2,
        "--top-k",
        2,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["corruption"] == "random_doc"
    assert_one_line_error(discover_task("ioi", "--corruption", "random_doc"), "no corruption")


def test_compare_needs_one_model_shape(discovered, tiny_dir, tmp_path):
    _, out = discovered
    small = discover_task(
        "ioi", "--model", tiny_dir, "--n-prompts", 2, "--out", tmp_path / "s.json"
    )
    assert small.exit_code == 0, small.stderr
    assert_one_line_error(run("compare", out, tmp_path / "s.json"), "different model shapes")


def test_circuitx_alone_shows_its_help():
    result = run()
    assert result.exit_code == 2
    assert result.stderr.startswith("Usage: ") and "error:" not in result.stderr
    assert "discover" in result.stderr


def test_a_model_that_does_not_do_the_task_is_warned_about():
    """The corrupted prompts scoring at least as high as the clean ones (a random model,
    the wrong task), or barely lower, is said; a model that does the task is not warned
    about."""
    summary = {"n_prompts": 10, "n_nodes_in_circuit": 3, "metric": "logit-diff"}
    backward = run_warnings({**summary, "clean_metric": -0.1, "corrupted_metric": 0.2}, 10)
    assert backward == [
        "the clean prompts' logit-diff (-0.1) is not above the corrupted ones' (0.2): the "
        "model does not do this task, and every score is a share of that backward gap"
    ]
    assert run_warnings({**summary, "clean_metric": 2.0, "corrupted_metric": -1.0}, 10) == []
    # a trial: under mean ablation the scores are shares of clean - ablated, not that gap
    mean = {**summary, "ablation": "mean", "ablated_metric": -0.045}
    assert run_warnings({**mean, "clean_metric": 0.519, "corrupted_metric": 0.713}, 10) == [
        "the clean prompts' logit-diff (0.519) is not above the corrupted ones' (0.713): the "
        "model does not do this task"
    ]
    assert run_warnings({**mean, "clean_metric": 0.519, "corrupted_metric": 0.515}, 10) == []
    barely = run_warnings({**summary, "clean_metric": 0.01, "corrupted_metric": -0.007}, 10)
    assert barely == [
        "the clean prompts' logit-diff is only 0.017 above the corrupted ones': faithfulness, "
        "CPR and CMD are shares of that gap, and noise of its size swings them"
    ]
    prob = {**summary, "metric": "prob-diff", "clean_metric": 0.05, "corrupted_metric": 0.0}
    assert run_warnings(prob, 10) == []  # 5 points of probability is a gap
    # a corruption that moves nothing the metric reads (a helper's trial: only the place
    # word changed) was "the model does not do this task"
    same = run_warnings({**summary, "clean_metric": 2.7717, "corrupted_metric": 2.77171}, 10)
    assert same == [
        "the corrupted prompts' logit-diff is the clean ones' (gap -1e-05): the corruption "
        "changes nothing the metric reads, and every score is a share of rounding"
    ]
    # a helper's trial: probabilities of 1e-4 that moved 6% were "changes nothing" (the
    # share was of max(1, |clean|))
    tiny = {
        **summary,
        "metric": "prob-diff",
        "clean_metric": 1.186e-4,
        "corrupted_metric": 1.119e-4,
    }
    assert run_warnings(tiny, 10) == [
        "the clean prompts' prob-diff is only 6.7e-06 above the corrupted ones': faithfulness, "
        "CPR and CMD are shares of that gap, and noise of its size swings them"
    ]


def test_the_reference_nodes_with_a_faithfulness_far_from_one_is_explained():
    """A helper's trial read EAP's faithfulness -0.34 on planted IOI beside node precision
    and recall 1.000, without a word on the edges it left out."""
    summary = {"n_prompts": 10, "n_nodes_in_circuit": 6, "metric": "logit-diff"}
    summary |= {"clean_metric": 2.8, "corrupted_metric": 0.0, "faithfulness": -0.337}
    metrics = {"node_precision": 1.0, "node_recall": 1.0, "edge_recall": 0.52}
    assert run_warnings({**summary, "metrics": metrics}, 10) == [
        "the circuit has exactly the reference's nodes, yet its faithfulness is -0.337 (the "
        "whole model's is 1): it keeps 52% of the reference's edges, and those it leaves "
        "out carry the effect where the reference's own circuit does the task (a ground "
        "truth's does; a discovered one may not)"
    ]
    # a helper's trial: a file's NaN faithfulness was "far from one" too
    nan = float("nan")
    for other in (
        {"faithfulness": 0.9},
        {"faithfulness": None},
        {"faithfulness": 1.6},
        {"faithfulness": nan},
    ):
        said = run_warnings({**summary, **other, "metrics": metrics}, 10)
        assert bool(said) == (other["faithfulness"] == 1.6), other
    for other in ({"node_recall": 0.8}, {"edge_recall": 1.0}, {"edge_recall": None}):
        assert run_warnings({**summary, "metrics": {**metrics, **other}}, 10) == [], other
    result = run(*DISCOVER[:-1], "eap", "--model", "planted", "--n-prompts", 10)
    assert "yet its faithfulness is -0." in result.stderr


def test_a_method_with_a_target_of_its_own_says_what_the_metric_is_for():
    """A helper's trial: transcoder --metric kl gave the logit difference's scores, and
    recorded kl, without a word."""
    summary = {"n_prompts": 10, "n_nodes_in_circuit": 3, "method": "transcoder"}
    summary |= {"clean_metric": 0.0, "corrupted_metric": -0.3, "faithfulness_prompts": 10}
    assert run_warnings({**summary, "metric": "kl"}, 10) == [
        "transcoder attributes the task's logit difference whatever --metric is; kl is what "
        "faithfulness reads"
    ]
    unmeasured = {**summary, "metric": "kl", "faithfulness_prompts": None}  # --no-faithfulness
    assert run_warnings(unmeasured, 10)[0].endswith("; kl sets only the metrics shown")
    assert run_warnings({**summary, "metric": "logit-diff"}, 10) == []
    # the path search kept nothing: no threshold to lower (it said "lower --threshold")
    empty = {**summary, "metric": "logit-diff", "n_nodes_in_circuit": 0, "largest_score": 0.3}
    assert run_warnings({**empty, "threshold": None, "top_k": None}, 10) == [
        "no component is in the circuit: transcoder's own selection kept none (see its "
        "options: circuitx methods)"
    ]
    assert "lower --threshold" in run_warnings({**empty, "threshold": 0.5, "top_k": None}, 10)[0]
    assert_one_line_error(run(*DISCOVER, "--metric", ""), "task ioi has no metric ''")


def test_a_method_that_patches_nothing_says_what_the_ablation_is_for():
    """A helper's trial: sae took --ablation zero without a word, though it patches
    nothing; the ablation only sets what faithfulness patches with."""
    summary = {"n_prompts": 10, "n_nodes_in_circuit": 3, "method": "sae", "metric": "logit-diff"}
    summary |= {"clean_metric": 2.7, "corrupted_metric": 0.0, "faithfulness_prompts": 10}
    assert run_warnings({**summary, "ablation": "zero"}, 10) == [
        "sae compares the codes of clean and negative activations whatever --ablation is; "
        "zero ablation only sets what faithfulness patches with"
    ]
    assert run_warnings({**summary, "ablation": "corrupted"}, 10) == []
    assert run_warnings({**summary, "method": "eap", "ablation": "zero"}, 10) == []
    # a trial's: "what faithfulness patches with" with --no-faithfulness
    unmeasured = {**summary, "ablation": "zero", "faithfulness_prompts": None}
    assert run_warnings(unmeasured, 10)[0].endswith(
        "zero ablation sets nothing here (faithfulness is not measured)"
    )
    # a trial's: --positions named on a task file naming none said nothing
    (said,) = run_warnings({**summary, "positions": ["END", "other"]}, 10)
    assert said.startswith("the task names no position but END")
    assert run_warnings({**summary, "positions": ["IO", "S1", "END", "other"]}, 10) == []
    hisp = {**unmeasured, "method": "hisp"}
    assert run_warnings({**hisp, "ablation": "corrupted"}, 10) == []  # the default: no choice
    assert "gates each node toward zero" in run_warnings({**hisp, "ablation": "mean"}, 10)[0]


def test_a_drawing_that_fails_or_is_interrupted_leaves_no_graph_behind(tmp_path, monkeypatch):
    """A helper's trial: Ctrl-C while --draw drew left the --out graph written just
    before it. Another's: with an earlier run's graph there, the failed run deleted it
    (the graph was written, then removed when the picture failed)."""
    import circuitx.cli.discover as discover_command
    from circuitx.errors import CircuitxError

    def broken(*args, **kwargs):
        raise CircuitxError("the drawing failed")

    monkeypatch.setattr(discover_command, "draw", broken)
    out, picture = tmp_path / "g.graphml", tmp_path / "g.svg"
    args = ["discover", "--task", "ioi", "--method", "hisp", "--model", "planted-ioi"]
    result = run(*args, "--n-prompts", 4, "--out", out, "--draw", picture)
    assert_one_line_error(result, "the drawing failed")
    assert list(tmp_path.iterdir()) == []
    out.write_text("an earlier run's graph")
    picture.write_text("an earlier run's picture")
    assert_one_line_error(run(*args, "--n-prompts", 4, "--out", out, "--draw", picture), "failed")
    assert out.read_text() == "an earlier run's graph"
    assert picture.read_text() == "an earlier run's picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.graphml", "g.svg"]


def test_an_option_that_does_nothing_under_the_others_is_noted():
    """A helper's trial: --ig-steps with --ig-mode clean-corrupted, or --n-paths without
    --search paths, ran as if unset and was recorded, without a word."""
    args = ["discover", "--task", "ioi", "--model", "planted-ioi", "--n-prompts", 4]
    args += ["--no-faithfulness", "--reference", "none", "--method", "eap-ig"]
    result = run(*args, "--ig-mode", "clean-corrupted", "--ig-steps", 50)
    assert result.exit_code == 0, result.output
    said = "--ig-steps does nothing with --ig-mode clean-corrupted (only with --ig-mode inputs"
    assert said in result.stderr
    assert "does nothing" not in run(*args, "--ig-steps", 3).stderr
    with pytest.warns(cx.CircuitxWarning, match="--ig-steps does nothing with --ig-mode clean"):
        cx.discover("planted-ioi", "ioi", "eap-ig", n_prompts=4, faithfulness=False,
                    ig_mode="clean-corrupted", ig_steps=9)  # fmt: skip
    transcoder = METHODS["transcoder"]
    said = unused_options(transcoder, {"n_paths": 3}, {"search": "threshold"})
    assert said == ["--n-paths does nothing with --search threshold (only with --search paths)"]
    assert unused_options(transcoder, {"n_paths": 3}, {"search": "paths"}) == []


def test_a_default_model_that_cannot_load_says_it_was_the_default(monkeypatch, tmp_path):
    """A helper's trial: a task file run without --model failed with "cannot load 'gpt2'",
    a model the user never named."""
    from circuitx.cli import discover as discover_command
    from circuitx.errors import CircuitxError

    def unreachable(name, *rest):
        raise CircuitxError(f"cannot load {name!r}: the hub is unreachable")

    monkeypatch.setattr(discover_command.builtin, "load", unreachable)
    pairs = tmp_path / "pairs.jsonl"
    row = {"clean": "When Mary and John went, John gave to", "answer": " Mary"}
    corrupted = "When Mary and John went, Mary gave to"
    pairs.write_text(json.dumps({**row, "corrupted": corrupted, "wrong": " John"}) + "\n")
    result = run("discover", "--task", pairs, "--method", "eap")
    assert_one_line_error(
        result, f"no --model given (task {pairs}'s default is gpt2): cannot load 'gpt2'"
    )
    named = run("discover", "--task", pairs, "--method", "eap", "--model", "gpt2")
    assert_one_line_error(named, "error: cannot load 'gpt2'")


@pytest.mark.parametrize("method, steps", [("edge-pruning", "--ep-steps"), ("acdc", None)])
def test_the_summary_names_each_row_once(method, steps):
    """A helper's trial: edge pruning's summary had two rows "edges kept" (the circuit's,
    and the target sparsity's)."""
    args = ["--task", "ioi", "--model", "planted-ioi", "--method", method, "--n-prompts", 4]
    result = run("discover", *args, *([steps, 5] if steps else []), "--no-faithfulness")
    assert result.exit_code == 0, result.output
    labels = [line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line]
    labels = [label for label in labels if label]  # a wrapped row's second line
    assert len(labels) > 10 and len(labels) == len(set(labels))


def test_a_gradient_at_a_saturated_clean_run_is_warned_of():
    """A helper's trial: EAP on a task file whose model gives its answers probability 0.999
    (log-prob -0.001) found an empty circuit and said only to lower the threshold, as it
    does on planted greater-than's prob-diff (clean 0.999); EAP-IG found the circuit."""
    result = run(
        "discover", "--task", "greater-than", "--model", "planted-greater-than", "--n-prompts",
        8, "--method", "eap", "--no-faithfulness", "--json",
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["clean_metric"] > 0.99 and summary["n_nodes_in_circuit"] == 0
    assert summary["warnings"][0] == (
        "eap takes the gradient of prob-diff at the clean run, where the answer's probability "
        "is near 1 and the softmax is flat: its scores fall far short of the effects, and may "
        "all be under the threshold (use eap-ig)"
    )  # greater-than has no logit-diff to suggest
    base = {"n_prompts": 10, "n_nodes_in_circuit": 3, "corrupted_metric": -5.0}
    file_task = {**base, "task": "copy", "method": "atp", "metric": "log-prob"}
    (said,) = run_warnings({**file_task, "clean_metric": -0.01}, 10)
    assert said.endswith(
        "(use eap-ig, or --metric logit-diff, which needs wrong answers in the task file)"
    )
    assert run_warnings({**file_task, "clean_metric": -0.2}, 10) == []  # p about 0.82
    assert run_warnings({**file_task, "clean_metric": -0.01, "method": "eap-ig"}, 10) == []
    # a trial's: HISP's per-layer shares rank small gradients too (planted greater-than:
    # its 4 nodes, faithfulness 1.000), so it is not warned of
    assert run_warnings({**file_task, "clean_metric": -0.01, "method": "hisp"}, 10) == []


def test_the_summary_shows_a_small_metric_in_significant_digits():
    """A trial's prob-diff of -2.03e-05 showed as 0.000 in the table, beside a warning
    that gave it."""
    assert [metric_value(v) for v in (-2.03e-05, 0.0, 0.5, None)] == [
        "-2.03e-05",
        "0.000",
        "0.500",
        "-",
    ]
