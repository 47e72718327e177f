"""Resolving ``--reference`` (auto, none, planted, TASK[:VARIANT], a planted model's name
or a graph file) to a reference circuit for a model or a saved graph."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from circuitx import builtin
from circuitx.discovery.request import DiscoveryRequest, check_reference
from circuitx.discovery.run import discover, model_id
from circuitx.errors import CircuitxError
from circuitx.graph import shape_of
from circuitx.models import Model
from circuitx.names import parse_node
from circuitx.reference import read_reference
from circuitx.tasks import TASKS, Task, get_task

Resolved = tuple[nx.MultiDiGraph | None, str | None, str | None]  # graph, label, why not
# Discovers the named task's circuit with the current method on the current model.
DiscoverReference = Callable[[str], nx.MultiDiGraph]


# how a message asks for a reference: the command line's ``--reference VALUE`` by default
Asks = Callable[[str], str]


def command_line(value: str) -> str:
    """How ``discover`` and ``score`` take a reference: ``--reference VALUE``."""
    return f"--reference {value}"


def truth_label(model: str, truth: nx.MultiDiGraph) -> str:
    """``MODEL ground truth``, with which one where the model ships several (tracr's:
    ACDC's edge list or the weights')."""
    named = str(truth.graph.get("model") or model)  # as the truth's name starts
    which = str(truth.graph.get("reference", "")).removeprefix(named).strip(" ()")
    return f"{model} ground truth" + (f" ({which})" if which and which != "ground truth" else "")


def resolve_reference(
    spec: str,
    task_name: str,
    model_id: str | None,
    shape: tuple[int, int, bool],
    discover_reference: DiscoverReference | None = None,
    planted: str | None = None,
    cache_dir: str | None = None,
    asks: Asks = command_line,
) -> Resolved:
    """``(reference graph, label, None)`` for ``spec``, or ``(None, None, why not)``;
    ``asks`` phrases how a message asks for a reference.

    A relational reference (a task whose reference is another task's circuit found by the
    same method on the same model) is made by ``discover_reference(other task)``. On a
    model that ships a ground truth (``planted`` names it: a built-in model or a model
    directory) ``auto`` and ``planted`` give it, and ``TASK:VARIANT`` gives the variant it
    ships (e.g. ``tracr:acdc``).
    """
    check_reference(spec)
    auto = spec == "auto"  # a reference that does not fit is then a note, not an error
    if spec == "none":
        return None, None, "no reference requested"
    model_name, _, which = spec.partition(":")
    owner = builtin.ground_truth_owner(model_name)  # a model's ground truth (one it names)
    if owner is not None:
        truth = builtin.own_ground_truth(owner, task_name, cache_dir, which)
        return truth, truth_label(owner, truth), None
    if spec in ("auto", "planted"):
        truth = builtin.ground_truth(planted, task_name, cache_dir)
        if truth is None and task_name not in TASKS and builtin.ships_ground_truth(planted or ""):
            # a task file's prompts on a planted model: the model's own circuit
            truth = builtin.own_ground_truth(str(planted), task_name, cache_dir)
        if truth is not None:
            return truth, truth_label(str(planted), truth), None
        if spec == "planted":
            raise CircuitxError(
                f"--reference planted needs a planted model with a circuit for {task_name} "
                f"(`circuitx models` lists them)"
            )
    if spec == "auto":
        if task_name not in TASKS:
            note = (
                f"no reference: the task {task_name} has none; pass {asks('FILE')} (a graph "
                "file, or a planted model's name for its ground truth)"
            )
            return None, None, note
        task = get_task(task_name)
        if model_id != task.paper_model:
            note = (
                f"no reference: --reference auto uses the {task_name} reference only on "
                f"{task.paper_model}, the model it was published for; "
            )
            try:  # offered only where it fits the model
                if task.reference_task is None:
                    task.reference("", *shape)
                note += (
                    f"pass {asks(task_name)} to use it here"
                    if task.reference_task is None or discover_reference is not None
                    else f"here it would be {_discover_it(task, asks)}"  # a saved graph
                )
            except CircuitxError as error:
                note += f"it does not fit this model ({error})"
            return None, None, note
        spec = task_name
    base, _, variant = spec.partition(":")
    if base == task_name and planted is not None:  # the model's own circuit for the task
        truth = builtin.ground_truth(planted, spec, cache_dir)
        if truth is not None:
            return truth, truth_label(planted, truth), None
        shipped = builtin.shipped_ground_truths(planted, cache_dir)
        if base in TASKS and TASKS[base].model_family and shipped:  # only models ship its truth
            raise CircuitxError(
                f"{planted} ships no {spec} ground truth; it ships {', '.join(shipped)}"
            )
    if base in TASKS:
        task = TASKS[base]
        if task.reference_task is None:
            try:
                return task.reference(variant, *shape), spec, None
            except CircuitxError as error:
                if not auto:
                    raise
                # a model that says it is the paper's but is not its shape: go on without
                return None, None, f"no reference: {error} (the model says it is {model_id})"
        if discover_reference is None:
            raise CircuitxError(f"the {base} reference is {_discover_it(task, asks)}")
        graph = discover_reference(task.reference_task)
        return graph, f"{task.reference_task} circuit found by {graph.graph['method']}", None
    reference = read_reference(spec, *shape)  # check_reference: a file
    roleless = not any(role for _, role in reference.nodes(data="role"))  # one discover saved
    if roleless and builtin.ground_truths_at_hand(planted, cache_dir):
        try:  # the roles the model's own reference gives its heads, to place them by
            own, _, _ = resolve_reference(
                "auto", task_name, model_id, shape, None, planted, cache_dir
            )
        except CircuitxError:
            own = None
        if own is not None:
            _take_roles(reference, own)
    return reference, spec, None


def _take_roles(reference: nx.MultiDiGraph, own: nx.MultiDiGraph) -> None:
    """Give ``reference``'s heads the roles ``own`` (the model's own reference: a planted
    model's ground truth, a task's published circuit) gives them: a component circuit a
    file holds then goes to a circuit over token positions by them, as ``own`` would."""
    for node, role in own.nodes(data="role"):
        if role and node in reference and parse_node(node)[0] == "head":
            reference.nodes[node]["role"] = role


def _discover_it(task: Task, asks: Asks) -> str:
    """What a relational task's reference is, and how to give it to a saved graph."""
    return (
        f"the {task.reference_task} circuit the same method finds on the same model; "
        f"discover it (circuitx discover --task {task.reference_task} ... --out FILE) and "
        f"pass {asks('FILE')}"
    )


