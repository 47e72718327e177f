"""Finished cells on disk, the leaderboard rows they make, and the results files."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from circuitx.files import atomic_open, json_text
from circuitx.leaderboard.cells import Cell
from circuitx.progress import fixed

# (row key, column heading, source): the source is a key of the cell's report, or of its
# ``metrics``
COLUMNS = (
    ("node_auc", "node AUC", "metrics"),
    ("edge_auc", "edge AUC", "metrics"),
    ("node_precision", "node P", "metrics"),
    ("node_recall", "node R", "metrics"),
    ("node_f1", "node F1", "metrics"),
    ("faithfulness", "faithfulness", "report"),
    ("cpr", "CPR", "report"),
    ("cmd", "CMD", "report"),
    ("discovery_s", "runtime (s)", "report"),  # the discovery's own time, not faithfulness'
)

# the columns that are shares (an AUC, a precision, a recall): from 0 to 1
SHARES = ("node_auc", "edge_auc", "node_precision", "node_recall", "node_f1")


class CellStore:
    """Finished cells, one JSON file each under ``directory``, named by the cell's key."""

    def __init__(self, directory: str | Path):
        """The directory is made when the first cell finishes."""
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None if the cell has not finished (or its file is unreadable,
        so that it runs again)."""
        path = self._path(key)
        try:
            record = json.loads(path.read_text())
            written = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except (OSError, ValueError):
            return None
        if record.get("key") != key or record.get("status") != "ok" or not well_formed(record):
            return None
        record.setdefault("finished_at", written.strftime("%Y-%m-%d %H:%M UTC"))
        return record

    def put(self, record: dict[str, Any]) -> None:
        """Keep a finished cell; a failed one is not kept, so a rerun tries it again."""
        if record["status"] == "ok":
            self.directory.mkdir(exist_ok=True)
            with atomic_open(self._path(record["key"])) as handle:
                handle.write(json_text(record, indent=None))  # strict: NaN is null


def well_formed(record: dict[str, Any]) -> bool:
    """Whether a stored cell has what the rows, plots and pages read, of the right types
    (a file edited by hand, or by another version, runs again instead)."""

    def number(value: Any) -> bool:  # finite: NaN or Infinity is an edit (ours write null)
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )

    def numbers(point: Any, keys: tuple[str, ...]) -> bool:
        """``point`` maps each of ``keys`` to a number (``list``: a list of numbers)."""
        return isinstance(point, dict) and all(
            isinstance(point.get(k), list) and all(map(number, point[k])) for k in keys
        )

    def roc_ok(curve: Any) -> bool:  # None: no curve at that level (a node-level method)
        return curve is None or (
            numbers(curve, ("fpr", "tpr")) and len(curve["fpr"]) == len(curve["tpr"]) > 0
        )

    def point_ok(point: Any) -> bool:
        return isinstance(point, dict) and all(
            number(point.get(k)) for k in ("fraction", "faithfulness")
        )

    result = record.get("result")
    if not isinstance(result, dict) or not isinstance(result.get("metrics"), dict):
        return False
    try:
        columns = [_value(result, key, source) for key, _, source in COLUMNS]
    except KeyError:
        return False
    roc, curve = result.get("roc"), result.get("faithfulness_curve")
    shares = [v for (key, *_), v in zip(COLUMNS, columns) if key in SHARES and v is not None]
    return (
        all(value is None or number(value) for value in columns)
        and all(0 <= value <= 1 for value in shares)
        and (roc is None or isinstance(roc, dict) and all(map(roc_ok, roc.values())))
        and (curve is None or isinstance(curve, list) and all(map(point_ok, curve)))
        and isinstance(record.get("graph"), dict)
    )


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values)}


def tasks_on_several_models(cells: list[Cell]) -> set[str]:
    """The tasks the grid runs on more than one model: their rows and figures name the
    model too."""
    models_of: dict[str, set[str]] = {}
    for cell in cells:
        models_of.setdefault(cell.task, set()).add(cell.model)
    return {task for task, models in models_of.items() if len(models) > 1}


def leaderboard_rows(cells: list[Cell], records: dict[str, dict[str, Any]]) -> list[dict]:
    """One row per (task, method, model) in the grid's order: each column's mean and
    (population) std over the seeds that finished, the seed count, and the first error."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell.task, cell.method, cell.model), []).append(records[cell.key])
    shared = tasks_on_several_models(cells)
    rows = []
    for (task, method, model), group in groups.items():
        finished = [r["result"] for r in group if r["status"] == "ok"]
        errors = [r["error"] for r in group if r["status"] != "ok"]
        row: dict[str, Any] = {"task": task, "method": method, "model": model}
        # the task column names the model too where a task runs on several (tracr)
        row["label"] = f"{task} ({model})" if task in shared else task
        for key, _, source in COLUMNS:
            values = [_value(r, key, source) for r in finished]
            # a number that is not finite is written as null: no number, here too
            row[key] = _summary([v for v in values if v is not None and math.isfinite(v)])
        row.update(seeds=len(group), finished=len(finished), error=errors[0] if errors else None)
        rows.append(row)
    return rows


