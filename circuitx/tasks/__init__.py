"""Tasks: clean and corrupted prompts, word positions, metrics and reference circuits.

A task is registered by its short name in ``TASKS``; the interface is :class:`Task`. A
task file (prompt pairs a researcher brings, :mod:`circuitx.tasks.pairs`) is a task
too, named by its path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from circuitx.errors import CircuitxError
from circuitx.tasks.base import Task, TaskData
from circuitx.tasks.colored_objects import ColoredObjectsTask
from circuitx.tasks.docstring import DocstringTask
from circuitx.tasks.file_task import FileTask, pairs_task
from circuitx.tasks.greater_than import GreaterThanTask
from circuitx.tasks.ioi import IOITask
from circuitx.tasks.pairs import FORMATS, is_task_file
from circuitx.tasks.tracr import TracrTask

TASKS: dict[str, Task] = {
    task.name: task
    for task in (IOITask(), GreaterThanTask(), DocstringTask(), ColoredObjectsTask(), TracrTask())
}


def get_task(
    name: str | Task, corruption: str | None = None, task_format: str | None = None
) -> Task:
    """The registered task ``name``, set to ``corruption`` (default: the task's first); or
    the task in file ``name`` (in ``task_format``, else told by its suffix and content);
    or ``name`` itself where it is a task (made in Python: :class:`FileTask`)."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, (str, Task)):
        raise CircuitxError(f"a task is a name, a task file or a Task, not {name!r}")
    if isinstance(name, Task):
        if corruption not in (None, name.corruption):
            raise CircuitxError(f"task {name.name} has no corruption {corruption!r}")
        return name
    if name in TASKS and task_format is None:
        task = TASKS[name]
        return task if corruption is None else type(task)(corruption)
    if task_format is None and not is_task_file(name):
        if Path(name).expanduser().is_dir():
            raise CircuitxError(f"task {name!r} is a directory, not a task name or task file")
        raise CircuitxError(
            f"unknown task {name!r}; choose from {', '.join(TASKS)}, or give a task file "
            f"({', '.join(FORMATS)})"
        )
    task = FileTask.from_file(name, task_format)
    task.name = file_task_name(name)
    if corruption not in (None, task.corruption):
        raise CircuitxError(
            f"a task file has one corruption, its pairs' own ({task.corruption}), not "
            f"{corruption!r}"
        )
    return task


def file_task_name(path: str | Path) -> str:
    """A task file's task name: its stem, or its whole file name where the stem names a
    built-in task (``ioi.jsonl`` is not the built-in ioi, whose reference it lacks)."""
    path = Path(path)
    return path.name if path.stem in TASKS else path.stem


def task_from_pairs(
    clean: Sequence[str],
    corrupted: Sequence[str],
    answers: Sequence[str | Sequence[str]],
    wrong: Sequence[str | Sequence[str]] | None = None,
    name: str = "pairs",
    positions: Sequence[Mapping[str, int]] | None = None,
    position: Sequence[int] | None = None,
) -> FileTask:
    """Your own prompt pairs as a task: per pair the clean prompt, its corrupted twin, the
    word(s) that answer the clean prompt and, optionally, the wrong answer(s), the named
    tokens a circuit over positions has nodes at (``positions``: ``{"S2": 9, ...}``,
    token indices without BOS, as a task file's) and the token the answer follows
    (``position``; default the last). ``name`` names it in graphs and leaderboard rows:
    letters, digits, ``-``, ``_`` and ``.``, not a built-in task's name (whose reference
    ``auto`` would score it against; a task file keeps its suffix instead,
    :func:`file_task_name`)."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise CircuitxError(f"name takes letters, digits, '-', '_' and '.', not {name!r}")
    if name in TASKS:
        raise CircuitxError(f"name {name!r} is a built-in task's: choose another")
    return pairs_task(clean, corrupted, answers, wrong, name, positions, position)


def task_vocabulary() -> list[str]:
    """The union of every registered task's vocabulary, in a stable order."""
    words: dict[str, None] = {}
    for task in TASKS.values():
        words.update(dict.fromkeys(task.vocabulary()))
    return list(words)


__all__ = [
    "FORMATS",
    "TASKS",
    "FileTask",
    "Task",
    "TaskData",
    "get_task",
    "task_from_pairs",
    "task_vocabulary",
]
