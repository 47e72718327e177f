"""The leaderboard: a small grid on the planted greater-than model, through the CLI and
the library, in this process, in worker processes and on a local Ray instance."""

from __future__ import annotations

import contextlib
import csv
import errno
import html
import importlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import (
    SHORT_TRAINING,
    assert_one_line_error,
    drawn,
    find,
    open_page,
    random_transcoder_dir,
    run,
    tiny_gpt2,
)

from circuitx import builtin
from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_tl_legacy_attn_only, word_level_tokenizer
from circuitx.discovery import report
from circuitx.discovery import request as discovery_request
from circuitx.errors import CircuitxError, ctrl_c_held
from circuitx.files import atomic_open
from circuitx.graph import full_graph
from circuitx.graph_files import from_json_dict, write_graph
from circuitx.leaderboard import (
    STANDARD_VARIANTS,
    Leaderboard,
    check_cells,
    make_grid,
    merged_notes,
    non_defaults,
    parse_methods,
    parse_references,
    run_cell,
    run_leaderboard,
    warning_notes,
)
from circuitx.leaderboard import cells as cells_module
from circuitx.leaderboard.grid import (
    check_references,
    method_option,
    methods_for_model,
    methods_over_positions,
    methods_under_ablation,
    parse_names,
    plan_grid,
)
from circuitx.leaderboard.results import format_value, well_formed
from circuitx.methods import METHODS
from circuitx.tasks import TASKS, task_vocabulary
from circuitx.tasks.pairs import is_task_file

GRID = ["--tasks", "greater-than", "--methods", "activation-patching,eap", "--n-prompts", 10]
CELLS = make_grid(["greater-than"], ["activation-patching", "eap"], "planted", [0, 1], 10)


def results(directory):
    """Each cell's result without its timings, by cell key."""
    document = json.loads((directory / "results.json").read_text())
    timings = ("runtime_s", "discovery_s", "faithfulness_s")
    return {
        cell["key"]: {k: v for k, v in cell["result"].items() if k not in timings}
        for cell in document["cells"]
    }


def assert_same(got, want):
    """Equal results, with the differing entries named when they are not."""
    assert set(got) == set(want)
    for key in want:
        differing = [k for k in want[key] if got[key].get(k) != want[key][k]]
        assert not differing, (key, {k: (got[key].get(k), want[key][k]) for k in differing})


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("board")
    result = run("leaderboard", *GRID, "--seeds", 2, "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    return out, json.loads(result.stdout)


def test_rows_are_the_mean_of_the_cells_and_match_discover(board):
    out, summary = board
    rows = {row["method"]: row for row in summary["rows"]}
    assert list(rows) == ["activation-patching", "eap"]
    cells = results(out)
    assert len(cells) == 4
    for method, row in rows.items():
        assert row["model"] == "planted-greater-than" and row["finished"] == 2
        aucs = [c["metrics"]["node_auc"] for c in cells.values() if c["method"] == method]
        assert row["node_auc"]["mean"] == pytest.approx(sum(aucs) / 2)
    assert rows["activation-patching"]["edge_auc"] == {"mean": None, "std": None}
    # a cell is exactly the discovery `circuitx discover` runs, with one torch thread
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = load_model("planted-greater-than")
        graph = find(model, "greater-than", "eap", n_prompts=10, seed=1)
    finally:
        torch.set_num_threads(threads)
    expected = report(graph, ground_truth("planted-greater-than", "greater-than"), "truth")
    (cell,) = [c for c in cells.values() if c["method"] == "eap" and c["seed"] == 1]
    assert cell["metrics"] == expected["metrics"]
    assert cell["cpr"] == expected["cpr"]


def test_files_table_csv_and_plots(board):
    out, summary = board
    for name in ("results.json", "results.csv", "results.md"):
        assert (out / name).stat().st_size > 0
    for name in ("roc-greater-than.png", "faithfulness-greater-than.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "results.md").read_text().splitlines()
    assert markdown[0].startswith("| task | method | node AUC | edge AUC |")
    assert markdown[2].startswith("| greater-than | activation-patching | ")
    assert " ± " in markdown[2] and "seeds 0-1" in markdown[-1]
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["activation-patching", "eap"]
    assert float(rows[0]["node_auc_mean"]) == summary["rows"][0]["node_auc"]["mean"]
    assert not list(out.glob("**/*.tmp"))


def test_rerun_resumes_and_redoes_only_broken_cells(board, tmp_path):
    out, summary = board
    target = tmp_path / "copy"
    target.mkdir()
    (target / "cells").mkdir()
    cell_files = sorted((out / "cells").glob("*.json"))
    for path in cell_files:
        (target / "cells" / path.name).write_text(path.read_text())
    cell_files = sorted((target / "cells").glob("*.json"))
    cell_files[0].write_text('{"key": "trunc')  # as if cut off mid-write by hand
    result = run("leaderboard", *GRID, "--seeds", 2, "--out", target, "--json")
    assert result.exit_code == 0, result.stderr
    again = json.loads(result.stdout)
    assert again["resumed"] == 3
    assert json.loads(cell_files[0].read_text())["status"] == "ok"
    assert results(target) == results(out)
    # one more seed: only the two new cells run
    result = run("leaderboard", *GRID, "--seeds", 3, "--out", target, "--json")
    assert json.loads(result.stdout)["resumed"] == 4
    assert len(list((target / "cells").glob("*.json"))) == 6


@pytest.mark.slow
def test_worker_processes_and_ray_give_identical_results(board, tmp_path):
    out, _ = board
    cells = [cell for cell in CELLS if cell.seed == 0]  # one cell per worker
    in_process = {key: value for key, value in results(out).items() if value["seed"] == 0}
    board_jobs = run_leaderboard(cells, tmp_path / "jobs", jobs=2)
    assert board_jobs.failed == 0
    assert_same(results(tmp_path / "jobs"), in_process)
    pytest.importorskip("ray", reason="the Ray test needs the ray extra (pip install -e .[ray])")
    board_ray = run_leaderboard(cells, tmp_path / "ray", jobs=2, executor="ray")
    assert board_ray.failed == 0
    assert_same(results(tmp_path / "ray"), in_process)


def test_a_failing_cell_is_reported_and_the_others_finish(tiny_dir, tmp_path):
    empty = tmp_path / "no-transcoders"
    empty.mkdir()
    result = run(
        "leaderboard", "--tasks", "greater-than", "--methods", "eap,transcoder",
        "--model", tiny_dir, "--seeds", 1, "--n-prompts", 4, "--out", tmp_path / "board",
        "--option", f"transcoder.transcoders={empty}",
    )  # fmt: skip
    tmp_path = tmp_path / "board"
    assert result.exit_code == 1
    assert "1 of 2 cells failed" in result.stderr
    rows = {line.split("│")[2].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "no transcoder files" in rows["transcoder"]
    assert "error:" not in rows["transcoder"]  # the column's heading says it
    assert "error" not in rows["eap"]
    assert "| error |" in (tmp_path / "results.md").read_text()
    page = (tmp_path / "index.html").read_text()  # the error cell in red, not the empty one
    assert re.findall(r'<td class="error"[^>]*>([^<]*)</td>', page) == [
        html.escape(line)
        for line in [json.loads((tmp_path / "results.json").read_text())]
        for line in [r["error"] for r in line["rows"] if r["error"]]
    ]


def test_a_bug_in_a_cell_becomes_its_error(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cells_module, "discover_scored", broken)
    record = run_cell(CELLS[0])
    assert record["status"] == "error" and record["error"] == "RuntimeError: boom"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "ioi,nope"], "unknown task 'nope'"),
        (["--methods", "magic"], "unknown method 'magic'"),
        (["--methods", "eap[tau=1]"], "eap has no option 'tau'"),
        (["--methods", "eap[qk-fix=maybe]"], "unknown --qk-fix 'maybe'"),
        (["--methods", "eap[qk-fix=on"], "--methods takes NAME or NAME[OPTION=VALUE,...]"),
        (["--model", "no/such/dir/"], "model directory not found"),
        (["--executor", "dask"], "Invalid value for '--executor'"),
        (["--seed", "-1"], "-1 is not in the range 0<=x<=4294967295"),
        (["--seed", str(2**32 - 2), "--seeds", "3"], "go past the last seed, 4294967295"),
        (["--jobs", "5000"], "not in the range 1<=x<=1024"),
        (["--methods", "eap[]"], "'eap[]' sets no option; write eap"),
        (["--methods", "eap[qk-fix=on,qk-fix=off]"], "sets qk-fix twice"),
        (["--methods", "eap", "--option", "eap.tau=1", "--option", "eap.tau=2"], "has no option"),
        (
            ["--methods", "eap", "--option", "eap.qk_fix=on", "--option", "eap.qk-fix=off"],
            "--option sets eap.qk_fix twice",
        ),
        (
            ["--option", "eap-ig.ig_steps=100000000000000000000", "--methods", "eap-ig"],
            "at most 1000000",
        ),
        (["--tasks", ","], "no task given"),
        (["--positions", "some"], "Invalid value for '--positions'"),
        # a helper's trial: the cells of a method that cannot score positions failed
        (
            ["--methods", "eap,sae", "--positions", "named"],
            "--positions named: sae scores components over the whole sequence; leave sae out",
        ),
        (
            ["--positions", "named", "--backup-rounds", "1"],
            "--backup-rounds works on circuits without positions",
        ),
    ],
)
def test_bad_input_is_one_line(args, message, tmp_path):
    assert_one_line_error(run("leaderboard", *args, "--out", tmp_path), message)


