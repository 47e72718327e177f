"""What every command shares: one-line errors, output helpers, and the options declared
once (``--json``, ``--device``/``--dtype``, ``--cache-dir``)."""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import torch
from rich.console import Console
from rich.table import Table

from circuitx.engine import parse_memory
from circuitx.errors import (
    MAX_BACKUP_ROUNDS,
    MAX_SEED,
    MAX_THREADS,
    CircuitxError,
    Terminated,
    clear_interrupt,
    exit_stopped,
    first_line,
    on_interrupt,
    on_terminate,
    stop_if_interrupted,
)
from circuitx.files import check_directory_can_be_made, json_text
from circuitx.models import DTYPES
from circuitx.progress import fixed
from circuitx.tasks.base import POSITION_MODES

EXIT_INPUT_ERROR = CircuitxError.exit_code  # click's usage errors too
EXIT_OUT_OF_MEMORY = 3
EXIT_SYSTEM_ERROR = 1  # the system failed us (a full disk): not the input's fault
# a disk's failures, which a library may raise another error from
SYSTEM_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS}


# click's names of the number types its ranges take, as a message says them
CLICK_TYPES = {"integer range": "an integer", "float range": "a number", "float": "a number"}


class OneLineErrors(click.Group):
    """A click group whose usage and input errors are one line on stderr, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        # Ctrl-C interrupts even where the shell started us with SIGINT ignored (a
        # background job of a script)
        clear_interrupt()
        signal.signal(signal.SIGINT, on_interrupt)
        sys.unraisablehook = _quiet_interrupts
        # SIGTERM (kill, timeout) unwinds as Ctrl-C does, so staging directories go too
        signal.signal(signal.SIGTERM, on_terminate)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            stop_if_interrupted()  # a Ctrl-C a finaliser swallowed still ends in 130
            # done, its results out: a Ctrl-C during the teardown would end a finished run
            # with 130 (Python kills itself with SIGINT when a KeyboardInterrupt escapes),
            # and a SIGTERM with a traceback from an atexit callback and exit code 0
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.NoArgsIsHelpError as error:  # a bare command: its help
            click.echo(error.ctx.get_help(), err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except click.ClickException as error:  # "Choose from:" lists choices a line each
            first, *rest = error.format_message().splitlines() or [""]
            for kind, said in CLICK_TYPES.items():  # '1.5' is not a valid integer range.
                first = first.replace(f"is not a valid {kind}.", f"is not {said}.")
            # click ends each listed choice but the last with a comma of its own
            listed_after = ", ".join(line.strip().rstrip(",") for line in rest if line.strip())
            click.echo(f"error: {first} {listed_after}".rstrip(), err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except CircuitxError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        except (MemoryError, torch.OutOfMemoryError) as error:
            click.echo(f"error: out of memory: {first_line(error)}", err=True)
            sys.exit(EXIT_OUT_OF_MEMORY)
        except (click.exceptions.Abort, KeyboardInterrupt, _Interrupted, Terminated) as stop:
            exit_stopped(stop)
        except Exception as error:  # the system's (a full disk under stdout or a file), or ours
            if isinstance(error, RuntimeError) and _out_of_memory(error):
                click.echo(f"error: out of memory: {first_line(error)}", err=True)
                sys.exit(EXIT_OUT_OF_MEMORY)
            said = _system_failure(error)
            if said is None:
                raise
            click.echo(f"error: {said}", err=True)
            sys.stderr.flush()
            os._exit(EXIT_SYSTEM_ERROR)  # not sys.exit: its flush of stdout fails again
        sys.exit(0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # click would print an empty line before its Abort
            raise _Interrupted() from None


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is an allocation that failed (torch's CPU allocator raises a
    plain RuntimeError)."""
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return "can't allocate memory" in str(error) or "out of memory" in str(error)


def _system_failure(error: BaseException) -> str | None:
    """The system's words where ``error`` came of its failing (a full disk): an OSError,
    one a library raised another error from (torch.save's RuntimeError), or safetensors'
    error naming an I/O error in its own text; else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and (seen is error or seen.errno in SYSTEM_ERRNOS):
            where = f"{seen.filename}: " if seen.filename else ""
            return where + (seen.strerror or str(seen))
        seen = seen.__cause__ or seen.__context__
    text = first_line(error)
    return text.split("I/O error: ", 1)[1] if "I/O error: " in text else None


def _quiet_interrupts(unraisable: Any) -> None:
    """Python's report of an exception a finaliser raised, less a Ctrl-C's or SIGTERM's (which
    :func:`circuitx.errors.stop_if_interrupted` acts on): its traceback is not a failure."""
    if not issubclass(unraisable.exc_type, (KeyboardInterrupt, Terminated)):
        sys.__unraisablehook__(unraisable)


class _Interrupted(Exception):
    """Ctrl-C, past click's own handling of it."""


