"""The ``circuitx`` command line: one module per command group.

Results go to stdout (a rich table, or one JSON object with ``--json``); notes, progress
bars and errors go to stderr. Every input error is one line on stderr and exit code 2.
"""

from __future__ import annotations

import click

from circuitx.cli import discover, graphs, leaderboard, listings, tracr, trained, transcoders
from circuitx.cli.common import OneLineErrors
from circuitx.version import __version__


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="circuitx")
def main() -> None:
    """Automated circuit discovery in transformer language models."""


main.add_command(discover.discover_command, "discover")
for command in (
    graphs.score,
    graphs.compare,
    graphs.export,
    graphs.draw_command,
    transcoders.train_transcoders,
    tracr.build_tracr,
    trained.train_ground_truth_command,
    leaderboard.leaderboard,
    listings.tasks,
    listings.methods,
    listings.models,
):
    main.add_command(command)

__all__ = ["main"]
