import pytest

from circuitx import progress
from circuitx.methods import get_method
from circuitx.progress import fixed, progress_bar, silenced


def test_an_announced_bar_is_one_line_on_a_stderr_that_is_not_a_terminal(capsys):
    with progress_bar("training transcoders for m (first use)", 3, announced=True) as advance:
        advance(3)
    with progress_bar("a quiet bar", 3) as advance:
        advance(3)
    with silenced(), progress_bar("silenced", 3, announced=True):
        pass
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["training transcoders for m (first use) ..."]
    assert captured.out == ""


@pytest.mark.parametrize(
    "value, shown",
    [(-3.66e-7, "0.000"), (-0.0, "0.000"), (-0.0004999, "0.000"), (-0.01, "-0.010"),
     (1.5, "1.500"), (float("nan"), "nan"), (float("-inf"), "-inf")],
)  # fmt: skip
def test_a_negative_that_rounds_to_zero_is_shown_as_zero(value, shown):
    assert fixed(value) == shown


def test_a_log_gets_a_line_of_progress_and_time_left_now_and_then(capsys, monkeypatch):
    """A helper's trial: acdc with stderr to a file said nothing for minutes."""
    clock = iter([0.0, 30.0, 70.0, 100.0, 150.0])  # the start, then one per step
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress_bar("acdc on ioi", 8) as advance:
        advance(1)  # 30 s: too soon for a line
        advance(1)  # 70 s: 2 of 8 done, so about 3 times as long again
        advance(1, description="acdc on ioi: layer 3")  # 100 s: too soon after the last
        advance(1)  # 150 s
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "acdc on ioi: 2/8, 0:01:10 so far, about 0:03:30 left",
        "acdc on ioi: layer 3: 4/8, 0:02:30 so far, about 0:02:30 left",
    ]
    with silenced(), progress_bar("silenced", 8) as advance:
        advance(8)
    assert capsys.readouterr().err == ""


def test_steps_of_uneven_cost_tell_no_time_left(capsys, monkeypatch):
    """A helper's trial: ACDC over positions said "about 0:00:27 left" two minutes in, and
    ran three minutes in all (a later receiver's trials rerun fewer layers)."""
    clock = iter([0.0, 70.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress_bar("acdc on ioi", 8, time_left=False) as advance:
        advance(2)
    assert capsys.readouterr().err.splitlines() == ["acdc on ioi: 2/8, 0:01:10 so far"]
    assert not get_method("acdc").even_steps and not get_method("path-patching").even_steps
    assert get_method("edge-pruning").even_steps


def test_resumed_work_counts_but_does_not_speed_the_time_left(capsys, monkeypatch):
    """A trial: a resumed leaderboard counted its 22 stored cells as progress made at
    once, so the time left was told from a speed no cell ran at."""
    clock = iter([0.0, 70.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress_bar("leaderboard", 40, start=22) as advance:
        advance(2)  # 70 s for 2 cells: 16 left take 560 s
    assert capsys.readouterr().err.splitlines() == [
        "leaderboard: 24/40, 0:01:10 so far, about 0:09:20 left"
    ]


def test_counted_says_one_in_the_singular():
    """A helper's trial: a caption and the page's status read "1 nodes"."""
    from circuitx.progress import counted

    assert [counted(n, "node") for n in (0, 1, 2)] == ["0 nodes", "1 node", "2 nodes"]


def test_a_log_line_counts_whole_steps(capsys, monkeypatch):
    """A helper's trial: CD-T's fractional steps were logged as "101.0/158"."""
    clock = iter([0.0, 70.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress_bar("cdt", 8) as advance:
        advance(2.5)
    assert capsys.readouterr().err.splitlines() == ["cdt: 2/8, 0:01:10 so far, about 0:02:34 left"]


def test_a_bar_can_tell_its_time_left_from_the_callers_estimate(capsys, monkeypatch):
    """The leaderboard's cells differ in cost; it tells the time left from cells like
    those left (:class:`circuitx.leaderboard.clock.CellClock`), or not while it cannot."""
    clock = iter([0.0, 70.0, 140.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    estimates = iter([None, 600.0])
    with progress_bar("leaderboard", 40, time_left=lambda: next(estimates)) as advance:
        advance(2)
        advance(2)
    assert capsys.readouterr().err.splitlines() == [
        "leaderboard: 2/40, 0:01:10 so far",
        "leaderboard: 4/40, 0:02:20 so far, about 0:10:00 left",
    ]


def test_the_estimate_column_draws_what_the_estimate_says():
    estimates = iter([None, 3725.4])
    column = progress._EstimateColumn(lambda: next(estimates))
    assert [column.render(None).plain for _ in range(2)] == ["-:--:--", "1:02:05"]  # no task


def test_a_long_step_gets_its_line_in_a_log(capsys, monkeypatch):
    """A trial: a leaderboard cell of 103 s logged no line (a line came only as a step
    ended), where the docs promise a line a minute."""
    import time

    monkeypatch.setattr(progress, "LINE_EVERY", 0.3)
    with progress_bar("edge-pruning on ioi", 3, time_left=False) as advance:
        time.sleep(1.0)  # one long step: lines while it runs
        advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2
    assert all(line.startswith("edge-pruning on ioi: 0/3, 0:00:0") for line in lines[:2])
    with progress_bar("edge-pruning on ioi", 3) as advance:  # no step done: no speed yet
        time.sleep(0.5)
        advance(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines and lines[0].startswith("edge-pruning on ioi: 0/3") and "left" not in lines[0]
    with progress_bar("quick", 3) as advance:
        advance(3)
    time.sleep(0.5)  # the bar has ended: its watcher with it
    assert capsys.readouterr().err == ""