def test_out_must_be_a_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    assert_one_line_error(run("leaderboard", *GRID, "--out", path), "is a file")


RECORDED = ("task", "method", "model", "seed", "n_prompts", "ablation", "corruption", "metric")


@pytest.mark.slow
def test_a_cells_recorded_config_is_what_its_run_used(tmp_path):
    """For every method: the settings in the cell's key are those its discovery ran with
    (sae's corruption included: its key once said None while the run used the default)."""
    options = {"transcoder": {"transcoders": random_transcoder_dir(tmp_path)}, **SHORT_TRAINING}
    grid = make_grid(["greater-than"], list(METHODS), "planted", [0], 5, options=options)
    for cell in grid:
        config, record = cell.config(), run_cell(cell)
        assert record["status"] == "ok", record
        result = record["result"]
        for key in RECORDED:
            assert result[key] == config[key], (cell.method, key)
        assert result["options"] == config["options"], cell.method
        assert config["corruption"] is not None


def test_a_task_without_a_model_in_the_family_is_a_cell_error(monkeypatch, tmp_path):
    planted = builtin.FAMILIES["planted"]
    members = {task: name for task, name in planted.members.items() if task != "docstring"}
    monkeypatch.setitem(builtin.FAMILIES, "planted", builtin.Family("planted", "", members))
    cells = make_grid(["docstring", "greater-than"], ["eap"], "planted", [0], 4)
    board = run_leaderboard(cells, tmp_path)
    errors = [record.get("error") for record in board.records]
    assert errors[0].startswith("no planted model for task docstring: the family's models do")
    assert errors[1] is None


def test_a_named_task_the_family_lacks_is_refused_before_any_cell(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"clean": "When John", "corrupted": "When Sarah", "answer": "John"}\n')
    for task in ("tracr", str(pairs)):
        args = ["leaderboard", "--tasks", task, "--methods", "eap", "--out", tmp_path / "out"]
        result = run(*args, "--model", "planted")
        assert_one_line_error(result, f"no planted model for task {task}: the family has")
        assert not (tmp_path / "out").exists()


def test_options_run_non_default_settings_and_enter_the_key(tmp_path):
    args = ["leaderboard", "--tasks", "greater-than", "--methods", "acdc", "--seeds", 1]
    args += ["--n-prompts", 4, "--out", tmp_path, "--json"]
    default = run(*args)
    tuned = run(*args, "--option", "acdc.tau=0.2")
    assert default.exit_code == tuned.exit_code == 0, tuned.output
    records = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert records[0]["cell"]["options"] == {"tau": 0.2}
    assert len(list((tmp_path / "cells").glob("*.json"))) == 2  # two keys, both kept
    assert records[0]["result"]["options"] == {
        "tau": 0.2,
        "input_tests": "on",
        "tau_sign": "absolute",
    }


def test_a_variant_is_a_row_of_its_own_with_its_options(tmp_path):
    """``eap[qk-fix=on]`` runs EAP with the QK fix in cells of its own key and row (the
    table prints its label, not read as markup); an ``--option`` for the method reaches
    both rows, the variant's own setting winning."""
    args = ["leaderboard", "--tasks", "greater-than", "--methods", "eap,eap[qk-fix=on]"]
    args += ["--seeds", 1, "--n-prompts", 4, "--out", tmp_path, "--json"]
    result = run(*args, "--option", "eap.qk_fix=off", "--option", "eap.grad_drop=on")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert [row["method"] for row in rows] == ["eap", "eap[qk-fix=on]"]
    records = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert [r["result"]["options"] for r in records] == [
        {"qk_fix": "off", "grad_drop": "on"},
        {"qk_fix": "on", "grad_drop": "on"},
    ]
    assert len({r["key"] for r in records}) == 2
    table = run(*args[:-1], "--option", "eap.qk_fix=off", "--option", "eap.grad_drop=on")
    assert "eap[qk-fix=on]" in table.stdout  # the printed table shows the label whole
    assert [s.label for s in parse_methods("all")][-len(STANDARD_VARIANTS) :] == list(
        STANDARD_VARIANTS
    )
    assert [s.label for s in parse_methods("eap[grad-drop=on,qk-fix=on], acdc")] == [
        "eap[grad-drop=on,qk-fix=on]",
        "acdc",
    ]


def test_rows_that_run_the_same_options_are_one_row():
    """A helper's trial: eap and eap[qk-fix=off] (its default) made two identical rows."""
    methods = parse_methods("eap,eap[qk-fix=off],eap[qk-fix=on],acdc[tau=0.01]")
    cells = make_grid(["greater-than"], methods, "planted", [0], 4)
    assert [c.method for c in cells] == ["eap", "eap[qk-fix=on]", "acdc[tau=0.01]"]
    # --option makes the variant the method's own settings: the first name given stays
    on = make_grid(["greater-than"], methods, "planted", [0], 4, options={"eap": {"qk_fix": "on"}})
    assert [c.method for c in on] == ["eap", "eap[qk-fix=off]", "acdc[tau=0.01]"]
    # and says so (a trial found the merge silent)
    assert merged_notes(methods, {}) == ["note: eap[qk-fix=off] runs eap's settings: one row, eap"]
    assert merged_notes(methods, {"eap": {"qk_fix": "on"}}) == [
        "note: eap[qk-fix=on] runs eap's settings: one row, eap"
    ]
    # and the results keep the note (a trial's went to the terminal alone)
    grid = plan_grid("planted", ["greater-than"], methods, False, {}, {}, seeds=1)
    assert grid.notes == merged_notes(methods, {})
    assert grid.settings["methods"] == ["eap", "eap[qk-fix=on]", "acdc[tau=0.01]"]