PIPED_WIDTH = 200  # columns of a table written to a pipe or file (not 80: a word a line)


def stdout() -> Console:
    """The console results go to: names such as eap[qk-fix=on] stay whole, and a table
    piped or redirected is as wide as its content up to :data:`PIPED_WIDTH` (``COLUMNS``
    where set)."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(soft_wrap=True, markup=False, width=PIPED_WIDTH if piped else None)


def to_stderr(line: str) -> None:
    """A line for the reader on stderr (results go to stdout)."""
    click.echo(line, err=True)


def note(message: str) -> None:
    """A note on stderr, said as one ("note: " first)."""
    to_stderr(message if message.startswith("note: ") else f"note: {message}")


def warn(message: str) -> None:
    """A reason to distrust a result, on stderr ("warning: " first)."""
    to_stderr(f"warning: {message}")


def print_json(value: Any) -> None:
    """``value`` as strict JSON on stdout (a non-finite number as null)."""
    click.echo(json_text(value))


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fixed(value, digits)
    if isinstance(value, list):  # one item a line
        return "\n".join(map(str, value))
    return str(value)


def print_rows(
    rows: list[dict[str, Any]], as_json: bool, title: str, columns: tuple[str, ...]
) -> None:
    """``rows`` as JSON, or as a table of ``columns``."""
    if as_json:
        print_json(rows)
        return
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i == 0, overflow="fold")  # names stay whole
    for row in rows:
        table.add_row(*(_cell(row[column]) for column in columns))
    stdout().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return fmt(value)


Decorator = Callable[[Callable], Callable]

json_option: Decorator = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object instead of a table."
)
list_json_option: Decorator = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON array, one object a row, instead of a table.",
)
cache_dir_option: Decorator = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    callback=lambda _context, _parameter, value: (
        value if value is None else str(check_directory_can_be_made(value, "--cache-dir"))
    ),
    help="Where built-in models (and their transcoders) are built and cached (default: "
    "$CIRCUITX_CACHE_DIR, else ~/.cache/circuitx).",
)


def device_options(command: Callable) -> Callable:
    """``--device`` and ``--dtype``, as every model-loading command takes them."""
    command = click.option(
        "--dtype",
        default="float32",
        show_default=True,
        type=click.Choice(list(DTYPES)),
        help="The float type the weights are loaded in.",
    )(command)
    return click.option(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)."
    )(command)


def backup_rounds_option(command: Callable) -> Callable:
    """``--backup-rounds N``: rounds of scoring again with each node of the circuit found
    so far held at its patch value, keeping each score's largest magnitude."""
    return click.option(
        "--backup-rounds",
        default=0,
        show_default=True,
        type=click.IntRange(0, MAX_BACKUP_ROUNDS),
        help="Score again with each node of the circuit held at its patch value, one at a "
        "time, and keep each score's largest magnitude, N times: finds backup heads that act "
        "only when a main one is gone (each round costs the circuit's size in discoveries).",
    )(command)


def positions_option(command: Callable) -> Callable:
    """``--positions``: a circuit over components, or over components at token positions."""
    return click.option(
        "--positions",
        type=click.Choice(POSITION_MODES),
        default="none",
        show_default=True,
        help="Nodes per token position: named (one per component and task-named position, "
        "e.g. a9.h9@END, plus 'other'), all (every position; prompts of one length), or "
        "none (a component's whole sequence). `circuitx methods` says which methods score "
        "positions.",
    )(command)


def max_memory_option(command: Callable) -> Callable:
    """``--max-memory SIZE``: the budget for the prompts' caches and passes, as bytes
    (None: on the CPU a quarter of the machine's memory, at most 2 GiB; on a GPU half
    its free memory)."""

    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        return None if value is None else parse_memory(value)

    return click.option(
        "--max-memory",
        default=None,
        callback=parse,
        metavar="SIZE",
        help="Memory for the prompts' cached runs and patched passes, e.g. 512M or 8G "
        "(binary units: M is MiB, and MB reads the same); prompts beyond it are taken in "
        "parts (default: a quarter of the machine's memory, at most 2G, on the CPU; half "
        "the free memory on a GPU).",
    )(command)


def seed_option(command: Callable) -> Callable:
    """``--seed N`` (0 to :data:`MAX_SEED`): drives every random choice of the command."""
    return click.option(
        "--seed",
        default=0,
        show_default=True,
        type=click.IntRange(0, MAX_SEED),
        help="Drives every random choice.",
    )(command)


def threads_option(command: Callable) -> Callable:
    """``--threads N``: torch's CPU threads for the command (default: torch's choice, one
    per core); fewer run faster on a machine busy with other work."""

    def set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
        if value is not None:
            torch.set_num_threads(value)

    return click.option(
        "--threads",
        type=click.IntRange(1, MAX_THREADS),
        default=None,
        expose_value=False,
        callback=set_threads,
        help="torch CPU threads (default: torch's choice, one per core).",
    )(command)
