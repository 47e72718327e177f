"""The structure: a method plugs in with one class (its flags, listing and leaderboard
options follow), the layers point one way, and no circuitx import hides in a function."""

import ast
import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run

from circuitx.layout import Layout
from circuitx.methods import METHODS, Method, MethodRun, Option, Scores, register

PACKAGE = Path(__file__).resolve().parents[1] / "circuitx"


class Toy(Method):
    """Scores each head and MLP by its layer times ``toy_flag``."""

    name = "toy"
    title = "toy method registered by a test"
    granularity = "node"
    default_threshold = 0.5
    options = (Option("toy_flag", "int", 1, "the toy's multiplier", low=0),)

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return 1

    def score(self, engine, run: MethodRun) -> Scores:
        layout = engine.layout
        layers = torch.tensor([float(layout.sender_layer(s)) for s in range(layout.n_senders)])
        run.advance(1)
        return Scores(nodes=layers * run.options["toy_flag"], facts={"toy": True})


@pytest.fixture
def toy():
    register(Toy())
    yield
    METHODS.pop("toy")


def test_a_method_registered_at_run_time_gets_its_flag_and_listing(toy, tiny_dir):
    result = run(
        "discover", "--task", "ioi", "--method", "toy", "--toy-flag", 3, "--model", tiny_dir,
        "--n-prompts", 2, "--top-k", 2, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["method"] == "toy" and summary["options"] == {"toy_flag": 3}
    assert summary["n_nodes_in_circuit"] == 2
    assert summary["method_facts"] == {"toy": True}  # recorded, though not declared
    listed = {row["name"]: row for row in json.loads(run("methods", "--json").stdout)}
    assert listed["toy"]["options"] == {"toy_flag": 1}
    assert listed["toy"]["option_declarations"][0]["flag"] == "--toy-flag"
    assert_one_line_error(
        run("discover", "--task", "ioi", "--method", "toy", "--toy-flag", -1), "0<=x<=1000000"
    )
    assert_one_line_error(
        run("discover", "--task", "ioi", "--method", "eap", "--toy-flag", 1),
        "--toy-flag applies to toy, not eap",
    )


def test_every_method_option_has_a_flag_and_a_json_listing():
    help_text = run("discover", "--help").stdout
    rows = json.loads(run("methods", "--json").stdout)
    for row in rows:
        for option in row["option_declarations"]:
            assert option["flag"] in help_text
            assert row["options"][option["name"]] == option["default"]


def function_level_imports(path: Path) -> list[str]:
    """``circuitx`` imports inside a function body of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
                    "circuitx"
                ):
                    found.append(f"{path.name}:{inner.lineno} {inner.module}")
                if isinstance(inner, ast.Import) and any(
                    a.name.startswith("circuitx") for a in inner.names
                ):
                    found.append(f"{path.name}:{inner.lineno}")
                if (
                    isinstance(inner, ast.Call)
                    and ast.unparse(inner.func) == "importlib.import_module"
                    and isinstance(inner.args[0], ast.Constant)
                    and str(inner.args[0].value).startswith("circuitx")
                ):
                    found.append(f"{path.name}:{inner.lineno} {inner.args[0].value}")
    return found


# loaded when used, not to dodge a cycle: the command line and the API load torch (seconds),
# and the entry point takes a Ctrl-C while they load (test_start)
LOADED_WHEN_USED = {("start.py", "circuitx.cli"), ("__init__.py", "circuitx.api")}


def test_no_circuitx_import_hides_in_a_function():
    hidden = {hit for path in PACKAGE.rglob("*.py") for hit in function_level_imports(path)}
    lazy = {(hit.split(":")[0], hit.split()[-1]) for hit in hidden}
    assert len(hidden) == len(LOADED_WHEN_USED) and lazy == LOADED_WHEN_USED, hidden
