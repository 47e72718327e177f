"""The Python API: what a notebook needs, one function per command of the command line,
taking and returning Python objects (models, tasks, networkx graphs, dicts).

    import circuitx as cx
    model = cx.load_model("planted-ioi")
    graph = cx.discover(model, "ioi", "eap-ig", n_prompts=20)
    cx.score(graph)["node_auc"]

Every function checks its input as the command does: a bad setting raises
:class:`circuitx.errors.CircuitxError` with the command line's one-line message, before
any model loads where it can be told without one. See docs/python.md.
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from circuitx import builtin
from circuitx.discovery import (
    FAITHFULNESS_PROMPTS,
    DiscoveryRequest,
    evaluate,
    matching_reference,
    overlap_notes,
    reference_for_graph,
    report,
    saved_graph_notes,
    top_k_notes,
)
from circuitx.discovery import discover as run_discovery
from circuitx.drawing import draw as draw_graph
from circuitx.engine import parse_memory
from circuitx.errors import CircuitxError, CircuitxWarning, a_type, listed
from circuitx.graph import collapse_positions as collapse
from circuitx.graph import layout_of
from circuitx.graph_files import check_flags, check_graph, read_graph, write_graph
from circuitx.leaderboard import (
    Leaderboard,
    check_references,
    method_option,
    parse_methods,
    parse_names,
    plan_grid,
    run_leaderboard,
    tasks_for,
)
from circuitx.methods import METHODS, all_options, unused_options
from circuitx.models import Model, parse_device, parse_dtype
from circuitx.scoring import overlap
from circuitx.tasks import TASKS, FileTask, Task, get_task, task_from_pairs
from circuitx.tasks.pairs import is_task_file

GraphLike = nx.MultiDiGraph | str | os.PathLike  # a graph, or the file it was saved to
Reference = nx.MultiDiGraph | str | os.PathLike | None


def load_model(
    name: str,
    task: str | Task | None = None,
    device: str | None = None,
    dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
) -> Model:
    """A built-in model (``planted-ioi``; a family such as ``planted`` needs ``task`` to
    pick its member, built into the cache the first time), a local model directory, or a
    Hugging Face hub model by name or alias (``gpt2``, ``EleutherAI/pythia-70m``)."""
    if not isinstance(name, (str, os.PathLike)):
        raise _not_a_model(name, "a model is named by a string or a directory")
    name = os.fspath(name)
    if task is not None:
        name = builtin.resolve(name, get_task(task).name)
    return builtin.load(name, device, dtype, cache_dir)


def _not_a_model(value: object, takes: str) -> CircuitxError:
    """The error for a model given as something circuitx does not load from: a module
    (a Hugging Face model in memory) is told how to hand it over."""
    hint = ""
    if isinstance(value, torch.nn.Module):
        hint = (
            ": circuitx loads a model itself, from a directory; save this one there with its "
            "save_pretrained(DIR), its tokenizer beside it, and pass DIR"
        )
    return CircuitxError(f"{takes}, not {a_type(value)}{hint}")


def task_from_file(path: str | os.PathLike, task_format: str | None = None) -> FileTask:
    """A task file: our .jsonl, an EAP-IG/MIB .csv or an auto-circuit .json (the format
    told by the suffix and content, or ``task_format``); see docs/task-files.md."""
    return FileTask.from_file(str(_path(path, "task_from_file")), task_format)


def discover(
    model: Model | str,
    task: str | Task,
    method: str,
    *,
    n_prompts: int = 50,
    seed: int = 0,
    threshold: float | None = None,
    top_k: int | None = None,
    ablation: str = "corrupted",
    corruption: str | None = None,
    metric: str | None = None,
    faithfulness: bool = True,
    faithfulness_prompts: int = FAITHFULNESS_PROMPTS,
    backup_rounds: int = 0,
    positions: str | None = "none",
    max_memory: int | str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    **options: Any,
) -> nx.MultiDiGraph:
    """Discover ``task``'s circuit in ``model`` with ``method``, as ``circuitx discover``:
    the full graph, every node and edge scored, the circuit marked ``in_circuit``, and the
    run's settings, metrics and faithfulness in ``graph.graph``.

    ``model``: a loaded model, or a name for :func:`load_model` (a family such as
    ``planted`` picks the task's member; ``device``, ``dtype`` and ``cache_dir`` are for
    that load). ``task``: a short name (``ioi``), a task file's path or a task made in
    Python (:func:`task_from_pairs`). ``options``: the method's own, named as its flags
    with underscores (``ig_steps=5``, ``tau=0.01``); ``circuitx methods`` lists them.
    ``positions``: ``named`` or ``all`` for a circuit over token positions (nodes such as
    ``a9.h9@END``; see docs/positions.md). What the command line notes or warns of on
    stderr (an empty circuit, a model that does not do the task, a method's own
    warnings) is raised as a :class:`circuitx.errors.CircuitxWarning`."""
    if isinstance(max_memory, str):
        max_memory = parse_memory(max_memory)
    positions = "none" if positions is None else positions  # as a graph records it
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if not isinstance(model, (str, Model)):
        raise _not_a_model(model, "model takes a model load_model gave, or a name")
    if isinstance(model, Model):
        _check_loaded(model, device, dtype)
    _check_keywords(options)
    named = model if isinstance(model, str) else model.builtin or model.source
    request = DiscoveryRequest(
        task=os.fspath(task) if isinstance(task, os.PathLike) else task,
        method=method,
        model=named,
        n_prompts=n_prompts,
        seed=seed,
        threshold=threshold,
        top_k=top_k,
        ablation=ablation,
        corruption=corruption,
        metric=metric,
        options=options,
        device=device,
        dtype=dtype or "float32",
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
        faithfulness=faithfulness,
        faithfulness_prompts=faithfulness_prompts,
        max_memory=max_memory,
        backup_rounds=backup_rounds,
        positions=positions,
    ).validated()
    if isinstance(model, str):
        model = builtin.load(str(request.model), device, request.dtype, request.cache_dir)
    hooked = model.hooked_points()  # a caller's hooks run in every pass
    try:
        graph = run_discovery(model, request)
    except CircuitxError as error:
        if hooked:
            raise CircuitxError(f"{error}; {_hooks_text(hooked)} ({REMOVE_HOOKS})") from None
        raise
    summary = report(graph, None, None, asked=request.n_prompts)
    said = top_k_notes(layout_of(graph), request.method, top_k) if top_k is not None else []
    said += unused_options(METHODS[request.method], options, request.options)
    if hooked:
        graph.graph["caller_hooks"] = hooked
        said.append(f"{_hooks_text(hooked)}: this is the hooked model's circuit ({REMOVE_HOOKS})")
    graph.graph["warnings"] = summary["warnings"]  # Python shows a message once per place
    for line in [line.removeprefix("note: ") for line in said] + summary["warnings"]:
        warnings.warn(line, CircuitxWarning, stacklevel=2)
    return graph


# TransformerLens's reset_hooks removes what its add_hook added, not a torch hook's handle
REMOVE_HOOKS = "model.bridge.reset_hooks() removes those add_hook added"


def _hooks_text(hooked: list[str]) -> str:
    """What a model holding a caller's hooks is told."""
    return f"the model holds hooks of your own (at {listed(hooked, 3)}), and they ran in every pass"