@pytest.mark.parametrize(
    "option, message",
    [
        ("acdc.tau", "METHOD.NAME=VALUE"),
        ("acdc.tau=x", "--tau takes a float"),
        ("acdc.tau=-1", "--tau must be at least 0"),
        ("acdc.nope=1", "acdc has no option 'nope'"),
        ("eap.nope=1", "(its options: qk-fix, grad-drop)"),  # as they are written here
        ("eap.threshold=0.1", "selects each circuit at its method's default"),
        ("eap.tau=1", "eap has no option 'tau'"),
        ("magic.tau=1", "unknown method 'magic'"),
    ],
)
def test_bad_options_are_one_line(option, message, tmp_path):
    args = ["leaderboard", "--methods", "acdc,eap", "--option", option, "--out", tmp_path]
    assert_one_line_error(run(*args), message)


def test_a_task_on_two_planted_models_gets_a_row_and_figures_per_model(tmp_path):
    """planted runs IOI on its GPT-2 and its Llama model: rows and figures per model."""
    cells = make_grid(["ioi"], ["activation-patching"], "planted", [0], 5)
    board = run_leaderboard(cells, tmp_path)
    assert [row["label"] for row in board.rows] == ["ioi (planted-ioi)", "ioi (planted-ioi-llama)"]
    assert all(row["node_auc"]["mean"] == 1.0 for row in board.rows)
    for model in ("planted-ioi", "planted-ioi-llama"):
        assert (tmp_path / f"roc-ioi-{model}.png").stat().st_size > 0


def test_the_report_links_each_seeds_circuit_page(board):
    out, _ = board
    text = (out / "index.html").read_text()
    links = re.findall(r'<a href="(circuits/[^"]+)">seed (\d)</a>', text)
    assert len(links) == 4 and all((out / link).is_file() for link, _ in links)
    for source in re.findall(r'<img src="([^"]+)"', text):
        assert (out / source).is_file()
    assert not re.search(r"https?://|<link|src=\"/", text)  # nothing from elsewhere
    # the graphs stay in the cells' files, not in results.json
    document = json.loads((out / "results.json").read_text())
    assert all("graph" not in cell for cell in document["cells"])
    cell = json.loads(next((out / "cells").glob("*.json")).read_text())
    graph = from_json_dict(cell["graph"])
    assert graph.graph["seed"] == cell["cell"]["seed"] and cell["reference_circuit"]["nodes"]


def test_the_report_in_a_browser_sorts_and_opens_circuits(board, browser):
    out, summary = board
    assert open_page(browser, out / "index.html") == []
    headings = browser.find_elements("css selector", "#results th")
    column = [h.text for h in headings].index("runtime (s)")

    def runtimes():
        cells = browser.find_elements("css selector", f"#results tbody td:nth-child({column + 1})")
        return [float(c.get_attribute("data-value")) for c in cells]

    headings[column].click()
    assert runtimes() == sorted(r["discovery_s"]["mean"] for r in summary["rows"])
    headings[column].click()
    assert runtimes() == sorted((r["discovery_s"]["mean"] for r in summary["rows"]), reverse=True)
    images = browser.find_elements("tag name", "img")
    assert images and all(int(i.get_attribute("naturalWidth")) > 0 for i in images)
    link = browser.find_element("css selector", "#results a")
    page = out / link.get_attribute("href").split(str(out), 1)[1].lstrip("/")
    link.click()
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    assert browser.find_element("id", "reference").is_enabled()  # the cell's reference
    nodes, edges = drawn(browser)
    data = json.loads(
        re.search(r'id="circuit-data">(.*?)</script>', page.read_text(), re.S).group(1)
    )
    assert (nodes, edges) == (sum(data["nodes"]["in_circuit"]), sum(data["edges"]["in_circuit"]))


PAIR = '{"clean": "When John", "corrupted": "When Sarah", "answer": "John"}\n'


@pytest.mark.parametrize(
    "problem", ["missing", "empty", "same name", "positions", "model", "unwritable"]
)
def test_a_grid_that_cannot_run_is_refused_before_any_cell(tmp_path, problem):
    """A task file that cannot be read, two task files of one name (one row), or settings
    no cell can run with: one line, and no --out directory."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "t.jsonl").write_text(PAIR)
    (tmp_path / "empty.jsonl").write_text("")
    tasks, extra, expected = {
        "missing": (str(tmp_path / "gone.jsonl"), [], "gone.jsonl"),
        "empty": (str(tmp_path / "empty.jsonl"), [], "has no prompt pairs"),
        "same name": (
            f"{tmp_path / 'a' / 't.jsonl'},{tmp_path / 'b' / 't.jsonl'}",
            [],
            "both name their task 't'",
        ),
        "positions": (
            "greater-than",
            ["--positions", "named"],
            "--positions named: hisp scores components over the whole sequence; leave hisp out",
        ),
        "model": (  # a trial's: it ran a grid of one error cell and exited 1
            "greater-than",
            ["--model", "planted-ioi"],
            "no cell can run; greater-than / hisp: greater-than needs every two-digit number",
        ),
        "unwritable": ("greater-than", [], "cannot make /proc/out in /proc: it takes no new"),
    }[problem]
    out = Path("/proc/out") if problem == "unwritable" else tmp_path / "out"
    args = ["leaderboard", "--tasks", tasks, "--methods", "hisp", "--model", "planted"]
    result = run(*args, "--seeds", 1, "--n-prompts", 4, "--out", out, *extra)
    assert_one_line_error(result, expected)
    assert not out.exists()


@pytest.mark.parametrize(
    "row, expected",
    [
        ('{"clean": "When Zebulon", "corrupted": "When Sarah", "answer": "John"}', "'Zebulon' not"),
        ('{"clean_ids": [1, 99999], "corrupted_ids": [1, 2], "answer_ids": [3]}', "id 99999"),
    ],
    ids=["unknown word", "id past the vocabulary"],
)
def test_a_task_file_the_model_cannot_read_is_refused_before_any_cell(tmp_path, row, expected):
    """As discover refuses it: one line naming the row, and no --out directory (the
    grid used to run the cell and report the error in the table)."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(PAIR + row + "\n")
    out = tmp_path / "out"
    args = ["leaderboard", "--tasks", f"ioi,{pairs}", "--methods", "hisp", "--model"]
    result = run(*args, "planted-ioi", "--seeds", 1, "--n-prompts", 4, "--out", out)
    assert_one_line_error(result, "line 2")
    assert expected in result.output
    assert not out.exists()


