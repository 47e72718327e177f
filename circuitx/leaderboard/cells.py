"""One leaderboard cell: a (task, method, model, seed) discovery, scored against the reference.

Cells run anywhere (this process, a worker process, a Ray worker): :func:`run_cell` takes a
picklable :class:`Cell` and returns a JSON-ready record; it never raises for a failing
discovery, it records the one-line error instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from circuitx import __version__
from circuitx.errors import CircuitxError, first_line

_loaded_models: dict[tuple[str, str | None, str], Any] = {}


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    model: str  # a built-in name, a local directory or a hub name
    seed: int
    n_prompts: int = 50
    ablation: str = "corrupted"
    device: str | None = None
    dtype: str = "float32"

    @property
    def label(self) -> str:
        return f"{self.task} / {self.method} / seed {self.seed}"

    def config(self) -> dict[str, Any]:
        """Everything the cell's result depends on: its fields, the model's identity, the
        method's defaults and the circuitx version."""
        from circuitx.methods import get_method, method_options
        from circuitx.tasks import get_task

        method = get_method(self.method)
        task = get_task(self.task)
        corruption = task.negative_corruption if method.uses_negatives else task.corruption
        return {
            **asdict(self),
            "model_identity": model_identity(self.model),
            "metric": task.default_metric,
            "corruption": corruption,
            "options": method_options(method, {}),
            "default_threshold": method.default_threshold,
            "reference": "auto",
            "circuitx": __version__,
        }

    @cached_property
    def key(self) -> str:
        """A hash of :meth:`config`. Computed once, on the driver, and pickled with the cell:
        a worker elsewhere (which may see the model directory differently) files its result
        under the same key, and a local directory's files are read once."""
        text = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


def model_identity(name: str) -> str:
    """What distinguishes a model's weights: a built-in's name and version, a local
    directory's path and its files' sizes and modification times, else the hub name."""
    from circuitx.builtin import BUILTIN_MODELS

    if name in BUILTIN_MODELS:
        return f"builtin:{name}-v{BUILTIN_MODELS[name].version}"
    path = Path(name).expanduser()
    if path.is_dir():
        stats = sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()
        )
        digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        return f"dir:{path.resolve()}:{digest}"
    return f"hub:{name}"


@lru_cache(maxsize=1)
def machine() -> str:
    """This machine in words: CPU model and cores, and the GPU when torch sees one."""
    import platform

    import torch

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


def load_cached(name: str, device: str | None, dtype: str):
    """``load_model``, remembering the last two models loaded in this process."""
    from circuitx.models import load_model

    key = (name, device, dtype)
    if key not in _loaded_models:
        while len(_loaded_models) >= 2:
            _loaded_models.pop(next(iter(_loaded_models)))
        _loaded_models[key] = load_model(name, device=device, dtype=dtype)
    return _loaded_models[key]


def run_cell(cell: Cell, threads: int = 1) -> dict[str, Any]:
    """Run one cell: ``{"key", "cell", "status": "ok" | "error", "result" | "error", ...}``.

    The result is the discovery's report (:func:`circuitx.discovery.report`) plus its node
    and edge ROC curves and its faithfulness curve. The cell runs on ``threads`` torch CPU
    threads whatever the process's setting: float sums depend on the thread count, and a
    fixed count makes a cell's result the same in any executor."""
    import torch

    from circuitx.discovery import discover, reference_for_model, report
    from circuitx.graph import component_graph
    from circuitx.progress import silenced
    from circuitx.scoring import roc_curves

    record: dict[str, Any] = {"key": cell.key, "cell": asdict(cell)}
    start = time.perf_counter()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with silenced():
            model = load_cached(cell.model, cell.device, cell.dtype)
            common = dict(n_prompts=cell.n_prompts, seed=cell.seed, ablation=cell.ablation)
            reference, label, note = reference_for_model(
                model, "auto", cell.task, cell.method, **common
            )
            graph = discover(model, cell.task, cell.method, **common)
        result = report(graph, reference, label)
        result["reference_note"] = note
        result["roc"] = None if reference is None else roc_curves(component_graph(graph), reference)
        result["faithfulness_curve"] = graph.graph.get("faithfulness_curve")
        record.update(status="ok", result=result)
    except CircuitxError as error:
        record.update(status="error", error=first_line(error))
    except Exception as error:  # a bug in one cell must not stop the grid; report it in one line
        record.update(status="error", error=f"{type(error).__name__}: {first_line(error)}")
    finally:
        torch.set_num_threads(threads_before)
    record.update(
        wall_s=time.perf_counter() - start,
        threads=threads,
        machine=machine(),
        finished_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return record
