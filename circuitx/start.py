"""The ``circuitx`` command's entry point. Loading the command line takes seconds (torch's
import); a Ctrl-C or SIGTERM then ends it as one during its work does: one line, exit
130 (143), no traceback."""

from __future__ import annotations

import importlib
import signal

from circuitx.errors import (
    Terminated,
    exit_stopped,
    on_interrupt,
    on_terminate,
    stop_if_interrupted,
)


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
        exit_stopped(stop)


if __name__ == "__main__":
    main()