def test_positions_no_cells_prompts_can_make_are_refused_before_any_cell(tmp_path):
    """A new user's trial: --positions all over prompts of several lengths failed every
    cell and wrote the table; it is refused as discover refuses it, and a grid with a
    cell that can run still runs."""
    pairs = tmp_path / "two.jsonl"
    pairs.write_text(
        '{"clean": "When Michael", "corrupted": "When Jessica", "answer": "Michael"}\n'
        '{"clean": "When Michael and Jessica went", "corrupted": "When Jessica and Michael '
        'went", "answer": "Michael"}\n'
    )
    out = tmp_path / "out"
    args = ["leaderboard", "--methods", "eap", "--model", "planted-ioi", "--seeds", 1]
    result = run(*args, "--tasks", pairs, "--positions", "all", "--out", out)
    assert_one_line_error(result, "no cell can run; two / eap: --positions all needs prompts")
    assert not out.exists()
    one_length = tmp_path / "one.jsonl"
    one_length.write_text(pairs.read_text().splitlines()[0] + "\n")
    tasks = [str(pairs), str(one_length)]
    check_cells(make_grid(tasks, ["eap"], "planted-ioi", [0], 4, positions="all"))


def test_every_method_over_positions_leaves_out_those_that_cannot_and_says_so():
    # a helper's trial: --methods all --positions named ran for an hour, then exited 1 on
    # the cells of sae, transcoder and hisp
    every = parse_methods("all")
    kept, note = methods_over_positions(every, "named", {}, every=True)
    able = [m.name for m in METHODS.values() if m.scores_positions]
    assert [spec.method for spec in kept if not spec.options] == able
    assert len(kept) == len(every) - 3
    assert note == (
        "note: --positions named leaves out sae, transcoder, hisp: they score components "
        "over the whole sequence"
    )
    assert methods_over_positions(every, "none", {}, every=True) == (every, None)


def test_every_method_under_mean_or_zero_ablation_leaves_out_eap_ig_over_its_inputs():
    """EAP-IG over the inputs moves the embeddings alone, a path that never reaches the
    mean- or zero-ablated run (its authors' code refuses it): left out of every method
    with a note, refused where named; over the activations it runs."""
    every = parse_methods("all")
    kept, note = methods_under_ablation(every, "zero", {}, every=True)
    assert [spec.label for spec in every if spec not in kept] == ["eap-ig"]
    assert "eap-ig[ig-mode=activations]" in [spec.label for spec in kept]
    assert note == (
        "note: --ablation zero leaves out eap-ig: it moves the embeddings alone, a path "
        "that never reaches the zero-ablated run"
    )
    assert methods_under_ablation(every, "corrupted", {}, every=True) == (every, None)
    named = parse_methods("eap,eap-ig[ig-mode=clean-corrupted]")
    with pytest.raises(CircuitxError, match=r"^--ablation mean: eap-ig's --ig-mode clean-corr"):
        methods_under_ablation(named, "mean", {}, every=False)
    moved = {"eap-ig": {"ig_mode": "activations"}}  # --ig-mode activations for every cell
    alone = parse_methods("eap-ig")
    assert methods_under_ablation(alone, "mean", moved, every=False) == (alone, None)


def test_every_method_on_a_model_without_transcoders_leaves_the_transcoder_out(tiny_dir, tmp_path):
    """A trial's --methods all on a local model ended with an error cell and exit 1 every
    time; a built-in model's are trained, and a directory passed in options is read. The
    note says why (it gave the advice for a model without transcoders to one without
    MLPs, a directory of them given or not)."""
    every = parse_methods("all")
    kept, note = methods_for_model(every, str(tiny_dir), {}, every=True)
    assert [spec.label for spec in every if spec not in kept] == ["transcoder"]
    assert note == (
        f"note: --model {tiny_dir} leaves out transcoder: no transcoders known for model "
        f"{str(tiny_dir)!r}: name a directory of them (discover's --transcoders DIR, the "
        "leaderboard's --option transcoder.transcoders=DIR; train them with `circuitx "
        "train-transcoders`)"
    )
    save_tl_legacy_attn_only(tmp_path, word_level_tokenizer(task_vocabulary()), 2, 4, 32, 1)
    given = {"transcoder": {"transcoders": str(tmp_path)}}
    _, note = methods_for_model(every, str(tmp_path), given, every=True)
    assert note.endswith(
        f"transcoder: model {str(tmp_path)!r} has no MLPs for transcoders to replace"
    )
    for model in ("planted", "planted-ioi", "trained"):
        assert methods_for_model(every, model, {}, every=True) == (every, None)
    given = {"transcoder": {"transcoders": "some/dir"}}
    assert methods_for_model(every, str(tiny_dir), given, every=True) == (every, None)
    named = parse_methods("eap,transcoder")
    with pytest.raises(CircuitxError, match=r"^--model .*: no transcoders known for model "):
        methods_for_model(named, str(tiny_dir), {}, every=False)


def test_a_task_files_cells_are_keyed_by_its_name_and_content_not_its_path(tmp_path, monkeypatch):
    # a helper's trial: t.jsonl, ./t.jsonl and its absolute path each ran its cells anew
    named = tmp_path / "t.jsonl"
    named.write_text(PAIR)
    monkeypatch.chdir(tmp_path)
    spellings = ["t.jsonl", "./t.jsonl", str(named)]
    keys = {make_grid([path], ["eap"], "planted-ioi", [0], 4)[0].key for path in spellings}
    assert len(keys) == 1
    other = tmp_path / "sub"
    other.mkdir()
    (other / "t.jsonl").write_text(PAIR.replace("John", "Mary", 1))  # another content
    assert make_grid([str(other / "t.jsonl")], ["eap"], "planted-ioi", [0], 4)[0].key not in keys


def test_a_new_faithfulness_curve_rule_reruns_the_cells(monkeypatch):
    """A resumed leaderboard keeps no cell whose CPR and CMD were drawn another way."""
    key = make_grid(["ioi"], ["eap"], "planted-ioi", [0], 4)[0].key
    monkeypatch.setattr(discovery_request, "CURVE_RULE", "ties in graph order")
    assert make_grid(["ioi"], ["eap"], "planted-ioi", [0], 4)[0].key != key


def test_out_needs_an_existing_parent(tmp_path):
    out = tmp_path / "no" / "such" / "out"
    args = ["leaderboard", "--tasks", "greater-than", "--methods", "hisp", "--seeds", 1]
    result = run(*args, "--n-prompts", 4, "--out", out)
    assert_one_line_error(result, "parent directory does not exist")
    assert not (tmp_path / "no").exists()


def test_a_task_file_named_as_a_built_in_task_has_a_row_of_its_own(tmp_path):
    named = tmp_path / "ioi.jsonl"
    named.write_text(PAIR)
    cells = make_grid(["ioi", str(named)], ["eap"], "planted-ioi", [0], 4)
    assert [cell.task for cell in cells] == ["ioi", "ioi.jsonl"]


