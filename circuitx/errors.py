"""The one exception type the CLI turns into a single-line message, and helpers for
writing such messages."""

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral
from typing import NoReturn

# The largest seed: a seed is offset (by layer, by restart) and given to torch's generators,
# which take 64-bit numbers; 32 bits leave the offsets room
MAX_SEED = 2**32 - 1
# The most torch CPU threads, leaderboard jobs and backup rounds a command takes
MAX_THREADS = MAX_JOBS = 1024
MAX_BACKUP_ROUNDS = 100


class CircuitxError(Exception):
    """An error caused by the user's input; its message is shown as one line (exit code
    2 on the command line)."""

    exit_code = 2


class NotApplicable(CircuitxError):
    """A method that cannot run on a model by its design (GradDrop on a model of one
    layer): one line, as any bad input, but a leaderboard's cell of it is not applicable,
    not failed (a grid of every method on every model is no failure for it)."""


class RunFailed(CircuitxError):
    """A run that worked as asked but whose result fails its own check (a trained model
    under the bar): one line too, with its own exit code, so a script can tell it from
    bad input."""

    exit_code = 1


class CircuitxWarning(UserWarning):
    """What the command line notes or warns of on stderr, raised by the Python API as a
    warning (:mod:`warnings`): a run that worked, but whose result needs a second look."""


class Terminated(BaseException):
    """SIGTERM (kill, timeout): a BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` takes it for a failure."""


# the stop a signal asked for (see on_interrupt): KeyboardInterrupt or Terminated
_stop: type[BaseException] | None = None
_deferring = 0  # inside deferred_interrupts: a signal is marked, and acted on after


def on_interrupt(_signal: int = 0, _frame: object = None) -> None:
    """SIGINT's handler on the command line: raise KeyboardInterrupt, and mark that it
    came, so that one a finaliser swallowed (Python ignores what ``__del__`` or a gc
    callback raises, and jax's run often) still stops the command before it puts a
    result in place (:func:`stop_if_interrupted`)."""
    _stop_for(KeyboardInterrupt)


def on_terminate(_signal: int = 0, _frame: object = None) -> None:
    """SIGTERM's handler on the command line: as :func:`on_interrupt`, with
    :class:`Terminated`."""
    _stop_for(Terminated)


def _stop_for(stop: type[BaseException]) -> None:
    global _stop
    _stop = _stop or stop
    if not _deferring:
        raise stop()


def clear_interrupt() -> None:
    """Forget a Ctrl-C or SIGTERM (a command starting in a process that ran one before)."""
    global _stop
    _stop = None


def stop_if_interrupted() -> None:
    """Raise what a Ctrl-C or SIGTERM that came asked for, even one that was swallowed
    (inside :func:`deferred_interrupts`, not before its end)."""
    if _stop is not None and not _deferring:
        raise _stop()


def exit_stopped(stop: BaseException) -> NoReturn:
    """End the command a Ctrl-C or SIGTERM stopped (``stop``): ``error: interrupted`` or
    ``error: terminated`` on stderr, exit 130 or 143. Every file is written whole or not at
    all (files.atomic_open), so nothing is left to tidy: the interpreter's teardown is
    skipped, which frees every cached tensor one by one (over a second after a large run),
    or meets a half-done import."""
    terminated = isinstance(stop, Terminated)
    sys.stderr.write(f"error: {'terminated' if terminated else 'interrupted'}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM if terminated else 130)


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Inside, a Ctrl-C or SIGTERM (through :func:`on_interrupt`, :func:`on_terminate`)
    waits for the block's end: files written together (a leaderboard's table, plots and
    pages) are all of one run."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    stop_if_interrupted()


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Inside, the system holds Ctrl-C (SIGINT) back and delivers it at the end, whatever
    handles it (the CLI's, or Python's own KeyboardInterrupt); a process started inside
    inherits the hold."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_count(name: str, value: object, low: int, high: int | None = None) -> None:
    """Fail in one line unless ``value`` is a whole number (not a bool) from ``low`` to
    ``high`` (None: no upper bound); ``name`` is the flag or argument it came as."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise CircuitxError(f"{name} takes a whole number, not {value!r}")
    if value < low:
        raise CircuitxError(f"{name} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise CircuitxError(f"{name} must be at most {high}, not {value}")


def clipped(text: str, most: int) -> str:
    """``text`` for a one-line message, cut to ``most`` characters with "..." at the end."""
    return text if len(text) <= most else text[: most - 3] + "..."


def quoted(value: object, most: int = 60) -> str:
    """``value``'s repr for a one-line message, cut to ``most`` characters (a 200 KB answer
    in a task file was echoed whole)."""
    return clipped(repr(value), most)


def listed(items: Sequence[str], most: int) -> str:
    """The first ``most`` of ``items`` for a one-line message, then "..." if there are
    more."""
    return ", ".join(items[:most]) + (", ..." if len(items) > most else "")


def a_type(value: object) -> str:
    """A value's type for a message, with its article: ``an int``, ``a str``, ``None``."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"
