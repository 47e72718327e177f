"""A model directory's ground-truth circuits: ``circuit.json``, one graph per task (or
``task:variant``), shipped by the model families whose circuit is known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.graph_files import from_json_dict, to_json_dict

CIRCUIT_FILE = "circuit.json"


def write_ground_truth(directory: Path, graphs: dict[str, nx.MultiDiGraph]) -> None:
    """Save ``graphs`` (by task) as ``directory``'s ground truth."""
    rows = {task: to_json_dict(graph) for task, graph in graphs.items()}
    (directory / CIRCUIT_FILE).write_text(json.dumps(rows, indent=1))


def read_ground_truths(directory: str | Path) -> dict[str, nx.MultiDiGraph]:
    """Every ground-truth circuit shipped in a model directory, by task (none if it ships
    no ``circuit.json``)."""
    path = Path(directory) / CIRCUIT_FILE
    if not path.is_file():
        return {}
    try:
        graphs = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CircuitxError(f"cannot read the ground truth {path}: {error}") from None
    return {task: from_json_dict(row) for task, row in graphs.items()}


def read_ground_truth(directory: str | Path, task: str) -> nx.MultiDiGraph | None:
    """The ground-truth circuit for ``task`` shipped in a model directory, if any."""
    return read_ground_truths(directory).get(task)
