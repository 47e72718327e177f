"""Rich progress bars on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[[int], None]

_silenced = 0


def no_progress(steps: int = 1, description: str | None = None) -> None:
    """An ``Advance`` that shows nothing."""


@contextmanager
def silenced() -> Iterator[None]:
    """Inside, :func:`progress_bar` draws nothing (work nested under another bar)."""
    global _silenced
    _silenced += 1
    try:
        yield
    finally:
        _silenced -= 1


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Advance]:
    """Yield ``advance(steps, description=None)``; draw a bar on stderr if it is a terminal.

    A new ``description`` replaces the bar's label (e.g. the item now running)."""
    console = Console(stderr=True)
    if _silenced or not console.is_terminal:
        yield no_progress
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)

        def advance(steps: int = 1, description: str | None = None) -> None:
            progress.update(task, advance=steps, description=description)

        yield advance