def test_a_stored_cell_of_the_wrong_shape_runs_again(tmp_path):
    """A cell file edited by hand (a string where a number was) is not trusted: the cell
    runs again instead of the table failing with a traceback."""
    args = ["leaderboard", "--tasks", "greater-than", "--methods", "hisp", "--seeds", 1]
    args += ["--n-prompts", 4, "--out", tmp_path, "--json"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    (stored,) = (tmp_path / "cells").glob("*.json")
    record = json.loads(stored.read_text())
    record["result"]["metrics"]["node_auc"] = "high"
    stored.write_text(json.dumps(record))
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["resumed"] == 0
    assert isinstance(json.loads(stored.read_text())["result"]["metrics"]["node_auc"], float)
    # a helper's trial: NaN (as Python's json writes it) failed the table with a traceback
    record = json.loads(stored.read_text())
    assert well_formed(record)
    for where, key, value in [
        ("report", "faithfulness", math.nan),
        ("report", "cpr", math.inf),
        ("metrics", "node_auc", 5.0),  # a share above 1
        ("metrics", "node_precision", -0.5),
    ]:
        edited = json.loads(json.dumps(record))
        (edited["result"]["metrics"] if where == "metrics" else edited["result"])[key] = value
        assert not well_formed(edited), (key, value)


def test_a_model_whose_outputs_are_nan_fails_its_cells_in_one_line(tmp_path):
    """A helper's trial: a model with a NaN weight kept a cell of bare NaN (not JSON) and
    the table failed in a traceback (statistics.pstdev on NaN), on every rerun too."""

    def poison(model):
        with torch.no_grad():
            model.transformer.h[0].mlp.c_fc.weight[0, 0] = math.nan

    model = tiny_gpt2(tmp_path / "nan-model", 2, 4, 32, edit=poison)
    args = ["leaderboard", "--tasks", "ioi", "--methods", "eap", "--model", model, "--seeds", 1]
    result = run(*args, "--n-prompts", 3, "--out", tmp_path / "board", "--json")
    assert result.exit_code != 0 and "1 of 1 cells failed" in result.stderr
    (row,) = json.loads(result.stdout)["rows"]
    assert row["error"].startswith("the model's logit-diff on the clean prompts is nan")
    assert not list((tmp_path / "board").glob("cells/*.json"))  # a failed cell is not kept
    discover = ["discover", "--task", "ioi", "--method", "eap", "--model", model]
    assert_one_line_error(run(*discover), "the model's logit-diff on the clean prompts is nan")


def test_a_method_that_cannot_run_on_the_model_by_design_is_no_failure(tmp_path):
    """A trial's: the tracr grid of every method exited 1 on atp's cells of tracr-hist,
    one layer, where GradDrop has no second block: such a cell is not applicable, its
    row says why, and the grid does not fail; discover still refuses it in one line."""
    model = tiny_gpt2(tmp_path / "one-layer", 1, 2, 16)
    args = ["leaderboard", "--tasks", "greater-than", "--methods", "atp,eap", "--model", model]
    result = run(*args, "--seeds", 1, "--n-prompts", 4, "--out", tmp_path / "board", "--json")
    assert result.exit_code == 0, result.output
    assert "note: 1 of 2 cells are not applicable" in result.stderr
    output = json.loads(result.stdout)
    assert output["failed"] == 0 and output["not_applicable"] == 1
    atp, eap = output["rows"]
    assert atp["error"].startswith("--grad-drop on (atp's default) needs at least 2 layers")
    assert atp["finished"] == 0 and eap["finished"] == 1 and eap["error"] is None
    discover = ["discover", "--task", "greater-than", "--method", "atp", "--model", model]
    assert_one_line_error(run(*discover), "--grad-drop on (atp's default) needs at least 2")


def test_the_caption_names_the_settings_the_rows_do_not_show():
    methods = parse_methods("eap,eap[qk-fix=on]")
    cells = make_grid(["greater-than"], methods, "planted", [0], 4, ablation="mean",
                      options={"eap": {"grad_drop": "on"}})  # fmt: skip
    assert non_defaults(cells) == [
        "mean ablation",
        "eap with grad-drop=on",
        "eap[qk-fix=on] with grad-drop=on",
    ]
    assert non_defaults(make_grid(["greater-than"], methods, "planted", [0], 4)) == []
    # a helper's trial: a bfloat16 board's title and caption did not say so
    half = make_grid(["greater-than"], methods, "random-12x12", [0], 4, dtype="bfloat16")
    assert non_defaults(half) == ["bfloat16"]


def test_a_rerun_with_fewer_cells_leaves_no_stale_pages_or_figures(tmp_path):
    """What an earlier run wrote and this one does not is removed; files of the same
    names' shape that no run wrote are the user's and stay (a helper's trial: a first
    run into a folder of the user's deleted them)."""
    theirs = [tmp_path / "roc-mine.png", tmp_path / "faithfulness-x.png"]
    (tmp_path / "circuits").mkdir()
    theirs.append(tmp_path / "circuits" / "keep.html")
    for path in theirs:
        path.write_bytes(b"x")
    args = ["leaderboard", "--seeds", 1, "--n-prompts", 4, "--out", tmp_path]
    first = run(*args, "--tasks", "greater-than,docstring", "--methods", "hisp,eap")
    assert first.exit_code == 0, first.output
    pages = sorted(path.name for path in (tmp_path / "circuits").glob("*-*.html"))
    assert len(pages) == 4 and (tmp_path / "roc-docstring.png").exists()
    again = run(*args, "--tasks", "greater-than", "--methods", "hisp")
    assert again.exit_code == 0, again.output
    left = sorted(path.name for path in (tmp_path / "circuits").glob("*-*.html"))
    assert left == [name for name in pages if "-hisp-" in name and "greater" in name]
    assert not (tmp_path / "roc-docstring.png").exists()
    assert (tmp_path / "roc-greater-than.png").exists()
    assert all(path.read_bytes() == b"x" for path in theirs)


def test_a_write_that_fails_leaves_the_earlier_runs_files_whole(board, tmp_path, monkeypatch):
    """A helper's trial: the disk filled while the table was written, and results.csv and
    results.md held the new run's seeds beside results.json, index.html and the plots of
    the old one."""
    leaderboard_module = importlib.import_module("circuitx.leaderboard")
    earlier, _ = board
    out = tmp_path / "board"
    shutil.copytree(earlier, out)
    for name in ("results.csv", "results.md"):  # not what this run writes
        (out / name).write_text(f"an earlier run's {name}")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full_disk(path, *args, **kwargs):  # the page, half written
        with atomic_open(path) as handle:
            handle.write("<html>")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(leaderboard_module, "write_report", full_disk)
    with pytest.raises(OSError) as raised:  # the CLI says it in a line (test_interop)
        run_leaderboard(CELLS, out)  # its cells: resumed
    assert raised.value.filename == str(out / "index.html")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # no file of the new run, none half-written, no .tmp left


def test_a_first_write_that_fails_leaves_no_pages_folder(board, tmp_path, monkeypatch):
    """A helper's trial: a first run whose page failed left an empty circuits/ folder."""
    leaderboard_module = importlib.import_module("circuitx.leaderboard")
    earlier, _ = board
    out = tmp_path / "board"
    shutil.copytree(earlier / "cells", out / "cells")  # the cells run; nothing written yet

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(leaderboard_module, "write_report", full_disk)
    with pytest.raises(OSError):
        run_leaderboard(CELLS, out)
    assert sorted(p.name for p in out.iterdir()) == ["cells"]


def test_a_cell_that_rounds_to_zero_shows_no_minus_sign():
    assert format_value({"mean": -3.66e-7, "std": 0.0}, seeds=3) == "0.000 ± 0.000"
    assert format_value({"mean": -0.086, "std": 0.059}, seeds=3) == "-0.086 ± 0.059"


def test_a_reference_names_its_task_file_by_any_path_and_past_an_equals_sign(tmp_path, monkeypatch):
    """A helper's trial: 'x=y.jsonl=ref' split at the first '=' and ./pairs.jsonl did not
    name the task pairs.jsonl."""
    monkeypatch.chdir(tmp_path)
    row = {"clean": "When John", "corrupted": "When Mary", "answer": "went", "wrong": "ran"}
    for name in ("pairs.jsonl", "x=y.jsonl"):
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    reference = tmp_path / "ref.graphml"
    write_graph(full_graph(2, 2, True), reference)
    tasks = ["pairs.jsonl", "x=y.jsonl"]
    found = parse_references([f"./pairs.jsonl={reference}", f"x=y.jsonl={reference}"], tasks)
    assert found == {"pairs.jsonl": str(reference), "x=y.jsonl": str(reference)}
    with pytest.raises(CircuitxError, match="give TASK=REFERENCE with TASK one of --tasks"):
        parse_references([f"other.jsonl={reference}"], tasks)
    # a trial's: a task with no =REFERENCE was said to be no task of --tasks
    with pytest.raises(CircuitxError, match="names a task and no reference: give pairs.jsonl="):
        parse_references(["pairs.jsonl"], tasks)
    # a helper's trial: Python's references= took neither a Path nor another path to the
    # file (a task object goes by its absolute path)
    absolute = [str(tmp_path / "pairs.jsonl")]
    assert check_references({Path("pairs.jsonl"): reference}, absolute) == {
        absolute[0]: str(reference)
    }
    # a helper's trial: the name the rows show, which the no-reference note gave
    assert parse_references([f"pairs={reference}"], tasks) == {"pairs.jsonl": str(reference)}


def test_the_no_reference_note_names_the_task_as_tasks_does(tiny_dir, tmp_path, monkeypatch):
    """A helper's trial: the note said --reference opp_csv=FILE for --tasks opp_csv.csv,
    which --reference then refused."""
    monkeypatch.chdir(tmp_path)
    row = {"clean": "When John", "corrupted": "When Mary", "answer": "went", "wrong": "ran"}
    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    args = ["leaderboard", "--tasks", "pairs.jsonl", "--methods", "activation-patching"]
    result = run(*args, "--model", tiny_dir, "--seeds", 1, "--out", tmp_path / "lb")
    assert result.exit_code == 0, result.output
    assert "pass --reference pairs.jsonl=" in result.stderr


def test_a_task_file_with_commas_in_its_name_is_one_task(tmp_path):
    """A helper's trial: --tasks split a file name at its commas."""
    odd = tmp_path / "pairs,v2,final.jsonl"
    odd.write_text("")
    spec = f"ioi,{odd},greater-than"
    assert parse_names(spec, list(TASKS), "task", also=is_task_file) == [
        "ioi",
        str(odd),
        "greater-than",
    ]
    # a name that is no file is split as before
    assert parse_names("ioi,b.jsonl", list(TASKS), "task", also=is_task_file) == ["ioi", "b.jsonl"]


def test_a_script_without_a_main_guard_is_told_to_add_one(monkeypatch):
    """A helper's trial: cx.leaderboard(jobs=2) at a script's top level ran the script again
    in each worker, whose own leaderboard failed to start; every cell died unexplained. Later
    each worker printed a traceback of its own: a worker now ends quietly, and the process
    that started it says why, once."""
    from concurrent import futures
    from concurrent.futures.process import BrokenProcessPool

    from circuitx.leaderboard import executors

    script = "from circuitx.leaderboard.executors import check_not_a_worker\ncheck_not_a_worker({})"
    with pytest.raises(SystemExit) as ended:
        exec(compile(script.format(2), "script.py", "exec"), {"__name__": "__mp_main__"})
    assert ended.value.code == 1
    exec(compile(script.format(1), "script.py", "exec"), {"__name__": "__mp_main__"})
    exec(compile(script.format(2), "script.py", "exec"), {"__name__": "__main__"})
    died = futures.Future()
    died.set_exception(BrokenProcessPool("terminated abruptly"))
    assert executors._future_result(died) is executors.LOST  # run again, in a new pool
    main = type(sys)("__main__")
    main.__file__, main.__spec__ = "script.py", None
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert executors._died().endswith(f"({executors.UNGUARDED})")
    main.__spec__ = "a module run with python -m"
    assert executors._died() == "a worker process ended abruptly (killed, or out of memory?)"
    # a trial: the circuitx command (a console script, run by its path) was given the hint
    main.__spec__, main.main = None, types.SimpleNamespace(__module__="circuitx.cli")
    assert executors._died() == "a worker process ended abruptly (killed, or out of memory?)"


@dataclass(frozen=True)
class _Cell:
    """A stand-in cell whose work kills its worker process, once or always."""

    key: str
    marker: str
    dies: str = "never"  # once, always

    @property
    def label(self) -> str:
        return self.key


def _dies(cell: _Cell, threads: int) -> dict:
    if cell.dies == "always" or (cell.dies == "once" and not os.path.exists(cell.marker)):
        Path(cell.marker).write_text("died")
        os._exit(9)
    return {"key": cell.key, "status": "ok"}


def test_a_worker_that_dies_loses_its_cells_once_not_the_grid(tmp_path):
    """A trial: one worker killed with SIGKILL failed every cell left in the grid (30 of
    32), each told to guard a script's call. The cells the broken pool lost run again in
    a new one; a cell lost twice, or every cell left when a pool finishes none, is an
    error; each cell is started and done once, in that order."""
    from circuitx.leaderboard import executors

    def run_cells(dies: dict[int, str]) -> dict[str, str]:
        cells = [
            _Cell(f"c{i}", str(tmp_path / f"{i}-{dies}"), dies.get(i, "never")) for i in range(3)
        ]
        said = []
        executors._run_in_processes(
            cells,
            2,
            1,
            on_start=lambda cell: said.append(("start", cell.key)),
            on_done=lambda cell, record: said.append(("done", cell.key, record)),
            work=_dies,
        )
        started = [entry[1] for entry in said if entry[0] == "start"]
        done = [entry[1] for entry in said if entry[0] == "done"]
        assert sorted(started) == sorted(done) == [cell.key for cell in cells]
        for key in done:
            assert said.index(("start", key)) < [entry[:2] for entry in said].index(("done", key))
        records = {entry[1]: entry[2] for entry in said if entry[0] == "done"}
        return {key: record.get("error", record["status"]) for key, record in records.items()}

    died = "a worker process ended abruptly (killed, or out of memory?)"
    assert set(run_cells({1: "once"}).values()) == {"ok"}
    assert run_cells({1: "always"}) == {"c0": "ok", "c1": died, "c2": "ok"}
    assert set(run_cells({i: "always" for i in range(3)}).values()) == {died}


def _held_signals(cell: _Cell, threads: int) -> dict:
    held = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    return {"key": cell.key, "status": "ok", "held": held}


def test_a_ctrl_c_while_workers_start_ends_them_quietly(tmp_path, monkeypatch):
    """A trial: a terminal's Ctrl-C (to every process of the group) while --jobs 2's
    workers imported circuitx and torch printed a KeyboardInterrupt traceback from each.
    A worker starts with Ctrl-C held back and takes it once started; one that came while
    it started ends it without a word."""
    from circuitx.leaderboard import executors

    holds = []

    @contextlib.contextmanager
    def counted_hold():
        with ctrl_c_held():
            holds.append(signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))
            yield

    monkeypatch.setattr(executors, "ctrl_c_held", counted_hold)
    records = []
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    executors._run_in_processes(
        [_Cell(f"c{i}", str(tmp_path / str(i)), "never") for i in range(2)],
        2,
        1,
        on_start=lambda cell: None,
        on_done=lambda cell, record: records.append(record),
        work=_held_signals,
    )
    assert holds == [True, True]  # each worker started under the hold
    assert [record["held"] for record in records] == [False, False]  # its cell stoppable
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # and the leaderboard
    starting = (
        "import os, signal\n"
        # as a terminal's process has it (a CLI run in this process left it ignored)
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C while it imported\n"
        "from circuitx.leaderboard.executors import _end_with_parent\n"
        "_end_with_parent(os.getppid())\n"
        "print('ran on')\n"
    )
    ended = subprocess.run([sys.executable, "-c", starting], capture_output=True, text=True)
    assert (ended.returncode, ended.stdout, ended.stderr) == (1, "", "")


