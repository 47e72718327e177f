"""Output files: atomic writes, output paths checked before work, strict JSON."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys

import pytest

from circuitx.builtin.cache import build_once
from circuitx.errors import (
    CircuitxError,
    Terminated,
    clear_interrupt,
    deferred_interrupts,
    on_interrupt,
    on_terminate,
)
from circuitx.files import (
    atomic_open,
    check_output_path,
    claim_directory,
    json_text,
    written_together,
)


def test_atomic_open_writes_with_the_usual_permissions(tmp_path):
    path = tmp_path / "out.txt"
    with atomic_open(path) as handle:
        handle.write("done")
    assert path.read_text() == "done"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_open_leaves_nothing_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_files_written_together_replace_theirs_all_or_none(tmp_path):
    """A trial: a run's graph replaced an earlier run's, then its picture failed and the
    graph was deleted, so neither run's was left; a leaderboard whose disk filled wrote
    results.csv and results.md of a new run beside results.json of the old."""
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("old a")
    second.write_text("old b")
    with pytest.raises(OSError) as raised, written_together():
        with atomic_open(first) as handle:
            handle.write("new a")
        assert first.read_text() == "old a"  # not yet: it waits for the set
        with atomic_open(second) as handle:
            handle.write("half of b")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.filename == str(second)  # the disk's error named no file
    assert (first.read_text(), second.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no .tmp
    with written_together():
        for path in (first, second):
            with atomic_open(path) as handle:
                handle.write(f"new {path.stem}")
    assert (first.read_text(), second.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    "path, pattern",
    [
        ("/no/such/dir/x.json", "output directory does not exist"),
        ("/proc/x.json", "cannot write to /proc: it takes no new files"),
        ("/dev/full", "not a regular file"),
        ("/dev/null", "not a regular file"),
    ],
)
def test_an_output_path_that_cannot_be_written_is_refused(path, pattern):
    with pytest.raises(CircuitxError, match=pattern):
        check_output_path(path)


def test_an_output_path_that_is_a_directory_is_refused_and_the_probe_leaves_nothing(tmp_path):
    with pytest.raises(CircuitxError, match="is a directory"):
        check_output_path(tmp_path)
    check_output_path(tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(CircuitxError, match="ends in a slash, which names a directory"):
        check_output_path(f"{tmp_path}/x.graphml/")  # was written as the file x.graphml


def test_a_link_is_written_through_and_stays_a_link(tmp_path):
    target, link, dangling = tmp_path / "target.json", tmp_path / "link.json", tmp_path / "d"
    target.write_text("old")
    link.symlink_to(target)
    with atomic_open(link) as handle:
        handle.write("new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling.symlink_to(tmp_path / "made.json")  # a link to a file not yet made makes it
    with atomic_open(dangling) as handle:
        handle.write("made")
    assert dangling.is_symlink() and (tmp_path / "made.json").read_text() == "made"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "stdout").symlink_to(fifo)  # /dev/stdout into a pipe
    with pytest.raises(CircuitxError, match="not a regular file"):
        check_output_path(tmp_path / "stdout")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "d", "fifo", "link.json", "made.json", "stdout", "target.json"
    ]  # fmt: skip


def test_json_text_writes_no_nan_or_infinity():
    text = json_text({"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": {"d": 2.5}})
    assert json.loads(text) == {"a": None, "b": [1.0, None, None], "c": {"d": 2.5}}


def test_a_users_out_another_run_wrote_first_is_an_error_not_a_win(tmp_path):
    """A helper's trial: two build-tracr runs into one new --out both exited 0, one's
    model silently dropped; a cache's builders may race (the same build), an --out's not."""
    target = tmp_path / "out"

    def build(staging, marker="config.json"):
        (staging / marker).write_text("mine")
        target.mkdir(exist_ok=True)  # another run finishes first
        (target / marker).write_text("theirs")

    with pytest.raises(CircuitxError, match="--out .* was written by another run while"):
        build_once(target, build, option="--out")
    assert (target / "config.json").read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the staging directory went
    cache = tmp_path / "cache"

    def cached(staging):
        (staging / "config.json").write_text("mine")
        cache.mkdir(exist_ok=True)
        (cache / "config.json").write_text("theirs")

    assert build_once(cache, cached) == cache  # a cache's race: the first wins, silently


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_claimed_output_directory_refuses_a_second_run(tmp_path):
    """A helper's trial: two train-transcoders runs into one --out both wrote their files
    into it, the last file winning."""
    out = tmp_path / "out"
    with claim_directory(out):
        (out).mkdir()
        (out / "mine.pt").write_text("mine")
        with pytest.raises(CircuitxError, match=r"^--out .*out is being written by another run "
                           rf"\({os.getpid()}@.*\); choose another directory, or, if no run is "
                           r"writing it, remove .*\.out\.circuitx-writing$"):  # fmt: skip
            with claim_directory(out, new=False):
                pass
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the claim went with the run
    with pytest.raises(CircuitxError, match="--out .* was written by another run; choose a new"):
        with claim_directory(out):  # new, but another run filled it since its check
            pass
    assert not (tmp_path / ".out.circuitx-writing").exists()
    with claim_directory(out, new=False):  # a resumed run's directory holds files
        pass
    stale = tmp_path / ".out.circuitx-writing"
    stale.write_text(f"{_dead_pid()}@{socket.gethostname()}")  # a SIGKILLed run's
    with claim_directory(out, new=False):
        assert stale.read_text() == f"{os.getpid()}@{socket.gethostname()}"
    assert not stale.exists()
    stale.write_text(f"{_dead_pid()}@another-host")  # whose process this machine cannot see
    with pytest.raises(CircuitxError, match="written by another run .*@another-host"):
        with claim_directory(out, new=False):
            pass
    assert stale.exists()


def test_an_empty_new_directory_name_is_refused_as_empty():
    """A helper's trial: train-ground-truth --out "" said '--out . exists'."""
    from circuitx.files import check_new_directory

    for empty in ("", "  "):
        with pytest.raises(CircuitxError, match="--out is empty: name a new directory"):
            check_new_directory(empty)


