"""Tasks: clean and corrupted prompts, word positions, metrics and reference circuits.

A task is registered by its short name in ``TASKS``; the interface is :class:`Task`.
"""

from __future__ import annotations

from circuitx.errors import CircuitxError
from circuitx.tasks.base import Task, TaskData
from circuitx.tasks.colored_objects import ColoredObjectsTask
from circuitx.tasks.docstring import DocstringTask
from circuitx.tasks.greater_than import GreaterThanTask
from circuitx.tasks.ioi import IOITask
from circuitx.tasks.tracr import TracrTask

TASKS: dict[str, Task] = {
    task.name: task
    for task in (IOITask(), GreaterThanTask(), DocstringTask(), ColoredObjectsTask(), TracrTask())
}


def get_task(name: str, corruption: str | None = None) -> Task:
    """The registered task ``name``, set to ``corruption`` (default: the task's first)."""
    if name not in TASKS:
        raise CircuitxError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    task = TASKS[name]
    return task if corruption is None else type(task)(corruption)


def task_vocabulary() -> list[str]:
    """The union of every registered task's vocabulary, in a stable order."""
    words: dict[str, None] = {}
    for task in TASKS.values():
        words.update(dict.fromkeys(task.vocabulary()))
    return list(words)


__all__ = ["TASKS", "Task", "TaskData", "get_task", "task_vocabulary"]