def test_a_worker_ends_when_its_leaderboard_is_killed(tmp_path):
    """A trial: a --jobs 2 leaderboard killed with SIGKILL left its workers running, with
    their memory, for good. A worker now ends when the process that started it is gone."""
    child = (
        "import os, time\n"
        "from circuitx.leaderboard.executors import _end_with_parent\n"
        "_end_with_parent(os.getppid())\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = (
        "import os, subprocess, sys\n"
        f"worker = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE)\n"
        "print(worker.stdout.readline().decode().strip(), flush=True)\n"
        "os._exit(9)\n"  # as SIGKILL: nothing tidied
    )
    started = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True)
    worker = int(started.stdout.strip())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _running(worker):
        time.sleep(0.2)
    assert not _running(worker)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat")  # a zombie has ended, only not yet been reaped
    return not (state.exists() and state.read_text().split()[2] == "Z")


def test_python_leaderboard_warns_of_failed_cells():
    """The command exits 1 when cells fail; cx.leaderboard returned in silence."""
    from circuitx import api

    board = Leaderboard(rows=[], records=[
        {"status": "ok"},
        {"status": "error", "error": "boom"},
        {"status": "error", "error": "boom"},
        {"status": "not applicable", "error": "by design"},  # no failure
    ])  # fmt: skip
    assert api._failures(board) == [
        "2 of 4 cells failed (board.records hold each one's error): boom"
    ]
    board.records = [{"status": "ok"}, {"status": "not applicable", "error": "by design"}]
    assert api._failures(board) == []


