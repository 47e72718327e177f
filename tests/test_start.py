"""The command's entry point: a signal while it loads the command line."""

import subprocess
import sys

import pytest

# the child replaces the import of the command line with one a signal comes during
CHILD = """
import importlib, os, signal, sys, types
from circuitx import start

def loading(name):
    try:
        os.kill(os.getpid(), signal.{signal})
    except BaseException:
        if "{then}" == "raise":
            raise
        if "{then}" == "import-error":  # numpy's import, interrupted half way
            raise ImportError("cannot load module more than once per process")
    return types.SimpleNamespace(main=lambda: print("ran"))

importlib.import_module = loading
start.main()
"""


@pytest.mark.parametrize("then", ["raise", "swallow", "import-error"])
@pytest.mark.parametrize(
    "sent, said, code", [("SIGINT", "interrupted", 130), ("SIGTERM", "terminated", 143)]
)
def test_a_signal_while_the_command_loads_ends_it_in_one_line(sent, said, code, then):
    """A helper's trial: a Ctrl-C in torch's import printed a KeyboardInterrupt's
    traceback. One there that the import swallowed, or turned into another error, also
    ends the command, and it never runs."""
    child = CHILD.format(signal=sent, then=then)
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stderr, done.stdout) == (code, f"error: {said}\n", "")


def test_the_package_loads_torch_only_when_its_api_is_used():
    code = "import sys, circuitx.start; print('torch' in sys.modules, callable(circuitx.discover))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", "True"], done.stderr


def test_the_api_function_keeps_its_name_beside_a_subpackage_of_that_name():
    """circuitx.leaderboard, imported first, is bound on the package as the subpackage
    (a lazy package once called the module)."""
    code = "import circuitx.leaderboard, circuitx as cx; print(callable(cx.leaderboard))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True"], done.stderr


def test_a_caller_may_patch_the_api_and_reach_the_modules_from_the_package():
    """A helper's trial: mock.patch("circuitx.discover") changed nothing, and leaving it
    failed; circuitx.builtin.hf was unreachable after a bare 'import circuitx'."""
    code = """
import circuitx as cx
from unittest import mock
with mock.patch("circuitx.discover", return_value="patched"):
    print(cx.discover())
print(cx.discover.__module__, cx.builtin.hf.__name__, hasattr(cx, "nothing"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["patched", "circuitx.api", "circuitx.builtin.hf", "False"]
