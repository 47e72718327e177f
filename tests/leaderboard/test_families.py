"""Model families on the leaderboard: what --tasks all means, and a family with several
models for one task (tracr)."""

from __future__ import annotations

import pytest
from conftest import assert_one_line_error, run

from circuitx.leaderboard import make_grid, run_leaderboard, tasks_for

PLANTED_TASKS = ["ioi", "greater-than", "docstring", "colored-objects"]


def test_all_tasks_means_the_familys_tasks(tmp_path):
    assert tasks_for("planted") == PLANTED_TASKS
    assert tasks_for("tracr") == ["tracr"]
    assert tasks_for("random-12x12") == PLANTED_TASKS  # tracr needs a tracr model
    # a tracr model runs tracr only (a helper's trial: a build-tracr directory ran the
    # other four tasks, every cell failing)
    assert tasks_for("tracr-reverse") == tasks_for("trained-tracr-proportion") == ["tracr"]
    from circuitx.tasks.tracr import PROGRAM_FILE, TracrProgram

    program = TracrProgram("p", ["a", "b"], 3, 3, "BOS", "pad", False, [], [], "sequences")
    program.write(tmp_path)
    assert (tmp_path / PROGRAM_FILE).is_file() and tasks_for(str(tmp_path)) == ["tracr"]


def test_discover_asks_which_tracr_model():
    result = run("discover", "--task", "tracr", "--method", "eap", "--model", "tracr")
    assert_one_line_error(result, "the tracr family has 4 models for task tracr")


def test_the_tracr_family_runs_each_of_its_models(tmp_path):
    pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")
    cells = make_grid(["tracr"], ["eap"], "tracr", [0], 6, ablation="zero")
    assert [cell.model for cell in cells] == [
        "tracr-reverse",
        "tracr-proportion",
        "tracr-sort",
        "tracr-hist",
    ]
    board = run_leaderboard(cells[:2], tmp_path)
    assert [row["label"] for row in board.rows] == [
        "tracr (tracr-reverse)",
        "tracr (tracr-proportion)",
    ]
    assert all(record["status"] == "ok" for record in board.records)
    assert "| tracr (tracr-proportion) | eap |" in (tmp_path / "results.md").read_text()