def test_a_reference_file_of_another_shape_is_refused_before_any_cell(tmp_path):
    """A helper's trial: every cell failed with 'is for another model shape', exit 1, and
    the results were an error table; discover refuses it in one line."""
    reference = tmp_path / "ref.graphml"
    write_graph(full_graph(2, 2, True), reference)
    out = tmp_path / "board"
    result = run("leaderboard", *GRID, "--reference", f"greater-than={reference}", "--out", out)
    assert_one_line_error(
        result, f"on model planted-greater-than: reference {reference} is for a model of 2 layers"
    )
    assert result.exit_code == 2 and not out.exists()
    # a published circuit by name: refused as discover refuses it (a helper's trial)
    result = run("leaderboard", *GRID, "--reference", "greater-than=ioi", "--out", out)
    assert_one_line_error(
        result, "on model planted-greater-than: the ioi reference circuit needs at least 12"
    )
    assert result.exit_code == 2 and not out.exists()


def test_a_cells_run_warnings_are_in_its_record_and_noted(tmp_path):
    """A helper's trial: an empty circuit, which discover warns of, was in the leaderboard
    only as a '-' (its record's warnings were [])."""
    out = tmp_path / "board"
    methods = "eap,eap[qk-fix=off]"  # one row, and a note of the grid's that says so
    args = ("--tasks", "greater-than", "--methods", methods, "--n-prompts", 6, "--seeds", 2)
    result = run("leaderboard", *args, "--out", out)
    assert result.exit_code == 0, result.output
    merged = "eap[qk-fix=off] runs eap's settings: one row, eap"
    row = "warning: greater-than / eap on planted-greater-than, seeds 0, 1: "
    said = ("eap takes the gradient of prob-diff at the clean run", "no component is in")
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        line for line in result.stderr.splitlines() if line.startswith(tuple(row + s for s in said))
    ]
    assert len([line for line in result.stderr.splitlines() if line.startswith(row)]) == 2
    records = json.loads((out / "results.json").read_text())["cells"]
    assert all("no component is in the circuit" in r["result"]["warnings"][1] for r in records)
    assert all("softmax is flat" in r["result"]["warnings"][0] for r in records)
    # and in the report, whose row otherwise shows a "-" with no reason (a trial's)
    page = (out / "index.html").read_text()
    notes = re.findall(r"<li>(.*?)</li>", page.split("<h2>Notes</h2>")[1].split("</ul>")[0])
    assert len(notes) == 4 and all(n.startswith(html.escape(row)) for n in notes[1:3])
    assert notes[0] == html.escape(merged)  # the grid's notes too (a trial's were lost)
    # their advice names discover's flags (a trial's "lower --threshold"): said once
    flags = "the warnings name discover's flags: here a method's option is --option"
    assert notes[3].startswith(html.escape(flags)) and f"note: {flags}" in result.stderr
    document = json.loads((out / "results.json").read_text())  # and there (a trial's)
    assert [f"warning: {line}" for line in document["warnings"]] == [
        line for line in result.stderr.splitlines() if line.startswith("warning:")
    ]
    assert document["notes"] == [merged, html.unescape(notes[3])]


def test_a_warning_every_row_of_a_task_gives_is_said_once():
    """A trial's task-file warning came once per method row; a method's own stays its."""
    cells = make_grid(["greater-than"], ["eap", "acdc"], "planted", [0, 1], 4)
    shared, own = "the task file says so", "eap's own"
    records = [
        {"result": {"warnings": [shared] + ([own] if c.method == "eap" else [])}} for c in cells
    ]
    row = "greater-than / {} on planted-greater-than, seeds 0, 1: {}"
    assert warning_notes(cells, records) == [
        "warning: " + row.format("every method", shared),
        "warning: " + row.format("eap", own),
    ]
    records[-1] = {"result": {"warnings": []}}  # acdc at seed 1 says nothing: each row's
    assert len([n for n in warning_notes(cells, records) if shared in n]) == 2


def test_an_option_from_python_is_checked_as_discover_checks_it():
    # a helper's trial: cx.leaderboard(options={"eap": {"qk_fix": True}}) said "unknown
    # --qk-fix 'True'", where cx.discover(..., qk_fix=True) runs with "on"
    assert method_option("eap", "qk_fix", True) == ("qk_fix", "on")
    assert method_option("eap", "qk-fix", "on") == ("qk_fix", "on")
    assert method_option("acdc", "tau", 1) == ("tau", 1.0)
    with pytest.raises(CircuitxError, match="--tau must be a finite number"):
        method_option("acdc", "tau", math.nan)


def test_all_alone_and_no_method_are_said_so():
    # a helper's trial: "unknown task 'all'; choose from all, ..." and "unknown method ''"
    with pytest.raises(CircuitxError, match="all is every task: give it alone"):
        parse_names("all,greater-than", list(TASKS), "task")
    with pytest.raises(CircuitxError, match="all is every method: give it alone"):
        parse_methods("all,hisp")
    with pytest.raises(CircuitxError, match="no method given"):
        parse_methods(" , ")


