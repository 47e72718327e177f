"""The ``circuitx`` command's entry point. Loading the command line takes seconds (torch's
import); a Ctrl-C or SIGTERM then ends it as one during its work does: one line, exit
130 (143), no traceback."""

from __future__ import annotations

import importlib
import os
import signal
import sys

from circuitx.errors import Terminated, on_interrupt, on_terminate, stop_if_interrupted


def main() -> None:
    """Load the command line, then run it."""
    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_terminate)
    try:
        try:
            cli = importlib.import_module("circuitx.cli")
        finally:  # a signal that came, whatever the import made of it (numpy's can turn
            stop_if_interrupted()  # a KeyboardInterrupt into an ImportError, or drop it)
        cli.main()  # which takes the signals from its first line on
    except (KeyboardInterrupt, Terminated) as stop:
        terminated = isinstance(stop, Terminated)
        sys.stderr.write(f"error: {'terminated' if terminated else 'interrupted'}\n")
        sys.stderr.flush()
        os._exit(128 + signal.SIGTERM if terminated else 130)  # not the teardown of a half import


if __name__ == "__main__":
    main()
