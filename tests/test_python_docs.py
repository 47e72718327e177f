"""The examples of docs/python.md run, in order, in one namespace (as a notebook would),
and the Python API answers as the command line does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import networkx as nx
import pytest
import torch
from conftest import run

import circuitx as cx
from circuitx.graph import full_graph

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.slow
def test_the_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "planted-ioi 5 layers" in printed  # the model the first block loads
    # what the examples promise, checked on what they made
    graph = namespace["graph"]
    assert isinstance(graph, nx.MultiDiGraph) and graph.graph["method"] == "eap-ig"
    assert graph.graph["ig_steps"] == 5
    assert namespace["metrics"]["node_auc"] == 1.0
    assert namespace["mine"].graph["n_prompts"] == 2
    assert (tmp_path / "ioi.svg").stat().st_size > 0
    assert (tmp_path / "ioi.html").stat().st_size > 0
    assert (tmp_path / "board" / "results.json").is_file()
    rows = {(row["model"], row["method"]) for row in namespace["board"].rows}
    assert ("planted-ioi", "eap") in rows and ("planted-ioi-llama", "activation-patching") in rows


def test_every_api_function_is_exported_and_documented():
    page = PAGE.read_text()
    for name in cx.__all__:
        if name.startswith("_") or name in ("CircuitxError", "CircuitxWarning"):
            continue
        assert callable(getattr(cx, name)) and getattr(cx, name).__doc__, name
        assert f"`{name}(" in page, f"{name} is missing from docs/python.md"


def test_api_discovery_equals_the_command_line(tmp_path):
    out = tmp_path / "cli.json"
    result = run(
        "discover", "--task", "ioi", "--method", "eap", "--model", "planted", "--n-prompts", 8,
        "--seed", 3, "--no-faithfulness", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    from_cli = cx.read_graph(out)
    from_api = cx.discover("planted", "ioi", "eap", n_prompts=8, seed=3, faithfulness=False)

    def scores(graph):
        return {key: score for *_, key, score in graph.edges(keys=True, data="score")}

    assert scores(from_api) == pytest.approx(scores(from_cli), abs=1e-6)
    kept = {n for n, k in from_api.nodes(data="in_circuit") if k}
    assert kept == {n for n, k in from_cli.nodes(data="in_circuit") if k}
    assert cx.score(from_api) == cx.score(out)
    assert json.loads(json.dumps(cx.compare(from_api, out)))["edges"]["jaccard"] == 1.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cx.discover("planted", "ioi", "eap", ig_steps=3), "--ig-steps applies to"),
        (lambda: cx.discover("planted", "ioi", "nope"), "unknown method"),
        (lambda: cx.discover("planted", "ioi", "eap", n_prompts=0), "--n-prompts"),
        (lambda: cx.load_model("plantd"), "did you mean planted?"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], seeds=0), "seeds"),
        (lambda: cx.leaderboard(methods=["eap"], options={"eap": {"taus": 1}}), "no option"),
        # wrong types and values from Python, where nothing parsed them (a new user's trial)
        (lambda: cx.discover("planted", "ioi", "eap", n_prompts="10"), "--n-prompts takes a"),
        (lambda: cx.discover("planted", "ioi", "eap", n_prompts=1.5), "--n-prompts takes a"),
        (lambda: cx.discover("planted", "ioi", "eap", threshold="x"), "--threshold takes a"),
        (lambda: cx.discover("planted", "ioi", "eap", seed=-1), "--seed must be at least 0"),
        (lambda: cx.discover("planted", "ioi", "eap", faithfulness="no"), "True or False"),
        (
            lambda: cx.discover(None, "ioi", "eap"),
            "model takes a model load_model gave, or a name, not None",
        ),
        (
            lambda: cx.discover(3, "ioi", "eap"),
            "model takes a model load_model gave, or a name, not an int",
        ),
        (lambda: cx.discover("planted", ["ioi"], "eap"), "--task takes a name"),
        (lambda: cx.discover("planted", "ioi", "eap-ig", ig_steps="3"), "takes an int"),
        (lambda: cx.load_model(3), "named by a string or a directory"),
        (lambda: cx.score(None), "expected a circuit graph"),
        (lambda: cx.collapse_positions(None), "expected a circuit graph"),  # AttributeError
        (lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], name=None), "name takes letters"),
        (lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], name="a/b c"), "name takes letters"),
        (lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], name="ioi"), "a built-in task's"),
        (lambda: cx.collapse_positions("nowhere.graphml"), "graph file not found"),
        (lambda: cx.score(nx.DiGraph()), "not DiGraph"),
        (lambda: cx.score(cx.graph.full_graph(2, 2), reference=3), "reference takes a graph"),
        (lambda: cx.write_graph({"a": 1}, "x.graphml"), "takes a circuit graph"),
        (lambda: cx.draw(cx.graph.full_graph(2, 2), None), "draw takes a file path"),
        (lambda: cx.draw(cx.graph.full_graph(2, 2), "x.svg", top=-1), "--top must be"),
        (lambda: cx.draw(cx.graph.full_graph(2, 2), "x.svg", top=5, every=True), "not both"),
        (
            lambda: cx.draw(
                cx.graph.full_graph(2, 2), "x.svg", reference=cx.graph.full_graph(3, 2)
            ),
            "different model shapes",
        ),
        (lambda: cx.task_from_pairs(["a b"], ["c d"], answers=None), "answers takes a list"),
        (lambda: cx.task_from_pairs([1], [2], answers=["x"]), "clean prompt 1 is not a string"),
        (
            lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], positions=[{"S": 0}, {"S": 1}]),
            "clean, corrupted, answers and positions need one entry per pair",
        ),
        (
            lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], positions=[{"S": "x"}]),
            'pair 1: position S "x" is not a token index',
        ),
        (lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], position=[1.5]), "pair 1: position"),
        # a reviewer's: KeyError and TypeError tracebacks
        (
            lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], positions={"S": 1}),
            "positions takes a list with one entry per pair",
        ),
        (
            lambda: cx.task_from_pairs(["a b"], ["a c"], ["d"], position={1}),
            "position takes a list with one entry per pair",
        ),
        (lambda: cx.leaderboard(tasks=[], methods=["eap"]), "no task given"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], seeds=[1]), "--seeds takes a"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], jobs=0), "--jobs must be"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], n_prompts=0), "--n-prompts must"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], positions="zz"), "--positions"),
        (
            lambda: cx.leaderboard(methods=["eap"], options={"eap-ig": {"ig_steps": 5}}),
            "options name eap-ig, which is not among the methods",
        ),
        # None and wrong types a second trial found raising TypeError or AttributeError
        (lambda: cx.get_task(None), "a task is a name, a task file or a Task, not None"),
        (lambda: cx.load_model("planted", task=5), "a task is a name, a task file or a Task"),
        (lambda: cx.load_model("planted-ioi", cache_dir=5), "cache_dir takes a directory"),
        (lambda: cx.load_model("planted-ioi", dtype="float99"), "unknown dtype 'float99'"),
        (lambda: cx.task_from_file(None), "task_from_file takes a file path"),
        (lambda: cx.read_graph(None), "read_graph takes a file path"),
        (lambda: cx.discover("planted", "ioi", "eap", n_prompts=None), "--n-prompts takes a"),
        (lambda: cx.discover("planted", "ioi", "eap", seed=None), "--seed takes a whole"),
        (lambda: cx.leaderboard(tasks=None, methods=["eap"]), "tasks takes 'all', a name"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=[5]), "methods takes 'all', a name"),
        (lambda: cx.leaderboard(tasks=["ioi"], methods=["eap"], out=None), "out takes a"),
        (lambda: cx.leaderboard(methods=["eap"], options={"eap": 5}), "options takes {method"),
        (lambda: cx.leaderboard(methods=["eap"], threads=0), "--threads must be at least 1, not 0"),
        (lambda: cx.leaderboard(methods=["eap"], executor="slurm"), "unknown executor 'slurm'"),
        (lambda: cx.leaderboard(model=None, methods=["eap"]), "model takes a name, a family"),
        (lambda: cx.draw(cx.graph.full_graph(2, 2), "x.svg", every="yes"), "every takes True"),
        (lambda: cx.discover("planted", "ioi", "eap-ig", **{"ig-steps": 5}), "named ig_steps"),
        # a third trial's
        (lambda: cx.discover("planted", "ioi", "eap", qk_fix=1), "--qk-fix takes one of on,"),
        (
            lambda: cx.discover(cx.load_model("planted-ioi"), "ioi", "eap", dtype="bfloat16"),
            "dtype 'bfloat16' is for loading, and this model is loaded in float32",
        ),
        (
            lambda: cx.leaderboard(model=cx.load_model("planted-ioi"), methods=["eap"]),
            "not a loaded model: each cell loads its own (pass 'planted-ioi')",
        ),
        (
            lambda: cx.leaderboard(tasks=["ioi"], references={"greater-than": "ioi"}),
            "references name task 'greater-than', which is not among the tasks (ioi)",
        ),
        (
            lambda: cx.score(full_graph(2, 2, True), reference=nx.DiGraph()),
            "reference takes a circuitx graph, a networkx MultiDiGraph",
        ),
        (  # a trial's: it said "score needs a reference circuit" and no more
            lambda: cx.score(full_graph(2, 2, True), reference="none"),
            "score needs a reference to score against; 'none' names none",
        ),
        (
            lambda: cx.leaderboard(tasks=["ioi"], references={"ioi": full_graph(2, 2, True)}),
            "not a MultiDiGraph: the cells read references from files; save it with cx.write_graph",
        ),
        (
            lambda: cx.leaderboard(tasks=["ioi"], methods=["eap", "sae"], positions="named"),
            "--positions named: sae scores components over the whole sequence; leave sae out",
        ),
        (  # a task object: refused by what it lacks, not as "not a list of names"
            lambda: cx.leaderboard(
                tasks=[cx.task_from_pairs(["a b"], ["b a"], [" c"], [" d"])], methods=["eap"]
            ),
            "task pairs was made from pairs in Python, and the leaderboard's cells read",
        ),
        (  # a trial's: each said "eap has no option --n-prompt" (or --no-faithfulness)
            lambda: cx.discover("planted", "ioi", "eap", n_prompt=10),
            "discover() has no keyword 'n_prompt', and no method has that option; did you "
            "mean n_prompts?",
        ),
        (
            lambda: cx.discover("planted", "ioi", "eap", no_faithfulness=True),
            "in Python faithfulness=False does what --no-faithfulness does",
        ),
        (lambda: cx.discover("planted", "ioi", "eap", tau=0.1), "--tau applies to acdc, not"),
        (lambda: cx.load_model("planted"), "model family: pass the task that picks its model"),
        (lambda: cx.load_model("tracr"), "model family: name one of its models ('tracr-reverse'"),
        (  # a trial's: a Hugging Face model in memory, its whole printout in the message
            lambda: cx.load_model(torch.nn.Sequential(torch.nn.Linear(2, 2))),
            "not a Sequential: circuitx loads a model itself, from a directory; save this one "
            "there with its save_pretrained(DIR)",
        ),
        (
            lambda: cx.discover(torch.nn.Linear(2, 2), "ioi", "eap"),
            "model takes a model load_model gave, or a name, not a Linear: circuitx loads",
        ),
        (  # a trial's: None, as a graph records no positions, is "none"
            lambda: cx.discover("planted", "ioi", "eap", positions=None, n_prompts=0),
            "--n-prompts must be at least 1",
        ),
        (  # a built-in or file task object goes by its name or path: this one's error is later
            lambda: cx.leaderboard(tasks=cx.get_task("ioi"), methods=["eap"], seeds=0),
            "--seeds must be at least 1",
        ),
    ],
)
def test_bad_settings_raise_one_line_before_work(call, message):
    with pytest.raises(cx.CircuitxError, match=re.escape(message)) as raised:
        call()
    assert "\n" not in str(raised.value)


def test_what_the_command_line_warns_of_is_a_python_warning(tmp_path):
    """An empty circuit (no score reaches the threshold) warns, as discover's stderr does;
    so does score's note on a reference with every node in its circuit."""
    with pytest.warns(cx.CircuitxWarning, match="no component is in the circuit"):
        graph = cx.discover("planted", "ioi", "eap", n_prompts=4, threshold=1e9, faithfulness=False)
    assert not any(graph.nodes[n]["in_circuit"] for n in graph if n not in ("input", "logits"))
    everything = graph.copy()
    for *_, data in [*everything.nodes(data=True), *everything.edges(data=True)]:
        data["in_circuit"] = True
    with pytest.warns(cx.CircuitxWarning, match="so there is no (node|edge) ROC AUC"):
        assert cx.score(graph, reference=everything)["node_auc"] is None


