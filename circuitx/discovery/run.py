"""Discovery end to end: task data, the method's scores, the selection, and the graph."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import networkx as nx
import torch

from circuitx.discovery.faithfulness import (
    FAITHFULNESS_KEYS,
    edge_ranking,
    edge_scores,
    faithfulness_report,
)
from circuitx.discovery.request import DiscoveryRequest, reference_to_record
from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.graph import add_feature_level, edges_by_name, layout_graph
from circuitx.layout import Layout
from circuitx.methods import Method, MethodRun, Scores, get_method, variant_label
from circuitx.models import Model, local_model_hub_id
from circuitx.progress import progress_bar
from circuitx.tasks import FileTask, get_task
from circuitx.tasks.base import position_layout
from circuitx.tasks.tracr import read_program


def model_id(model: Model) -> str | None:
    """The hub id a model is, or was saved from; None for built-in and anonymous models."""
    if model.builtin:
        return None
    return model.hub_id or local_model_hub_id(model.source)


def method_label(method: Method, options: dict[str, Any]) -> str:
    """The method's name with its settings other than the defaults, as the leaderboard
    names a variant (``eap[qk-fix=on]``); paths (options without choices that take text)
    are left out."""
    shown = [
        (option.name, options[option.name])
        for option in method.options
        if options.get(option.name) != option.default
        and (option.type != "str" or option.choices is not None)
    ]
    return variant_label(method.name, shown)


def discover(model: Model, request: DiscoveryRequest) -> nx.MultiDiGraph:
    """Run the request's method on its task with ``model`` and return the scored,
    selected circuit graph, with its faithfulness measured.

    It runs as it would in a fresh process, whatever the caller set, and gives back what
    was set: the model's optional hook points off but where a pass turns them on (a
    caller's split q/k/v moved scores by up to 1e-3: a trial), torch's default dtype
    float32 (a float64 default moved the learned masks' scores, and broke the SAE's)."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        with model.hooks_enabled((), only=True):
            return _discover(model, request)
    finally:
        torch.set_default_dtype(dtype)


