"""The CLI's allocator setting: freed large blocks are reused without faulting pages in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from circuitx import allocator, cli
from conftest import runner

# Page faults of four 256 MiB tensors, each freed before the next, after a first one.
# (The first freed block is not always the next one's: glibc's aligned allocation asks
# for a little more, so reuse may start at the third.)
LATER_TENSORS_FAULTS = """
import resource, torch
from circuitx.allocator import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
torch.empty(2**26).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.empty(2**26).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* of the caller's
    code = LATER_TENSORS_FAULTS.format(keep=keep)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="the setting is glibc's (Linux)")
def test_freed_blocks_are_reused_without_page_faults():
    pages = 2**28 // 4096  # one tensor's
    assert _faults(keep=False) > 3 * pages  # glibc maps each large block anew
    assert _faults(keep=True) < 1.5 * pages  # at most one more block, then reuse


def test_the_users_own_malloc_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setattr(allocator, "_glibc", lambda: pytest.fail("the allocator was changed"))
    assert allocator.keep_freed_memory() is False


def test_every_command_sets_it(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert runner.invoke(cli.main, ["tasks"]).exit_code == 0
    assert calls == [True]
