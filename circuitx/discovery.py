"""Discovery end to end: task data, a method's scores, the selection, and the report."""

from __future__ import annotations

import time
from typing import Any, Callable

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.graph import (
    add_feature_level,
    component_graph,
    component_nodes,
    edges_by_name,
    full_graph,
    select_edges,
    select_nodes,
    shape_of,
)
from circuitx.methods import MethodRun, get_method, method_options
from circuitx.models import Model, local_model_hub_id
from circuitx.patching import PatchingEngine
from circuitx.progress import progress_bar
from circuitx.reference import resolve_reference
from circuitx.scoring import empty_metrics, faithfulness_report, overlap, score_graph
from circuitx.tasks import TASKS, get_task


def model_id(model: Model) -> str | None:
    """The hub id a model is, or was saved from; None for built-in and anonymous models."""
    if model.builtin:
        return None
    return model.hub_id or local_model_hub_id(model.source)


def discover(
    model: Model,
    task_name: str,
    method_name: str,
    n_prompts: int = 50,
    seed: int = 0,
    metric: str | None = None,
    threshold: float | None = None,
    top_k: int | None = None,
    corruption: str | None = None,
    options: dict[str, Any] | None = None,
    ablation: str = "corrupted",
) -> nx.MultiDiGraph:
    """Run ``method_name`` on ``task_name`` and return the scored, selected circuit graph,
    with its faithfulness measured.

    ``metric`` and ``corruption`` default to the task's own defaults, ``options`` (e.g.
    ``tau``, ``ig_steps``, ``stages``; None values ignored) to the method's.
    """
    method = get_method(method_name)
    if corruption is None and method.uses_negatives:
        corruption = get_task(task_name).negative_corruption
    task = get_task(task_name, corruption)
    check_selection(threshold, top_k)
    options = method_options(method, options)
    method.check(model, n_prompts, options)
    metric = metric or task.default_metric
    task.check_metric(metric)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        data = task.make_data(model, n_prompts, seed)
        engine = PatchingEngine(model, task, data, metric, ablation)
        graph = full_graph(
            model.n_layers,
            model.n_heads,
            model.has_mlp,
            task=task.name,
            method=method.name,
            model=model.name,
            model_id=model_id(model),
            seed=seed,
            metric=metric,
            corruption=task.corruption,
            ablation=ablation,
            n_prompts=n_prompts,
            **options,
        )
        stage_threshold = threshold if threshold is not None else method.default_threshold
        run = MethodRun(seed, stage_threshold, options)
        with progress_bar(f"{method.name} on {task.name}", method.steps(graph, run)) as advance:
            run.advance = advance
            facts = method.score(engine, graph, run)
    if top_k is None and threshold is None:
        threshold = method.selection_threshold(run)
    select(graph, method.granularity, threshold, top_k)
    graph.graph.update(
        clean_metric=engine.clean_metric,
        corrupted_metric=engine.corrupted_metric,
        clean_accuracy=task.accuracy(engine.clean_final, data),
        **facts,
    )
    graph.graph.update(threshold=threshold, top_k=top_k, runtime_s=time.perf_counter() - start)
    graph.graph.update(faithfulness_report(engine, graph))
    if "feature_level" in run.outputs:
        add_feature_level(graph, *run.outputs["feature_level"], threshold)
    return graph


def check_selection(threshold: float | None, top_k: int | None) -> None:
    if threshold is not None and top_k is not None:
        raise CircuitxError("choose --threshold or --top-k, not both")


def select(
    graph: nx.MultiDiGraph, granularity: str, threshold: float | None, top_k: int | None
) -> None:
    """Mark the circuit: the components (node methods) or edges (edge methods) with
    |score| >= threshold, or the top k by |score|."""
    if granularity == "node":
        items = component_nodes(graph)
        magnitude = {n: abs(graph.nodes[n]["score"]) for n in items}
    elif granularity == "edge":
        edges = edges_by_name(graph)
        items = list(edges)
        magnitude = {name: abs(edges[name]["score"]) for name in items}
    else:
        raise CircuitxError(f"no selection rule for {granularity}-level scores")
    if top_k is not None:
        chosen = sorted(items, key=lambda n: -magnitude[n])[:top_k]
    else:
        chosen = [n for n in items if magnitude[n] >= threshold]
    (select_nodes if granularity == "node" else select_edges)(graph, chosen)


