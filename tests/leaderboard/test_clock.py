"""The leaderboard's time left, told from finished cells like the unfinished ones."""

from __future__ import annotations

import pytest

from circuitx.leaderboard import clock as clock_module
from circuitx.leaderboard.clock import CellClock
from circuitx.leaderboard.grid import make_grid

# two tasks x two rows x two seeds; each row's cells adjacent, seeds innermost
CELLS = make_grid(
    ["docstring", "greater-than"], ["activation-patching", "acdc"], "planted", [0, 1], 5
)


def ran(seconds: float, status: str = "ok") -> dict:
    return {"status": status, "wall_s": seconds}


@pytest.fixture
def now(monkeypatch):
    time = [1000.0]
    monkeypatch.setattr(clock_module.time, "monotonic", lambda: time[0])
    return time


def test_it_cannot_tell_until_each_unfinished_cells_row_has_run(now):
    """A trial: the grid's bar told its time left from the mean cell, though ACDC's cells
    take hundreds of times activation patching's."""
    clock = CellClock(CELLS, {}, jobs=1)
    assert clock() is None
    clock.done(CELLS[0], ran(2.0))  # docstring / activation-patching / seed 0
    assert clock() is None  # acdc has not run
    clock.done(CELLS[2], ran(300.0))  # docstring / acdc / seed 0
    # docstring's other seeds: 2 + 300; greater-than's four cells, by the rows' times there
    assert clock() == pytest.approx(2 + 300 + 2 * (2 + 300))


def test_a_task_s_own_times_win_over_the_rows_elsewhere(now):
    records = {CELLS[i].key: ran(s) for i, s in [(0, 2.0), (1, 4.0), (2, 300.0), (3, 500.0)]}
    clock = CellClock(CELLS, records, jobs=1)  # resumed: docstring done
    assert clock() == pytest.approx(2 * 3 + 2 * 400)
    clock.done(CELLS[4], ran(1.0))  # greater-than's activation patching: its seed 1 by it
    assert clock() == pytest.approx(1 + 2 * 400)


def test_running_cells_count_their_time_so_far_and_jobs_share_the_rest(now):
    clock = CellClock(CELLS, {CELLS[0].key: ran(10.0), CELLS[2].key: ran(100.0)}, jobs=2)
    left = (10 + 100 + 2 * (10 + 100)) / 2
    assert clock() == pytest.approx(left)
    clock.start(CELLS[3])  # docstring / acdc / seed 1
    now[0] += 30
    assert clock() == pytest.approx(left - 30 / 2)
    now[0] += 500  # past its guess: it has no time left, not less than none
    assert clock() == pytest.approx((10 + 2 * (10 + 100)) / 2)


def test_failed_cells_do_not_count_as_a_rows_time(now):
    clock = CellClock(CELLS[:2], {}, jobs=4)
    clock.done(CELLS[0], ran(0.01, status="error"))
    assert clock() is None
    clock.done(CELLS[0], ran(3.0))
    assert clock() == pytest.approx(3.0)  # one cell left, on one of the four workers


def test_the_bars_label_leaves_room_for_its_counts_and_times():
    """A trial's 80-column terminal cut the elapsed time to "0:00:" under the names of the
    cells running; the label keeps to RUNNING_WIDTH, the model and seed kept."""
    from circuitx.leaderboard import RUNNING_WIDTH, running_text

    assert running_text(["ioi / eap / m / seed 0"]) == "running ioi / eap / m / seed 0"
    long = running_text(["colored-objects / subnetwork-probing / planted / seed 2"])
    assert len(long) == RUNNING_WIDTH and long.endswith("… / seed 2")
    whole = "running colored-objects / subnetwork-probing / planted / seed 2"
    assert running_text(["colored-objects / subnetwork-probing / planted / seed 2"], None) == whole
    two = running_text(["greater-than / acdc / planted / seed 1", "ioi / eap / planted / seed 0"])
    assert two.startswith("running 2 cells: greater-than") and len(two) == RUNNING_WIDTH
