"""``circuitx build-tracr``: a user's RASP program becomes a model every command runs on."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import assert_one_line_error, run

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")
from tracr.rasp import rasp  # noqa: E402


def previous_token():
    """The token before each position (a program of the user's own)."""
    before = rasp.Select(rasp.indices, rasp.indices - 1, rasp.Comparison.EQ)
    return rasp.Aggregate(before, rasp.tokens).named("previous")


def test_a_users_program_builds_and_discovery_recovers_its_circuit(tmp_path):
    out = tmp_path / "previous"
    result = run(
        "build-tracr",
        f"{__name__}:previous_token",
        "--vocab",
        "a,b,c",
        "--max-seq-len",
        "4",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    assert built["output"] == "categorical" and built["output_values"] == ["a", "b", "c"]
    found = run(
        "discover",
        "--task",
        "tracr",
        "--model",
        out,
        "--method",
        "acdc",
        "--ablation",
        "zero",
        "--json",
    )
    assert found.exit_code == 0, found.output
    summary = json.loads(found.stdout)
    assert summary["reference"] == f"{out} ground truth (weights)"
    assert summary["metrics"]["edge_auc"] == 1.0


def test_a_model_of_two_positions_runs(tmp_path):
    """A model whose positions are fewer than the five tokens that probe whether its
    blocks can run alone (it raised an IndexError in the position embedding)."""
    out = tmp_path / "hist2"
    built = run("build-tracr", "make_hist", "--vocab", "a,b,c", "--max-seq-len", "2", "--out", out)
    assert built.exit_code == 0, built.output
    found = run("discover", "--task", "tracr", "--model", out, "--method", "eap", "--json")
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["reference"] == f"{out} ground truth (weights)"
    acdc = run("discover", "--task", "tracr", "--model", out, "--method", "eap",
               "--reference", "tracr:acdc")  # fmt: skip
    # ACDC's circuits are for its two models: say what this one ships (was "use a tracr model")
    assert_one_line_error(acdc, f"{out} ships no tracr:acdc ground truth; it ships tracr, tracr:w")


@pytest.mark.parametrize(
    "args, message",
    [
        (["make_nothing", "--vocab", "a", "--max-seq-len", "3"], "no function 'make_nothing'"),
        (["os:getcwd", "--vocab", "a", "--max-seq-len", "3"], "not a RASP program"),
        (["make_hist", "--vocab", "a,a", "--max-seq-len", "3"], "repeats a value"),
        (["make_hist", "--vocab", "a", "--max-seq-len", "100000"], "1<=x<=1024"),
        (
            ["make_frac_prevs", "--vocab", "w,x", "--max-seq-len", "3"],
            "tokens should always be categorical. (build-tracr gave make_frac_prevs the tokens "
            "for each SOp argument; a program on another SOp is a module:function of your own",
        ),
        (["make_hist", "--vocab", "a", "--max-seq-len", "3", "--length", "4"], "more than"),
        # from a helper's trial, each a traceback before
        (["make_hist", "--vocab", "<balance>,a", "--max-seq-len", "3"], "'<balance>' collides"),
        (["./mine.py:f", "--vocab", "a", "--max-seq-len", "3"], "no program file ./mine.py"),
        (["make_hist_of_all", "--vocab", "a", "--max-seq-len", "3"], "MODULE:FUNCTION or FILE"),
        # tokens for an argument that is not a SOp: "TypeError: unhashable type: 'Map'"
        (["make_sort", "--vocab", "1,2", "--max-seq-len", "3"], "make_sort needs min_key (float)"),
        (["make_count", "--vocab", "a", "--max-seq-len", "3"], "make_count needs token, which"),
        (["make_shuffle_dyck", "--vocab", "(,)", "--max-seq-len", "3"], "pairs (List[str])"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "model"
    assert_one_line_error(run("build-tracr", *args, "--out", out), message)
    assert not out.exists()


def test_an_existing_directory_is_left_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run(
        "build-tracr", "make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--out", tmp_path
    )
    assert_one_line_error(result, "exists; choose a new directory")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_missing_parent_directory_is_refused_not_made(tmp_path):
    out = tmp_path / "typo" / "model"
    result = run("build-tracr", "make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--out", out)
    assert_one_line_error(result, "--out's parent directory does not exist")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x")  # a trial: it said the file did not exist
    out = tmp_path / "afile" / "model"
    result = run("build-tracr", "make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--out", out)
    assert_one_line_error(result, "--out's parent is not a directory")


def test_a_relative_out_in_a_subdirectory_builds_without_a_note(tmp_path, monkeypatch):
    """A helper's trial: `--out sub/m` noted "model 'sub/.m...staging' is the local
    directory ...": the staging directory's relative name read as a hub id."""
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    result = run("build-tracr", "make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--out",
                 "sub/m")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "staging" not in result.stderr and (tmp_path / "sub" / "m" / "config.json").is_file()


def test_a_program_that_does_not_parse_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_program.py").write_text("def f(:\n    pass\n")
    monkeypatch.chdir(tmp_path)
    args = ["broken_program:f", "--vocab", "a", "--max-seq-len", "3", "--out", tmp_path / "m"]
    assert_one_line_error(run("build-tracr", *args), "cannot import 'broken_program': SyntaxError")
    assert not (tmp_path / "m").exists()
    args[0] = "progs/my_programs.py:doubled"
    assert_one_line_error(run("build-tracr", *args), "no program file progs/my_programs.py")


def test_a_program_file_is_read_from_its_path(tmp_path, monkeypatch):
    """A helper's trial: `build-tracr /path/to/progs.py:f` was refused with a hint to a
    module name that did not import either; a file's path now names its module."""
    (tmp_path / "progs").mkdir()
    (tmp_path / "progs" / "helper.py").write_text("COUNT = 3\n")
    (tmp_path / "progs" / "mine.py").write_text(
        "from tracr.rasp import rasp\n"
        "from helper import COUNT\n\n"  # its own folder's modules import
        "not_a_program = COUNT\n\n\n"
        "def previous():\n"
        "    before = rasp.Select(rasp.indices, rasp.indices - 1, rasp.Comparison.EQ)\n"
        "    return rasp.Aggregate(before, rasp.tokens).named('previous')\n\n\n"
        "def mean_of_strings():\n"
        "    upto = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)\n"
        "    return rasp.Aggregate(upto, rasp.tokens)\n"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    args = ["--vocab", "a,b", "--max-seq-len", "3", "--json"]
    built = run("build-tracr", "../progs/mine.py:previous", *args, "--out", "m")
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)["output"] == "categorical"
    not_function = run("build-tracr", "../progs/mine.py:not_a_program", *args, "--out", "n")
    assert_one_line_error(not_function, "'not_a_program' in ../progs/mine.py is a int, not a")
    # tracr compiles a categorical mean its evaluator refuses: a traceback before
    refused = run("build-tracr", "../progs/mine.py:mean_of_strings", *args, "--out", "o")
    assert_one_line_error(refused, "tracr's RASP evaluator cannot run the program on")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["m"]


def test_a_program_in_the_working_directory_is_found(tmp_path, monkeypatch):
    """``build-tracr mymodule:my_program`` from the directory that holds mymodule.py, as
    docs/tracr.md shows (the installed command's import path lacks that directory)."""
    (tmp_path / "users_previous_token.py").write_text(
        "from tracr.rasp import rasp\n\n\n"
        "def previous():\n"
        "    before = rasp.Select(rasp.indices, rasp.indices - 1, rasp.Comparison.EQ)\n"
        "    return rasp.Aggregate(before, rasp.tokens).named('previous')\n"
    )
    monkeypatch.chdir(tmp_path)
    spec = "users_previous_token:previous"
    args = ("--vocab", "a,b", "--max-seq-len", "3", "--out", tmp_path / "built", "--json")
    result = run("build-tracr", spec, *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == "categorical"
    assert str(tmp_path) not in sys.path  # the import path is left as it was


def test_a_built_directory_names_its_ground_truth_as_a_reference(tmp_path):
    """A helper's trial: --reference DIR said "a directory, not a graph file", and
    DIR/circuit.json "JSON of none of the forms read"; a built-in model's name worked."""
    out = tmp_path / "sort"
    args = ("make_sort_unique", "--vocab", "1,2,3", "--max-seq-len", "3", "--out", out)
    assert run("build-tracr", *args).exit_code == 0
    graph = tmp_path / "g.graphml"
    found = run("discover", "--task", "tracr", "--model", out, "--method", "eap", "--out", graph)
    assert found.exit_code == 0, found.output
    expected = json.loads(run("score", graph, "--json").stdout)["metrics"]
    for spec in (out, out / "circuit.json", f"{out}:weights"):
        scored = run("score", graph, "--reference", spec, "--json")
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout)["metrics"] == expected
    assert_one_line_error(
        run("score", graph, "--reference", f"{out}:zz"), "ships no ground truth 'zz'; choose from"
    )


def test_build_tracr_says_where_the_program_gives_no_value(tmp_path):
    """make_sort_unique on sequences with repeats: the program gives no value where a
    token repeats (24 of the 81 positions of 27 inputs), and the model agrees with it
    wherever it gives one."""
    out = tmp_path / "sort"
    args = ("make_sort_unique", "--vocab", "1,2,3", "--max-seq-len", "3", "--inputs", "sequences")
    result = run("build-tracr", *args, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)
    # numbers, not words (a trial)
    assert built["program_agreement"] == {"agreeing": 27, "inputs": 27}
    assert built["undefined_positions"] == {"undefined": 24, "positions": 81}
    shown = run("build-tracr", *args, "--out", tmp_path / "again")
    assert "program_agreement: 27 of 27 inputs" in shown.stdout
    assert "undefined_positions: 24 of 81" in shown.stdout
    assert "the program gives no value at 24 of the 81 positions" in result.stderr
    warned = [line for line in result.stderr.splitlines() if "no value" in line]
    assert [f"warning: {line}" for line in built["warnings"]] == warned