def test_score_warns_of_a_faithless_circuit_with_the_references_nodes(tmp_path):
    """EAP's planted IOI circuit has the planted nodes but leaves out the q/k edges that
    carry the effect: score says so, as discover does (a trial found it silent), of the
    faithfulness recorded at discovery (a trial's hand-edited circuit was told its
    original's), in --json's warnings too (a trial found them only on stderr)."""
    graph = cx.discover("planted", "ioi", "eap", n_prompts=20, faithfulness_prompts=20)
    said = "exactly the reference's nodes, yet its faithfulness recorded at discovery is"
    with pytest.warns(cx.CircuitxWarning, match=said):
        metrics = cx.score(graph)
    assert (metrics["node_precision"], metrics["node_recall"]) == (1.0, 1.0)
    assert graph.graph["faithfulness"] < 0.5
    cx.write_graph(graph, tmp_path / "g.json")
    summary = json.loads(run("score", tmp_path / "g.json", "--json").stdout)
    assert len(summary["warnings"]) == 1 and said in summary["warnings"][0]
    assert summary["metrics"] == {k: v for k, v in metrics.items() if k != "reference"}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: g.edges["a0.h1", "a1.h0", "a0.h1->a1.h0<k>"].update(score=float("nan")),
         "malformed graph: edge a0.h1->a1.h0<k>: score must be a finite number or null, not nan"),
        (lambda g: g.nodes["a0.h1"].update(in_circuit="False"),
         "malformed graph: node a0.h1: in_circuit must be true or false, not 'False'"),
    ],
)  # fmt: skip
def test_a_graph_in_memory_is_checked_as_its_file_would_be(edit, message):
    """A NaN score had given a plausible edge AUC, and in_circuit "False" counted as in."""
    graph = full_graph(2, 2, True, task="ioi", model="planted-ioi")
    for *_, data in graph.edges(data=True):
        data["score"] = 1.0
    edit(graph)
    for call in (lambda: cx.score(graph, reference=graph), lambda: cx.compare(graph, graph)):
        with pytest.raises(cx.CircuitxError, match=re.escape(message)):
            call()
    reference = full_graph(2, 2, True)
    reference.nodes["m0"]["in_circuit"] = "yes"
    with pytest.raises(cx.CircuitxError, match="malformed reference: node m0: in_circuit must"):
        cx.score(full_graph(2, 2, True, task="ioi"), reference=reference)


def test_a_task_object_is_named_in_the_leaderboard_by_its_name_or_file(tmp_path):
    from circuitx.api import _task_name

    pairs = tmp_path / "pairs.jsonl"
    row = {"clean": "When Mary and John went, John gave to", "answer": " Mary", "wrong": " John"}
    pairs.write_text(json.dumps({**row, "corrupted": "When Mary and John went, Mary gave to"}))
    assert _task_name(cx.task_from_file(pairs)) == str(pairs)
    assert _task_name(cx.get_task("ioi")) == "ioi"


def test_gradient_methods_run_inside_no_grad_and_inference_mode():
    """A trial's cx.discover(..., "eap") inside torch.no_grad() failed: "cannot register a
    hook on a tensor that doesn't require gradient"."""
    import torch

    model = cx.load_model("planted-ioi")
    plain = cx.discover(model, "ioi", "eap", n_prompts=4, faithfulness=False)
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            graph = cx.discover(model, "ioi", "eap", n_prompts=4, faithfulness=False)
        assert nx.utils.edges_equal(graph.edges(data="score"), plain.edges(data="score")), mode