def test_built_in_transcoders_are_trained_before_the_cells(monkeypatch):
    """A trial: inside a cell (bars silenced) the first-use training went unsaid; it runs
    first, once a model, with discover's line."""
    board = importlib.import_module("circuitx.leaderboard")  # circuitx.leaderboard: the API's
    trained = []
    monkeypatch.setattr(board, "transcoders_for", lambda model, *_: trained.append(model.name))
    grid = make_grid(["greater-than"], ["transcoder", "eap"], "planted", [0, 1], 4)
    board.train_transcoders_first(grid)
    assert trained == ["planted-greater-than"]
    options = {"transcoder": {"transcoders": "mine/"}}
    board.train_transcoders_first(make_grid(["greater-than"], ["transcoder"], "planted", [0],
                                            4, options=options))  # fmt: skip
    assert trained == ["planted-greater-than"]


def test_the_table_says_why_scores_are_missing_and_how_many_prompts_ran(tmp_path):
    """A trial: every score "-" on random-12x12 (no reference: auto uses the published
    ones on GPT-2 only) went unexplained, and tracr's caption said 10 prompts of 6."""
    args = ["leaderboard", "--methods", "hisp", "--seeds", 1, "--n-prompts", 10]
    result = run(*args, "--tasks", "ioi", "--model", "random-12x12", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert "note: ioi on random-12x12: --reference auto uses the ioi reference only" in (
        result.stderr
    )
    assert "pass --reference ioi=ioi to use it here" in result.stderr
    caption = (tmp_path / "r" / "results.md").read_text().splitlines()[-1]
    assert 'No reference for ioi on random-12x12, so their scores are "-"' in caption
    # a cell added with another --threads: the table mixes thread counts, and says so
    more = run(*args, "--tasks", "ioi,greater-than", "--model", "random-12x12", "--threads", 2,
               "--out", tmp_path / "r")  # fmt: skip
    assert more.exit_code == 0, more.output
    caption = (tmp_path / "r" / "results.md").read_text().splitlines()[-1]
    assert "; on 1 and 2 torch threads a cell." in caption
    # a trial: resumed at another --threads, the cells of one thread count were kept silently
    assert "note: 1 resumed cell ran on 1 torch thread, not --threads 2: kept" in more.stderr
    result = run(*args, "--tasks", "tracr", "--model", "tracr-reverse", "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    caption = (tmp_path / "t" / "results.md").read_text().splitlines()[-1]
    assert "10 prompts (tracr: 6, all a task has)" in caption and "No reference" not in caption


def test_a_task_file_named_with_a_bar_keeps_the_table_and_file_names_whole(tmp_path):
    """A trial: 'we ird,x|y#z.jsonl' gave results.md's row an extra column, and plots
    named with the raw name while the pages were sanitised."""
    odd = tmp_path / "my task|v#2.jsonl"
    odd.write_text(PAIR * 4)
    out = tmp_path / "out"
    args = ["--methods", "activation-patching", "--model", "planted-ioi", "--seeds", 1]
    result = run("leaderboard", "--tasks", odd, *args, "--n-prompts", 4, "--out", out)
    assert result.exit_code == 0, result.output
    header, _, row = (out / "results.md").read_text().splitlines()[:3]
    assert row.startswith("| my task\\|v#2 | activation-patching |")
    assert row.replace("\\|", "").count("|") == header.count("|")
    assert (out / "roc-my_task_v_2.png").exists()
    assert 'src="roc-my_task_v_2.png"' in (out / "index.html").read_text()


def test_a_narrow_terminal_shows_every_number_whole(board):
    """A trial: at 80 columns the table cut its numbers to '1.0…'; it shows the means,
    folding the task and method names instead."""
    from rich.console import Console

    from circuitx.cli.leaderboard import results_table

    _, summary = board
    rows = summary["rows"]
    for width, means_only in ((80, True), (240, False)):
        console = Console(file=io.StringIO(), width=width, force_terminal=False)
        console.print(results_table(rows, "t", width))
        text = console.file.getvalue()
        assert "…" not in text and max(map(len, text.splitlines())) <= width
        cpr = rows[0]["cpr"]
        shown = f"{cpr['mean']:.3f}" + ("" if means_only else f" ± {cpr['std']:.3f}")
        assert shown in text
    assert "± std in results.md" in results_table(rows, "t", 80).title
    one_seed = [{**row, "seeds": 1, "finished": 1} for row in rows]  # no ± to leave out
    assert results_table(one_seed, "t", 80).title == "t"


def test_a_method_that_cannot_take_a_task_is_left_out_with_a_note(tmp_path):
    """A helper's trial: the docs' trained leaderboard always exited 1, its sae cells on the
    tracr tasks failing a refusal by design (no unanswerable prompts to contrast)."""
    args = ["leaderboard", "--model", "tracr-reverse", "--tasks", "tracr", "--seeds", 1]
    args += ["--n-prompts", 6, "--json"]
    both = run(*args, "--methods", "activation-patching,sae", "--out", tmp_path / "a")
    assert both.exit_code == 0, both.output
    assert "note: sae on tracr left out: the method contrasts prompts" in both.stderr
    assert [row["method"] for row in json.loads(both.stdout)["rows"]] == ["activation-patching"]
    alone = run(*args, "--methods", "sae", "--out", tmp_path / "b")
    assert_one_line_error(alone, "no cell can run; tracr / sae: sae contrasts prompts")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "taken", ["results.json/", "index.html/", "roc-greater-than.png/", "cells", "circuits", "cell/"]
)
def test_a_taken_result_path_is_refused_before_any_cell(tmp_path, taken):
    """A trial: a directory named results.json ran every cell, wrote the other files and
    then failed; a file named cells failed after the first cell ('File exists'); a
    directory where a cell's file goes aborted the grid there. Each is refused first."""
    out = tmp_path / "board"
    out.mkdir()
    if taken == "cell/":
        (cell,) = make_grid(["greater-than"], ["eap"], "planted", [0], 10)
        taken = f"cells/{cell.key}.json/"
    path = out / taken.rstrip("/")
    if taken.endswith("/"):
        path.mkdir(parents=True)
    else:
        path.write_text("mine")
    result = run("leaderboard", *GRID[:3], "eap", *GRID[4:], "--seeds", 1, "--out", out)
    kind = "a directory, where the leaderboard writes a file"
    if not taken.endswith("/"):
        kind = "a file, where the leaderboard keeps a folder"
    assert_one_line_error(result, f"{path} is {kind}")
    assert result.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == [taken.split("/")[0]]  # nothing written


def test_a_logs_lines_name_the_running_cell_and_its_model(tmp_path, monkeypatch):
    """A trial: with --jobs 1 every log line was labelled 'done' (the bar's label between
    cells), and the running label left out the model, which a grid may vary."""
    from circuitx import progress

    (cell,) = make_grid(["ioi"], ["eap"], str(tmp_path / "my-model"), [2], 10)
    assert cell.label == "ioi / eap / my-model / seed 2"
    monkeypatch.setattr(progress, "LINE_EVERY", 0.05)
    result = run("leaderboard", *GRID, "--seeds", 1, "--out", tmp_path / "board")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    # the cell running (whole: a log's line has the room), or, between cells, the one
    # that finished
    running = "running greater-than / activation-patching / planted-greater-than / seed 0: 0/2"
    finished = "finished greater-than / activation-patching / planted-greater-than / seed 0: 1/2"
    assert any(line.startswith(running) for line in lines), lines
    assert any(
        line.startswith((finished, "running greater-than / eap / planted")) for line in lines
    )
    assert not any(line.startswith("done:") for line in lines)