# discover's command-line options that are not keywords of discover(), and what does their
# work in Python
COMMAND_LINE_ONLY = {
    "no_faithfulness": "faithfulness=False",
    "out": "write_graph(graph, path) after it",
    "draw": "draw(graph, path) after it",
    "reference": "score(graph, reference) after it",
    "task_format": "task=task_from_file(path, task_format)",
    "json": "graph.graph, which holds the run's summary",
    "threads": "torch.set_num_threads(n)",
}


def _check_keywords(options: Mapping[str, Any]) -> None:
    """Fail in one line on a keyword that is neither discover()'s nor any method's option
    (a method's own, given to another method, is :func:`method_options`' to refuse)."""
    known = all_options()
    own = [n for n in inspect.signature(discover).parameters if n not in ("options",)]
    for key in options:
        if key in known or key.replace("-", "_") in known:
            continue
        if key in COMMAND_LINE_ONLY:
            raise CircuitxError(
                f"discover() has no keyword {key!r}: in Python {COMMAND_LINE_ONLY[key]} does "
                f"what --{key.replace('_', '-')} does"
            )
        close = difflib.get_close_matches(key, [*own, *known], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise CircuitxError(
            f"discover() has no keyword {key!r}, and no method has that option{hint}"
        )


def _check_loaded(model: Model, device: str | None, dtype: str | None) -> None:
    """Refuse a device or dtype that a loaded model is not on: they are for loading."""
    if dtype is not None and parse_dtype(dtype) != model.dtype:
        raise CircuitxError(
            f"dtype {dtype!r} is for loading, and this model is loaded in "
            f"{str(model.dtype).removeprefix('torch.')}: load it with load_model(..., "
            f"dtype={dtype!r})"
        )
    if device is None:
        return
    wanted = parse_device(device)
    other_index = wanted.index is not None and wanted.index != (model.device.index or 0)
    if wanted.type != model.device.type or other_index:
        raise CircuitxError(
            f"device {device!r} is for loading, and this model is on {model.device}: load "
            f"it with load_model(..., device={device!r})"
        )


def _graph(graph: GraphLike) -> nx.MultiDiGraph:
    if isinstance(graph, nx.MultiDiGraph):
        check_graph(graph, "malformed graph")
        return graph
    if not isinstance(graph, (str, os.PathLike)):
        raise CircuitxError(
            f"expected a circuit graph (a networkx MultiDiGraph, as discover returns) or "
            f"its file, not {type(graph).__name__}"
        )
    return read_graph(graph)


def _path(path: str | os.PathLike, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise CircuitxError(f"{what} takes a file path, not {path!r}")
    return Path(path)


def _task_name(task: Task | str | os.PathLike) -> str | os.PathLike:
    """What a leaderboard cell names a task by: a built-in task's name, a task file's path;
    a task made from pairs in Python has neither."""
    if not isinstance(task, Task):
        return task
    if not isinstance(task, FileTask):
        return task.name
    if not task.source:
        raise CircuitxError(
            f"task {task.name} was made from pairs in Python, and the leaderboard's cells "
            "read their task from a file: save the pairs as a task file (docs/task-files.md) "
            "and pass its path"
        )
    return task.source


def _names(value: str | Sequence[str], what: str) -> str:
    """``all``, a name or a list of names, as the command line's comma-separated list."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and all(isinstance(v, (str, os.PathLike)) for v in value):
        return ",".join(os.fspath(v) for v in value)
    raise CircuitxError(f"{what} takes 'all', a name or a list of names, not {value!r}")


def reference_circuit(
    graph: GraphLike, reference: Reference = "auto", cache_dir: str | os.PathLike | None = None
) -> tuple[nx.MultiDiGraph | None, str | None]:
    """The reference circuit ``reference`` names for ``graph`` (the task and model it
    records), in its universe (a component-level reference goes to a circuit's token
    positions), and its label: ``auto`` (a planted model's ground truth, or the task's
    reference on its paper model), ``planted``, ``TASK[:VARIANT]``, a planted model's name,
    a graph file, or a graph itself. ``(None, None)`` for ``None`` or ``"none"``; an
    error where ``auto`` finds none."""
    graph = _graph(graph)
    found, label = _reference(graph, reference, cache_dir)
    return matching_reference(graph, found), label


def _reference(
    graph: nx.MultiDiGraph, reference: Reference, cache_dir: str | os.PathLike | None
) -> tuple[nx.MultiDiGraph | None, str | None]:
    """:func:`reference_circuit` before it goes to the graph's universe."""
    if reference is None or reference == "none":
        return None, None
    if isinstance(reference, nx.MultiDiGraph):
        check_flags(reference, "malformed reference")
        return reference, str(reference.graph.get("reference") or "the given graph")
    if isinstance(reference, nx.Graph):
        raise CircuitxError(
            f"reference takes a circuitx graph, a networkx MultiDiGraph (an edge per head "
            f"input, keyed by its name), not {a_type(reference)}: start from "
            "cx.reference_circuit(graph) or a discovered graph and mark its circuit in_circuit"
        )
    if not isinstance(reference, (str, os.PathLike)):
        raise CircuitxError(
            f"reference takes a graph, a name or a graph file, not {type(reference).__name__}"
        )
    cache = None if cache_dir is None else os.fspath(cache_dir)
    found, label, why_not = reference_for_graph(
        graph, os.fspath(reference), cache, asks=lambda value: f"reference={value}"
    )
    if found is None:
        raise CircuitxError(why_not or "no reference to score against")
    return found, label


def score(
    graph: GraphLike, reference: Reference = "auto", cache_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """``graph``'s circuit against a reference (see :func:`reference_circuit`), as
    ``circuitx score``: node and edge precision, recall, F1 and ROC AUC (``node_auc``,
    ...; ``node_auc_pessimistic`` counts tied scores as misses, the ACDC paper's; None
    where undefined), and the reference's label (``reference``).
    Why a ROC AUC is missing, or how a reference without positions was placed on a
    circuit over positions, is raised as a :class:`circuitx.errors.CircuitxWarning`."""
    if reference is None or reference == "none":
        raise CircuitxError(f"score needs a reference to score against; {reference!r} names none")
    graph = _graph(graph)
    found, label = _reference(graph, reference, cache_dir)
    found = matching_reference(graph, found)  # once: the notes find it placed
    metrics = evaluate(graph, found)
    for line in saved_graph_notes(graph, found, metrics):  # what the command says on stderr
        warnings.warn(line.removeprefix("note: "), CircuitxWarning, stacklevel=2)
    return {"reference": label, **metrics}


def collapse_positions(graph: GraphLike) -> nx.MultiDiGraph:
    """The component-level graph of a circuit over token positions (or of its file), as
    ``--collapse-positions`` makes it: see :func:`circuitx.graph.collapse_positions`."""
    return collapse(_graph(graph))


def compare(a: GraphLike, b: GraphLike) -> dict[str, dict[str, Any]]:
    """The overlap of two circuits, as ``circuitx compare``: per level (``heads``,
    ``nodes``: heads and MLPs, the input and logits left out, as every circuit keeps
    them; ``edges``) the counts in each, shared, Jaccard, and the share of A's circuit in
    B's (``a_in_b``) and of B's in A's. A circuit over token positions against one
    without is compared as its components (and a :class:`CircuitxWarning` says so)."""
    a, b = _graph(a), _graph(b)
    for line in overlap_notes(a, b):
        warnings.warn(line.removeprefix("note: "), CircuitxWarning, stacklevel=2)
    return overlap(a, b)


def draw(
    graph: GraphLike,
    path: str | os.PathLike,
    reference: Reference = None,
    top: int | None = None,
    every: bool = False,
    engine: str = "matplotlib",
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Draw ``graph`` to ``path`` (.svg, .png, .pdf, or .html for the interactive page),
    as ``circuitx draw``; nodes coloured by agreement with ``reference`` where one is
    given (see :func:`reference_circuit`). Returns the counts the caption gives (the
    nodes drawn besides input and logits, the edges drawn) and the note on an empty
    circuit."""
    graph = _graph(graph)
    path = _path(path, "draw")
    if not isinstance(every, bool):
        raise CircuitxError(f"every takes True or False, not {every!r}")
    if every and top is not None:
        raise CircuitxError("choose every=True or top, not both")
    found, _ = reference_circuit(graph, reference, cache_dir)
    return draw_graph(graph, path, found, top, every, engine)


def leaderboard(
    tasks: str | Task | Sequence[str | Task] = "all",
    methods: str | Sequence[str] = "all",
    model: str = "planted",
    seeds: int = 3,
    seed: int = 0,
    n_prompts: int = 50,
    out: str | os.PathLike = "leaderboard",
    jobs: int = 1,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    ablation: str = "corrupted",
    backup_rounds: int = 0,
    positions: str | None = "none",
    device: str | None = None,
    dtype: str = "float32",
    cache_dir: str | os.PathLike | None = None,
    max_memory: int | str | None = None,
    references: Mapping[str, str] | None = None,
    threads: int = 1,
    executor: str = "local",
) -> Leaderboard:
    """Every (task, method) cell over ``seeds`` seeds from ``seed``, scored against each
    task's reference, as ``circuitx leaderboard``: its rows (one per task, model and method,
    means and spreads over seeds), each cell's record, and the files written to ``out``
    (results.json/.csv/.md, plots, index.html). Cells finished by an earlier run into
    ``out`` are read back, not rerun. ``tasks`` and ``methods``: ``all`` or names
    (variants such as ``eap[qk-fix=on]`` too; a task may be a built-in task or one read
    from a file, as :func:`get_task` and :func:`task_from_file` give them); ``options``:
    {method: {option: value}}; ``positions``: circuits over token positions, as for
    :func:`discover`; ``references``: {task: reference} for tasks scored against other
    than ``auto`` (a graph file of your own for a task file, say); ``threads`` and
    ``executor`` as ``--threads`` and ``--executor``."""
    if isinstance(max_memory, str):
        max_memory = parse_memory(max_memory)
    positions = "none" if positions is None else positions  # as a graph records it
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    if isinstance(model, Model):
        raise CircuitxError(
            "model takes a name, a family or a directory, not a loaded model: each cell "
            f"loads its own (pass {model.builtin or model.source!r})"
        )
    if not isinstance(model, str):
        raise _not_a_model(model, "model takes a name, a family or a directory")
    if isinstance(tasks, Task):
        tasks = [tasks]
    if isinstance(tasks, Sequence) and not isinstance(tasks, str):  # task objects by name
        tasks = [_task_name(task) for task in tasks]
    task_spec, method_spec = _names(tasks, "tasks"), _names(methods, "methods")
    out = _path(out, "out")
    if options is not None and not (
        isinstance(options, Mapping) and all(isinstance(v, Mapping) for v in options.values())
    ):
        raise CircuitxError(f"options takes {{method: {{option: value}}}}, not {options!r}")
    task_names = parse_names(task_spec, list(TASKS), "task", tasks_for(model), is_task_file)
    specs = parse_methods(method_spec)
    given = {  # checked as discover checks them (True is "on")
        name: dict(method_option(name, key, value) for key, value in values.items())
        for name, values in (options or {}).items()
    }
    for name in given:
        if name not in [spec.method for spec in specs]:
            raise CircuitxError(f"options name {name}, which is not among the methods")
    if references is not None and not isinstance(references, Mapping):
        raise CircuitxError(f"references takes {{task: reference}}, not {a_type(references)}")
    chosen = check_references(
        {_task_name(task): ref for task, ref in (references or {}).items()}, task_names
    )
    grid = plan_grid(
        model, task_names, specs, method_spec.strip() == "all", given, chosen, seeds, seed,
        n_prompts, ablation, jobs, threads, executor, backup_rounds, positions, device, dtype,
        None if cache_dir is None else os.fspath(cache_dir), max_memory,
    )  # fmt: skip
    board = run_leaderboard(grid.cells, out, jobs, executor, threads, grid.settings, grid.notes)
    for line in grid.notes + board.said + _failures(board):
        said = line.removeprefix("note: ").removeprefix("warning: ")
        warnings.warn(said, CircuitxWarning, stacklevel=2)
    return board


def _failures(board: Leaderboard) -> list[str]:
    """What the command line's exit code 1 says: how many cells failed, and why (each
    distinct error once, the first three)."""
    errors = board.errors
    if not errors:
        return []
    distinct = list(dict.fromkeys(errors))
    more = f"; and {len(distinct) - 3} more errors" if len(distinct) > 3 else ""
    return [
        f"{len(errors)} of {len(board.records)} cells failed (board.records hold each "
        f"one's error): {'; '.join(distinct[:3])}{more}"
    ]


__all__ = [
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