def reference_for_graph(
    graph: nx.MultiDiGraph, spec: str, cache_dir: str | None = None, asks: Asks = command_line
) -> Resolved:
    """The reference ``spec`` names for a saved graph, with the task, model and shape the
    graph records (``asks``: as for :func:`resolve_reference`)."""
    meta = graph.graph
    if spec == "auto" and meta.get("reference_spec"):  # the one its discovery was given
        spec = str(meta["reference_spec"])
        if Path(spec).is_absolute() and not Path(spec).is_file():  # a file, recorded so
            raise CircuitxError(
                f"the graph was discovered against the reference file {spec}, which is not "
                f"there now: pass {asks('FILE')}"
            )
    task = meta.get("task")
    on_planted = builtin.ships_ground_truth(str(meta.get("model") or ""))
    if spec == "auto" and task not in TASKS and not on_planted:  # a planted model's own
        return (
            None,
            None,
            (
                f"no reference: {_no_reference(meta)}; pass {asks('FILE')}, or "
                f"{asks('MODEL')} for a built-in model's ground truth (circuitx models lists them)"
            ),
        )
    if spec == "planted" and task is None:
        raise CircuitxError(
            "--reference planted needs the graph's task, which this graph does not record "
            "(a graph from another tool): name the planted model (planted-ioi) or a graph file"
        )
    model = str(meta.get("model") or "")
    gone = (  # a model directory moved since: say so, not that the model has no truth
        f"the graph's model directory {model} is not there now (moved or deleted), so "
        f"whether it ships a ground truth cannot be read: pass {asks('DIR')} with where it "
        f"is now, or {asks('FILE')}"
        if spec in ("auto", "planted") and Path(model).is_absolute() and not Path(model).is_dir()
        else None
    )
    if gone and spec == "planted":
        raise CircuitxError(gone)
    found = resolve_reference(
        spec,
        str(task),
        meta.get("model_id"),
        shape_of(graph),
        planted=meta.get("model"),
        cache_dir=cache_dir,
        asks=asks,
    )
    return (None, None, f"no reference: {gone}") if gone and found[0] is None else found


def _no_reference(meta: dict) -> str:
    """Why a graph's own records name no reference (its task has none)."""
    task = meta.get("task")
    if task is None:
        return "the graph records no task (a graph from another tool)"
    if meta.get("task_file"):
        file = meta["task_file"]
        return f"the graph's task is the task file {file}, which has no circuit of its own"
    return f"the graph's task {task} is not a built-in task, so it has no circuit of its own"


def reference_for_model(
    model: Model,
    request: DiscoveryRequest,
    note: Callable[[str], None] | None = None,
    asks: Asks = command_line,
) -> Resolved:
    """The reference the request names for its task on ``model``. A relational reference
    (another task's circuit) is discovered with the same request on that task (a metric
    the other task lacks is left to its default); ``note`` hears when that happens
    (``asks``: as for :func:`resolve_reference`)."""
    request.validated(refuse_model=False)
    get_task(request.task, task_format=request.task_format).check_model(model)

    def discover_reference(other_task: str) -> nx.MultiDiGraph:
        if note is not None:
            note(
                f"reference: discovering the {other_task} circuit with {request.method} "
                "on this model"
            )
        metric = request.metric if request.metric in get_task(other_task).metrics else None
        other = dataclasses.replace(  # the circuit alone: it is the reference, not scored
            request,
            task=other_task,
            metric=metric,
            corruption=None,
            model=model.name,
            reference="none",
        )
        return discover(model, other)

    return resolve_reference(
        request.reference,
        request.task_name,
        model_id(model),
        (model.n_layers, model.n_heads, model.has_mlp),
        discover_reference,
        planted=model.builtin or model.source,
        cache_dir=request.cache_dir,
        asks=asks,
    )