def _value(result: dict[str, Any], key: str, source: str) -> Any:
    """A column's value in a cell's result; a cell run before ``discovery_s`` existed has
    the discovery's time as ``runtime_s``."""
    if source == "metrics":
        return result["metrics"][key]
    if key == "discovery_s" and key not in result:
        return result["runtime_s"]
    return result[key]


def format_value(summary: dict[str, float | None], seeds: int, digits: int = 3) -> str:
    if summary["mean"] is None:
        return "-"
    text = fixed(summary["mean"], digits)
    return text + (f" ± {fixed(summary['std'], digits)}" if seeds > 1 else "")


def table_cells(row: dict[str, Any]) -> list[str]:
    """A row's displayed cells: task, method, each column, and the error if a seed failed."""
    if row["finished"] == 0:
        return [row["label"], row["method"], *("-" for _ in COLUMNS), row["error"]]
    shown = [
        format_value(row[key], row["finished"], 2 if key == "discovery_s" else 3)
        for key, _, _ in COLUMNS
    ]
    failed = row["seeds"] - row["finished"]
    note = f"{failed} of {row['seeds']} seeds failed: {row['error']}" if failed else ""
    return [row["label"], row["method"], *shown, note]


HEADINGS = ("task", "method", *(heading for _, heading, _ in COLUMNS), "error")


def table(rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[list[str]]]:
    """The displayed table: headings and each row's cells, with the error column only when
    a row has an error."""
    with_errors = any(row["error"] for row in rows)
    width = len(HEADINGS) if with_errors else len(HEADINGS) - 1
    return HEADINGS[:width], [table_cells(row)[:width] for row in rows]


def markdown(rows: list[dict[str, Any]], caption: str) -> str:
    headings, body = table(rows)
    extra = len(headings) - 2 - len(COLUMNS)  # the error column, when shown
    separator = "|---|---|" + "---:|" * len(COLUMNS) + "---|" * extra
    lines = ["| " + " | ".join(headings) + " |", separator]
    # a | in a cell (a task file's name, an error) would start a column of its own
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body]
    return "\n".join(lines) + f"\n\n{caption}\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fields = ["task", "method", "model", "seeds", "finished"]
    for key, _, _ in COLUMNS:
        fields += [f"{key}_mean", f"{key}_std"]
    writer = csv.DictWriter(out, fields + ["error"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {name: row[name] for name in ("task", "method", "model", "seeds", "finished")}
        for key, _, _ in COLUMNS:
            flat[f"{key}_mean"], flat[f"{key}_std"] = row[key]["mean"], row[key]["std"]
        writer.writerow({**flat, "error": row["error"] or ""})
    return out.getvalue()


def write_text(path: Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)