def _discover(model: Model, request: DiscoveryRequest) -> nx.MultiDiGraph:
    request = request.validated(refuse_model=False)  # the loaded model: method.check
    method = get_method(request.method)
    task = get_task(request.task, request.corruption, request.task_format)
    tracr = read_program(model.source) is not None  # a task file may hold its own tokens
    if tracr and task.name != "tracr" and not isinstance(task, FileTask):
        raise CircuitxError(
            f"{model.name} is a tracr model: it runs task tracr (its program's), not {task.name}"
        )
    task.check_model(model)
    stage_threshold = (
        request.threshold if request.threshold is not None else method.default_threshold
    )
    run = MethodRun(
        request.seed, stage_threshold, dict(request.options), request.n_prompts, request.cache_dir
    )
    method.check(model, run)
    layout = model.layout

    def choose(scores: Scores) -> tuple[float | None, int | None, torch.Tensor, torch.Tensor]:
        return selected(request, method, run, layout, scores)

    start = time.perf_counter()
    # gradient methods take their gradients whatever the caller set (a trial's
    # cx.discover(..., "eap") inside torch.no_grad() failed to hook a tensor)
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        # the CPU's generator, which fork_rng gives back; torch.manual_seed would also
        # reseed every GPU's, left so after the call (the methods draw from their own)
        torch.random.default_generator.manual_seed(request.seed)
        data = task.make_data(model, request.n_prompts, request.seed)
        layout = position_layout(model.layout, task, data, request.positions, model.causal)
        engine = Engine(
            model,
            task,
            data,
            request.metric,
            request.ablation,
            request.max_memory,
            method.working_floats_per_token(model, run),
            layout=layout,
            kept=method.kept_hooks(model, run),
        )
        steps = method.steps(layout, run)
        label, even = f"{method.name} on {task.name}", method.even_steps
        with progress_bar(label, steps, time_left=even) as advance:
            run.advance = advance
            scores = method.score(engine, run)
        threshold, top_k, nodes_kept, edges_kept = choose(scores)
        for round_ in range(request.backup_rounds):  # what takes over when a node is gone
            inputs = layout.inputs  # the circuit's senders but the input(s)
            found = nodes_kept[inputs:-1].nonzero().flatten() + inputs
            label = f"{method.name}: backups of {len(found)} nodes, round {round_ + 1}"
            with progress_bar(label, steps * len(found), time_left=even) as advance:
                run.advance = advance
                for sender in found.tolist():
                    held = engine.holding(torch.arange(layout.n_senders) == sender)
                    scores = stronger(scores, method.score(held, run))
                    held.release()
            threshold, top_k, nodes_kept, edges_kept = choose(scores)
    graph = layout_graph(
        layout,
        task=task.name,
        method=method.name,
        model=model.name,
        model_id=model_id(model),
        d_model=model.d_model,
        dtype=str(model.dtype).removeprefix("torch."),
        device=model.device.type,
        seed=request.seed,
        metric=request.metric,
        corruption=task.corruption,
        ablation=request.ablation,
        n_prompts=data.n_prompts,  # a task may have fewer distinct prompts than requested
        repeated_prompts=data.repeated_prompts(),  # of them, repeats of an earlier one
        **request.options,
    )
    write_scores(graph, layout, scores, nodes_kept, edges_kept)
    graph.graph["method_label"] = method_label(method, request.options)
    recorded = reference_to_record(request.reference)  # what score takes for auto
    if recorded is not None:
        graph.graph["reference_spec"] = recorded
    if isinstance(task, FileTask):  # which pairs: the file's content, by its hash
        graph.graph.update(task_file=task.source or task.name, task_file_sha256=task.digest)
        if said := task.warnings():  # it goes over every pair: once
            graph.graph["task_warnings"] = said
    graph.graph.update(
        clean_metric=engine.clean_metric,
        corrupted_metric=engine.corrupted_metric,
        ablated_metric=None if engine.ablation == "corrupted" else engine.ablated_metric,
        clean_accuracy=None if task.answers_are_the_models else engine.accuracy(),
        prompt_parts=engine.n_parts,
        resident_parts=engine.resident_parts,  # of them, kept cached between sweeps
        max_memory=engine.budget,  # the budget in bytes, and a part's estimated need
        part_memory=engine.plan.part_bytes,
        **scores.facts,
        method_fact_keys=sorted(scores.facts),  # which metadata the method recorded
    )
    discovery_s = time.perf_counter() - start
    graph.graph.update(
        # a method's own search chooses edges (see :func:`selected`)
        selected_by=method.granularity if (threshold, top_k) != (None, None) else "edge",
        threshold=threshold,
        top_k=top_k,
        discovery_s=discovery_s,
    )
    if request.backup_rounds:
        graph.graph["backup_rounds"] = request.backup_rounds
    start = time.perf_counter()
    if request.faithfulness:
        ranking = edge_ranking(layout, scores)
        signed = edge_ranking(layout, scores, signed=True)
        measured = engine.narrowed(request.faithfulness_prompts)
        graph.graph.update(faithfulness_report(measured, edges_kept, ranking, signed))
        graph.graph["faithfulness_prompts"] = measured.n_prompts
        faithfulness_s = time.perf_counter() - start
    else:
        graph.graph.update(dict.fromkeys(FAITHFULNESS_KEYS), faithfulness_prompts=None)
        faithfulness_s = None
    graph.graph.update(faithfulness_s=faithfulness_s, runtime_s=discovery_s + (faithfulness_s or 0))
    if scores.features is not None:
        add_feature_level(graph, scores.features.nodes, scores.features.edges, threshold)
    return graph