def test_a_swallowed_ctrl_c_still_keeps_the_file_from_its_place(tmp_path):
    # a helper's trial: Ctrl-C landing in jax's gc callback was ignored (Python drops what
    # a finaliser raises) and build-tracr wrote its model and exited 0
    try:
        on_interrupt()
    except KeyboardInterrupt:
        pass  # as a finaliser swallows it
    try:
        with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "g.json") as handle:
            handle.write("{}")
        assert list(tmp_path.iterdir()) == []
    finally:
        clear_interrupt()
    with atomic_open(tmp_path / "g.json") as handle:
        handle.write("{}")
    assert (tmp_path / "g.json").read_text() == "{}"


def test_a_ctrl_c_among_files_written_together_waits_for_them_all(tmp_path):
    """A trial: Ctrl-C during a leaderboard's write left results.md of the new grid beside
    results.json and plots of the old one."""
    try:
        with pytest.raises(KeyboardInterrupt), deferred_interrupts():
            with atomic_open(tmp_path / "a.json") as handle:
                handle.write("{}")
            on_interrupt()  # marked, not raised: the next file is written too
            with atomic_open(tmp_path / "b.json") as handle:
                handle.write("{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    finally:
        clear_interrupt()


def test_a_sigterm_among_files_written_together_waits_for_them_all(tmp_path):
    """A trial: SIGTERM during a leaderboard's write left results.md and results.csv of
    the new grid beside results.json, index.html and plots of the old one."""
    try:
        with pytest.raises(Terminated), deferred_interrupts():
            with atomic_open(tmp_path / "a.json") as handle:
                handle.write("{}")
            on_terminate()  # marked, not raised
            on_interrupt()  # the first signal decides how the command ends
            with atomic_open(tmp_path / "b.json") as handle:
                handle.write("{}")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]
    finally:
        clear_interrupt()
    with pytest.raises(Terminated):
        on_terminate()  # outside: at once
    clear_interrupt()


KILLED_WRITER = """
import sys, time
from pathlib import Path
from circuitx.builtin.cache import build_once
from circuitx.files import atomic_open

out = Path(sys.argv[1])
with atomic_open(out / "graph.json") as handle:
    handle.write("half")
    def build(staging):
        (staging / "weights").write_text("x" * 1000)
        print("writing", flush=True)
        time.sleep(60)
    build_once(out / "model", build)
"""


def test_what_a_killed_writer_left_goes_at_the_next_write_of_that_file(tmp_path):
    """A trial: SIGKILL (the OOM killer, a batch system's hard stop) while a file was
    written left its hidden temporary file for good, and a killed model build its
    staging directory, weights and all."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    owner = f"{writer.pid}@{socket.gethostname()}"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2
    assert names[0].startswith(f".graph.json.{owner}.") and names[0].endswith(".tmp")
    assert names[1].startswith(f".model.{owner}.") and names[1].endswith(".staging")
    alive = f".graph.json.{os.getpid()}@{socket.gethostname()}.abc.tmp"  # a writer running
    elsewhere = f".graph.json.{writer.pid}@another-{socket.gethostname()}.abc.tmp"
    for name in alive, elsewhere:
        (tmp_path / name).write_text("")
    with atomic_open(tmp_path / "graph.json") as handle:
        handle.write("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive, elsewhere, names[1], "graph.json"]
    )  # the dead writer's file went; the model's staging waits for a build of the model
    build_once(tmp_path / "model", lambda staging: (staging / "weights").write_text("y"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [alive, elsewhere, "graph.json", "model"]
    )
    assert (tmp_path / "model" / "weights").read_text() == "y"
