"""One leaderboard cell: a (task, method, model, seed) discovery, scored against the reference.

Cells run anywhere (this process, a worker process, a Ray worker): :func:`run_cell` takes a
picklable :class:`Cell` and returns a JSON-ready record; it never raises for a failing
discovery, it records the one-line error instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch

from circuitx import builtin
from circuitx.discovery import DiscoveryRequest, discover_scored
from circuitx.errors import CircuitxError, NotApplicable, first_line
from circuitx.graph import component_graph
from circuitx.graph_files import to_json_dict
from circuitx.progress import silenced
from circuitx.reference import circuit_record
from circuitx.scoring import roc_curves
from circuitx.tasks import TASKS, file_task_name

_loaded_models: dict[tuple[str, str | None, str, str | None], Any] = {}

# a cell whose method cannot run on its model by design (NotApplicable): no failure
NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class Cell:
    """One discovery of the grid. Its request names the model itself (a family already
    resolved for the task), or the family when it has no model for the task: then the
    cell is an error."""

    request: DiscoveryRequest
    variant: str | None = None  # the row's name for a method with options of its own

    @property
    def task(self) -> str:
        """The task's name: a built-in task's, or a task file's (:func:`file_task_name`)."""
        spec = self.request.task_name
        return (
            spec
            if spec in TASKS or not isinstance(self.request.task, str)
            else file_task_name(spec)
        )

    @property
    def method(self) -> str:
        """The row's method: its name, or a variant's (``eap[qk-fix=on]``)."""
        return self.variant or self.request.method

    @property
    def model(self) -> str:
        return str(self.request.model)

    @property
    def seed(self) -> int:
        return self.request.seed

    @property
    def n_prompts(self) -> int:
        return self.request.n_prompts

    @property
    def label(self) -> str:
        """Task, method, model (a directory's by its name) and seed: how the progress bar
        names a running cell (a grid may run one task and method on several models)."""
        model = Path(self.model).name or self.model
        return f"{self.task} / {self.method} / {model} / seed {self.seed}"

    def config(self) -> dict[str, Any]:
        """Everything the cell's result depends on (:meth:`DiscoveryRequest.config`); for a
        request that cannot run, its settings and the error."""
        try:
            return self.request.config()
        except CircuitxError as error:
            return {**self.request.settings(), "error": first_line(error)}

    @cached_property
    def key(self) -> str:
        """A hash of :meth:`config`. Computed once, on the driver, and pickled with the cell:
        a worker elsewhere (which may see the model directory differently) files its result
        under the same key, and a local directory's files are read once."""
        text = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@lru_cache(maxsize=1)
def machine() -> str:
    """This machine in words: CPU model and cores, and the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def load_cached(name: str, device: str | None, dtype: str, cache_dir: str | None = None):
    """``builtin.load``, remembering the last two models loaded in this process."""
    key = (name, device, dtype, cache_dir)
    if key not in _loaded_models:
        while len(_loaded_models) >= 2:
            _loaded_models.pop(next(iter(_loaded_models)))
        _loaded_models[key] = builtin.load(name, device, dtype, cache_dir)
    return _loaded_models[key]


def run_cell(cell: Cell, threads: int = 1) -> dict[str, Any]:
    """Run one cell: ``{"key", "cell", "status": "ok" | "error" | "not applicable",
    "result" | "error", ...}`` (not applicable: the method cannot run on the model by its
    design, :class:`circuitx.errors.NotApplicable`; the error says why).

    The result is the discovery's report (:func:`circuitx.discovery.report`) plus its node
    and edge ROC curves and its faithfulness curve; the record also keeps the graph (its
    JSON form) and the reference's circuit (:func:`circuitx.reference.circuit_record`), for
    the report's drawings. The cell runs on ``threads`` torch CPU
    threads whatever the process's setting: float sums depend on the thread count, and a
    fixed count makes a cell's result the same in any executor."""
    record: dict[str, Any] = {"key": cell.key, "cell": cell.request.settings()}
    start = time.perf_counter()
    request = cell.request
    try:
        request = request.validated(refuse_model=False)  # the grid asked (methods_for_model)
        with silenced(), builtin.torch_threads(threads):
            model = load_cached(request.model, request.device, request.dtype, request.cache_dir)
            scored = discover_scored(  # in the grid's words
                model, request, asks=lambda value: f"--reference {cell.request.task_name}={value}"
            )
            graph, reference, result = scored.graph, scored.reference, scored.summary
            roc = None if reference is None else roc_curves(component_graph(graph), reference)
        result["reference_note"] = scored.no_reference
        result["roc"] = roc
        result["faithfulness_curve"] = graph.graph.get("faithfulness_curve")
        result["cpr_curve"] = graph.graph.get("cpr_curve")  # by signed score
        record.update(status="ok", result=result, graph=to_json_dict(graph))
        record["reference_circuit"] = None if reference is None else circuit_record(reference)
    except NotApplicable as error:  # by design: no failure of the grid
        record.update(status=NOT_APPLICABLE, error=first_line(error))
    except CircuitxError as error:
        record.update(status="error", error=first_line(error))
    except Exception as error:  # a bug in one cell must not stop the grid; report it in one line
        record.update(status="error", error=f"{type(error).__name__}: {first_line(error)}")
    record.update(
        wall_s=time.perf_counter() - start,
        threads=threads,
        machine=machine(),
        finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return record
