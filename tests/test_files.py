"""Atomic output files."""

from __future__ import annotations

import os

import pytest

from circuitx.files import atomic_open


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
