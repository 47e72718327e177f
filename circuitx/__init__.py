"""circuitx: automated circuit discovery in transformer language models.

The Python API (:mod:`circuitx.api`, docs/python.md): :func:`load_model`, :func:`get_task`,
:func:`task_from_pairs`, :func:`task_from_file`, :func:`discover`, :func:`score`,
:func:`compare`, :func:`draw`, :func:`leaderboard`, :func:`read_graph`,
:func:`write_graph` and :func:`collapse_positions`.
"""

import os

# OpenMP's threads spin-wait 300,000 rounds by default before they sleep: on a machine whose
# cores are busy with other work, torch's threads then spin against it. Measured on this
# project's 2-core machine, discover on planted IOI with 2 threads while one core was busy:
# 9.7 s by default, 3.9-4.2 s with 10,000 (idle: 1.38-1.63 s either way, three runs each;
# one thread: 2.5 s busy, 2.8 s idle). It must be set before torch loads; a value already
# set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

from circuitx.errors import CircuitxError, CircuitxWarning
from circuitx.version import __version__

if TYPE_CHECKING:  # the API's names, for type checkers; at run time they load when used
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

_API = [n for n in __all__ if n not in ("CircuitxError", "CircuitxWarning", "__version__")]


class _Package(types.ModuleType):
    """The package: the API's functions load :mod:`circuitx.api` when first used, so that
    ``import circuitx`` alone does not load torch (seconds) and the command line takes a
    Ctrl-C from its first tenth of a second (:mod:`circuitx.start`); so do its modules
    (``circuitx.builtin.hf`` after ``import circuitx``)."""

    def __getattr__(self, name: str) -> Any:
        if (
            name.startswith("__")
            or "." in name
            or not importlib.util.find_spec(f"{__name__}.{name}")
        ):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return importlib.import_module(f"{__name__}.{name}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *_API})


def _api_function(name: str) -> property:
    """The API's function ``name``, or what a caller set in its place (mock.patch)."""

    def get(package: types.ModuleType) -> Any:
        if name in package.__dict__:
            return package.__dict__[name]
        try:
            return getattr(importlib.import_module("circuitx.api"), name)
        except AttributeError as error:  # not this property's: the API's import failed
            raise ImportError(f"circuitx.api failed to load: {error}") from error

    def put(package: types.ModuleType, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            return  # the import system binding the subpackage circuitx.leaderboard: the
            # API's function keeps the name, as it always has
        package.__dict__[name] = value

    def drop(package: types.ModuleType) -> None:
        package.__dict__.pop(name, None)

    return property(get, put, drop)


for _name in _API:
    setattr(_Package, _name, _api_function(_name))
sys.modules[__name__].__class__ = _Package
