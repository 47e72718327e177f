"""About how long a leaderboard's unfinished cells have left, told from the wall time of
finished cells like them: cells differ in cost by hundreds of times (ACDC's against
activation patching's), so the grid's mean speed misleads."""

from __future__ import annotations

import time
from statistics import fmean
from typing import Any

from circuitx.leaderboard.cells import Cell


def _alike(cell: Cell) -> tuple[str, str, str]:
    """The cells whose times stand for each other: one task, model and row, any seed."""
    return cell.model, cell.task, cell.method


class CellClock:
    """An :data:`circuitx.progress.Estimate` for a grid run ``jobs`` cells at a time.

    A cell is reckoned to take the mean wall time of the finished cells of its task, model
    and row (its other seeds), else of its row on other tasks; while some unfinished cell
    has neither, the clock cannot tell (None). A running cell's time so far is taken off
    its share."""

    def __init__(self, cells: list[Cell], records: dict[str, Any], jobs: int) -> None:
        self.jobs = jobs
        self.unfinished = {cell.key: cell for cell in cells if records.get(cell.key) is None}
        self.started: dict[str, float] = {}
        self.walls: dict[tuple[str, str, str], list[float]] = {}
        self.row_walls: dict[str, list[float]] = {}
        for cell in cells:
            if records.get(cell.key) is not None:
                self._learn(cell, records[cell.key])

    def _learn(self, cell: Cell, record: dict[str, Any]) -> None:
        wall = record.get("wall_s")
        if isinstance(wall, (int, float)) and record.get("status") == "ok":  # errors are quick
            self.walls.setdefault(_alike(cell), []).append(float(wall))
            self.row_walls.setdefault(cell.method, []).append(float(wall))

    def start(self, cell: Cell) -> None:
        self.started[cell.key] = time.monotonic()

    def done(self, cell: Cell, record: dict[str, Any]) -> None:
        self._learn(cell, record)
        self.unfinished.pop(cell.key, None)
        self.started.pop(cell.key, None)

    def guess(self, cell: Cell) -> float | None:
        """Seconds ``cell`` takes in all, by its likes' times; None where none has run."""
        walls = self.walls.get(_alike(cell)) or self.row_walls.get(cell.method)
        return fmean(walls) if walls else None

    def __call__(self) -> float | None:
        now, left = time.monotonic(), 0.0
        # a copy: the bar's thread asks while the grid's marks cells done
        for key, cell in list(self.unfinished.items()):
            guess = self.guess(cell)
            if guess is None:
                return None
            left += max(guess - (now - self.started.get(key, now)), 0.0)
        return left / max(min(self.jobs, len(self.unfinished)), 1)
