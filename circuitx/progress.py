"""Rich progress bars on stderr, shown only when stderr is a terminal, and how numbers
are shown in tables."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Callable, Iterator, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class Advance(Protocol):
    """Moves a progress bar ``steps`` on (a part of prompts counts its share of a step),
    its label replaced by ``description`` where one is given."""

    def __call__(self, steps: float = 1, description: str | None = None) -> None: ...


def scaled(advance: Advance, share: float) -> Advance:
    """``advance`` with each step counted as ``share`` of one: a prompt part's progress."""

    def step(steps: float = 1, description: str | None = None) -> None:
        advance(steps * share, description)

    return step


_silenced = 0


def fixed(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals, a negative that rounds to zero shown as zero
    (-0.0000004 is 0.000, not -0.000)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def counted(count: int, noun: str) -> str:
    """``1 node``, ``2 nodes``: a count and its noun, plural (an s) unless it is one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def no_progress(steps: int = 1, description: str | None = None) -> None:
    """An ``Advance`` that shows nothing."""


LINE_EVERY = 60.0  # seconds between progress lines on a stderr that is not a terminal

Estimate = Callable[[], float | None]
"""Seconds left by the caller's own reckoning, or None while it cannot tell."""
TimeLeft = bool | Estimate
"""Whether a bar tells the time left from its steps' speed (True), not at all (False), or
from an :data:`Estimate` (steps of uneven cost whose caller knows better)."""


def duration(seconds: float) -> str:
    """``0:14:40``."""
    return str(timedelta(seconds=round(seconds)))


class _EstimateColumn(ProgressColumn):
    """The time left as an :data:`Estimate` tells it; ``-:--:--`` while it cannot."""

    def __init__(self, estimate: Estimate) -> None:
        super().__init__()
        self.estimate = estimate

    def render(self, task: Task) -> Text:
        left = self.estimate()
        return Text("-:--:--" if left is None else duration(left), style="progress.remaining")


@contextmanager
def _progress_lines(
    label: str, total: int, start: int = 0, time_left: TimeLeft = True
) -> Iterator[Advance]:
    """An ``Advance`` for a stderr that is not a terminal (a log): a line of how far the
    work is, and about how long it has left (with ``time_left``), every :data:`LINE_EVERY`
    seconds (``start`` steps done before, which the time left is not reckoned from). A
    step that outlasts the interval gets its line from a watching thread, so a long step
    is not silent."""
    started = time.monotonic()
    state = {"done": start, "last": started, "label": label}
    lock, stop = threading.Lock(), threading.Event()

    def line(now: float) -> None:
        done = state["done"]
        state["last"] = now
        if callable(time_left):
            left = time_left()
        elif time_left and done > start:  # told from this run's speed: none before a step
            left = (now - started) * (total - done) / (done - start)
        else:
            left = None
        text = f"{state['label']}: {int(done)}/{total}, {duration(now - started)} so far"
        # drawn while the work runs silenced inside it (a leaderboard's cell in this process)
        _print_line(text if left is None else f"{text}, about {duration(left)} left")

    def advance(steps: float = 1, description: str | None = None) -> None:
        with lock:
            state["label"] = description or state["label"]
            state["done"] += steps
            now = time.monotonic()
            if now - state["last"] >= LINE_EVERY and start < state["done"] < total:
                line(now)

    def watch() -> None:
        while not stop.wait(LINE_EVERY / 6):
            with lock:
                now = time.monotonic()
                if now - state["last"] >= LINE_EVERY and state["done"] < total:
                    line(now)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield advance
    finally:
        stop.set()
        watcher.join()


@contextmanager
def silenced() -> Iterator[None]:
    """Inside, :func:`progress_bar` draws nothing (work nested under another bar)."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1


def announce(text: str) -> None:
    """One line on stderr (unless silenced): what a long step that may not have a bar on
    screen is doing, e.g. a first-use build."""
    if not _silenced:
        _print_line(text)


def _print_line(text: str) -> None:
    Console(stderr=True, soft_wrap=True, highlight=False).print(text, markup=False)


def draws_bars() -> bool:
    """Whether :func:`progress_bar` draws a bar (stderr is a terminal), not log lines."""
    return Console(stderr=True).is_terminal


@contextmanager
def progress_bar(
    description: str,
    total: int,
    announced: bool = False,
    start: int = 0,
    time_left: TimeLeft = True,
) -> Iterator[Advance]:
    """Yield ``advance(steps, description=None)``; draw a bar on stderr if it is a terminal.

    A new ``description`` replaces the bar's label (e.g. the item now running). With
    ``announced``, stderr that is not a terminal gets the description once as a line,
    so a log shows what a long silent wait is. ``start``: steps done before (resumed
    work), counted but not in the speed the time left is told from. ``time_left``: False
    for no time left (steps of uneven cost), or an :data:`Estimate` to tell it by."""
    console = Console(stderr=True)
    if _silenced:
        yield no_progress
        return
    if not draws_bars():
        if announced:
            announce(f"{description} ...")
        with _progress_lines(description, total, start, time_left) as advance:
            yield advance
        return
    if callable(time_left):
        remaining: list[ProgressColumn] = [_EstimateColumn(time_left)]
    else:
        remaining = [TimeRemainingColumn()] if time_left else []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        *remaining,
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total, completed=start)

        def advance(steps: float = 1, description: str | None = None) -> None:
            progress.update(task, advance=steps, description=description)

        yield advance
