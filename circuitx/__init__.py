"""circuitx: automated circuit discovery in transformer language models.

The Python API (:mod:`circuitx.api`, docs/python.md): :func:`load_model`, :func:`get_task`,
:func:`task_from_pairs`, :func:`task_from_file`, :func:`discover`, :func:`score`,
:func:`compare`, :func:`draw`, :func:`leaderboard`, :func:`read_graph`,
:func:`write_graph` and :func:`collapse_positions`.
"""

from circuitx.api import (
    collapse_positions,
    compare,
    discover,
    draw,
    get_task,
    leaderboard,
    load_model,
    read_graph,
    reference_circuit,
    score,
    task_from_file,
    task_from_pairs,
    write_graph,
)
from circuitx.errors import CircuitxError, CircuitxWarning
from circuitx.version import __version__

__all__ = [
    "CircuitxError",
    "CircuitxWarning",
    "__version__",
    "collapse_positions",
    "compare",
    "discover",
    "draw",
    "get_task",
    "leaderboard",
    "load_model",
    "read_graph",
    "reference_circuit",
    "score",
    "task_from_file",
    "task_from_pairs",
    "write_graph",
]