def reference_for_graph(
    graph: nx.MultiDiGraph, spec: str
) -> tuple[nx.MultiDiGraph | None, str | None, str | None]:
    """The reference ``spec`` names for a saved graph: ``(graph, label, note)`` as
    :func:`resolve_reference` gives them, with the task, model and shape the graph records."""
    meta = graph.graph
    n_layers, n_heads, has_mlp = shape_of(graph)
    task = meta.get("task")
    if spec == "auto" and task not in TASKS:
        return None, None, "no reference: the graph names no known task; pass --reference"
    return resolve_reference(
        spec, str(task), meta.get("model_id"), n_layers, n_heads, has_mlp, planted=meta.get("model")
    )


def reference_for_model(
    model: Model,
    spec: str,
    task_name: str,
    method_name: str,
    note: Callable[[str], None] | None = None,
    **settings: Any,
) -> tuple[nx.MultiDiGraph | None, str | None, str | None]:
    """The reference ``spec`` names for ``task_name`` on ``model``, as
    :func:`resolve_reference` gives it. A relational reference (another task's circuit) is
    discovered with the same method and :func:`discover` ``settings`` (a metric the other
    task lacks is left to its default); ``note`` hears when that happens."""

    def discover_reference(other_task: str) -> nx.MultiDiGraph:
        if note is not None:
            note(
                f"reference: discovering the {other_task} circuit with {method_name} on this model"
            )
        other = dict(settings)
        if other.get("metric") not in get_task(other_task).metrics:
            other["metric"] = None
        return discover(model, other_task, method_name, **other)

    return resolve_reference(
        spec,
        task_name,
        model_id(model),
        model.n_layers,
        model.n_heads,
        model.has_mlp,
        discover_reference,
        planted=model.builtin,
    )


def evaluate(graph: nx.MultiDiGraph, reference: nx.MultiDiGraph | None) -> dict[str, float | None]:
    """Metrics against ``reference``; all None without one."""
    return empty_metrics() if reference is None else score_graph(component_graph(graph), reference)


def report(
    graph: nx.MultiDiGraph, reference: nx.MultiDiGraph | None, label: str | None
) -> dict[str, Any]:
    """The JSON summary of a discovery, scored against ``reference`` (named ``label``)."""
    graph = component_graph(graph)
    meta = graph.graph
    nodes = component_nodes(graph)
    return {
        "task": meta.get("task"),
        "method": meta.get("method"),
        "model": meta.get("model"),
        "seed": meta.get("seed"),
        "n_prompts": meta.get("n_prompts"),
        "metric": meta.get("metric"),
        "corruption": meta.get("corruption"),
        "clean_metric": meta.get("clean_metric"),
        "corrupted_metric": meta.get("corrupted_metric"),
        "clean_accuracy": meta.get("clean_accuracy"),
        "threshold": meta.get("threshold"),
        "top_k": meta.get("top_k"),
        "runtime_s": meta.get("runtime_s"),
        "ablation": meta.get("ablation"),
        "faithfulness": meta.get("faithfulness"),
        "cpr": meta.get("cpr"),
        "cmd": meta.get("cmd"),
        "n_nodes": len(nodes),
        "n_nodes_in_circuit": sum(bool(graph.nodes[n]["in_circuit"]) for n in nodes),
        "n_edges": graph.number_of_edges(),
        "n_edges_in_circuit": sum(bool(d["in_circuit"]) for _, _, d in graph.edges(data=True)),
        "reference": label,
        "metrics": evaluate(graph, reference),
        "overlap": None if reference is None else overlap(graph, reference),
    }