def selected(
    request: DiscoveryRequest, method: Method, run: MethodRun, layout: Layout, scores: Scores
) -> tuple[float | None, int | None, torch.Tensor, torch.Tensor]:
    """The threshold or top k the circuit is selected by (the request's, else the
    method's), and the nodes and edges kept (see :func:`select`)."""
    threshold, top_k = request.threshold, request.top_k
    if top_k is None and threshold is None and scores.chosen is not None:
        return None, None, *chosen_selection(layout, scores.chosen)
    if top_k is None and threshold is None:
        top_k = method.selection_top_k(run, scores)
        if top_k is None:
            threshold = method.selection_threshold(run)
    return threshold, top_k, *select(layout, scores, method.granularity, threshold, top_k)


def chosen_selection(layout: Layout, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The circuit of the edges a method's search chose [n_senders, n_receivers]: those
    edges and the nodes they join, as :func:`select` gives them."""
    senders, receivers = layout.edge_positions
    return _joined(layout, chosen[senders, receivers])


def _joined(layout: Layout, edges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The nodes that the kept ``edges`` [n_edges, graph order] join (the input and the
    logits always), and those edges."""
    nodes = torch.zeros(len(layout.nodes), dtype=torch.bool)
    nodes[: layout.inputs] = nodes[-1] = True
    nodes[layout.edge_ends[edges].flatten()] = True
    return nodes, edges


def stronger(first: Scores, second: Scores) -> Scores:
    """Each node's and edge's score of the larger magnitude of two rounds of scoring (the
    second with the first's circuit held: a backup scores there); the first's facts and
    features."""

    def larger(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(b.abs() > a.abs(), b, a)

    edges = None
    if first.edges is not None and second.edges is not None:
        edges = larger(first.edges, second.edges)
    return dataclasses.replace(first, nodes=larger(first.nodes, second.nodes), edges=edges)


def select(
    layout: Layout, scores: Scores, granularity: str, threshold: float | None, top_k: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The circuit as ``(nodes kept [n_senders + 1: the senders, then the logits], edges
    kept [n_edges, graph order])``: the components (node methods) or edges (edge methods)
    with |score| >= threshold, or the top k by |score| (ties in graph order); a node
    selection keeps the edges among its nodes, an edge selection the nodes its edges join.
    """
    ends = layout.edge_ends
    if granularity == "node":
        magnitude = scores.nodes[layout.inputs :].double().abs()
    elif granularity == "edge":
        by_edge = edge_scores(layout, scores)
        if by_edge is None:
            raise CircuitxError("an edge-level method gave no edge scores")
        magnitude = by_edge.double().abs()
    else:
        raise CircuitxError(f"no selection rule for {granularity}-level scores")
    if top_k is not None:
        chosen = torch.zeros(len(magnitude), dtype=torch.bool)
        chosen[torch.sort(magnitude, descending=True, stable=True).indices[:top_k]] = True
    else:
        chosen = magnitude >= threshold
    if granularity == "edge":
        return _joined(layout, chosen)
    nodes = torch.zeros(len(layout.nodes), dtype=torch.bool)
    nodes[: layout.inputs] = nodes[-1] = True  # the input and the logits: in every circuit
    nodes[layout.inputs : -1] = chosen
    return nodes, nodes[ends[:, 0]] & nodes[ends[:, 1]]


def write_scores(
    graph: nx.MultiDiGraph,
    layout: Layout,
    scores: Scores,
    nodes_kept: torch.Tensor,
    edges_kept: torch.Tensor,
) -> None:
    """Put the scores and the selection on the graph's nodes and edges (a node-level
    method's edges keep no score)."""
    node_values = scores.nodes.tolist()
    for i, ((name, *_), kept) in enumerate(zip(layout.nodes, nodes_kept.tolist())):
        score = node_values[i] if layout.inputs <= i < len(node_values) else None
        graph.nodes[name].update(score=None if score is None else float(score), in_circuit=kept)
    by_edge = edge_scores(layout, scores)
    values = [None] * len(edges_kept) if by_edge is None else by_edge.tolist()
    for data, value, kept in zip(edges_by_name(graph).values(), values, edges_kept.tolist()):
        data.update(score=None if value is None else float(value), in_circuit=kept)
