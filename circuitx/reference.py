"""Reference circuits: expanding published class-level circuits into the shared graph, and
resolving the ``--reference`` option (auto, none, TASK[:VARIANT] or a graph file).

Class-level circuits follow ACDC's counting: ``INPUT`` is the embeddings and every MLP
output before the receiver, ``OUTPUT`` is the logits and every MLP input after the sender,
and every MLP stays in the circuit with the edges among MLPs, input and logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import networkx as nx

from circuitx.errors import CircuitxError
from circuitx.graph import INPUT, LOGITS, full_graph, head_node, read_graph, shape_of

INPUT_CLASS = "INPUT"
OUTPUT_CLASS = "OUTPUT"

ClassEdge = tuple[str, str, str]  # (sender class, receiver class, head inputs such as "qkv")


def class_circuit(
    name: str,
    n_layers: int,
    n_heads: int,
    has_mlp: bool,
    classes: dict[str, Sequence[tuple[int, int]]],
    class_edges: Sequence[ClassEdge],
) -> nx.MultiDiGraph:
    """A reference graph from head classes and class-to-class edges (see module docstring)."""
    need_layers = 1 + max(layer for heads in classes.values() for layer, _ in heads)
    need_heads = 1 + max(head for heads in classes.values() for _, head in heads)
    if n_layers < need_layers or n_heads < need_heads:
        raise CircuitxError(
            f"the {name} reference circuit needs at least {need_layers} layers x {need_heads} "
            f"heads; this model has {n_layers} x {n_heads}"
        )
    graph = full_graph(n_layers, n_heads, has_mlp, reference=name)
    for _, data in graph.nodes(data=True):
        data["role"] = None
    members: dict[str, list[str]] = {}
    for cls, heads in classes.items():
        members[cls] = [head_node(layer, head) for layer, head in heads]
        for node in members[cls]:
            graph.nodes[node].update(role=cls, in_circuit=True)
    mlps = [n for n, kind in graph.nodes(data="kind") if kind == "mlp"]
    for node in [INPUT, LOGITS, *mlps]:
        graph.nodes[node].update(in_circuit=True, role=graph.nodes[node]["kind"])

    def group(cls: str, other_layer: int, as_sender: bool) -> list[str]:
        if cls == INPUT_CLASS:
            return [INPUT] + [m for m in mlps if graph.nodes[m]["layer"] < other_layer]
        if cls == OUTPUT_CLASS:
            return [LOGITS] + [m for m in mlps if graph.nodes[m]["layer"] >= other_layer]
        return members[cls]

    def mark(sender: str, receiver: str, head_input: str | None) -> None:
        key = f"{sender}->{receiver}" + (f"<{head_input}>" if head_input else "")
        if graph.has_edge(sender, receiver, key):
            graph.edges[sender, receiver, key]["in_circuit"] = True

    for sender_cls, receiver_cls, inputs in class_edges:
        if receiver_cls == OUTPUT_CLASS:
            for sender in members[sender_cls]:
                for receiver in group(OUTPUT_CLASS, graph.nodes[sender]["layer"], False):
                    mark(sender, receiver, None)
            continue
        for receiver in members[receiver_cls]:
            for sender in group(sender_cls, graph.nodes[receiver]["layer"], True):
                for head_input in inputs:
                    mark(sender, receiver, head_input)
    for sender in [INPUT, *mlps]:
        for receiver in [*mlps, LOGITS]:
            mark(sender, receiver, None)
    return graph


def resolve_reference(
    spec: str, task_name: str, model_id: str | None, n_layers: int, n_heads: int, has_mlp: bool
) -> tuple[nx.MultiDiGraph | None, str | None]:
    """The reference graph ``spec`` names, or ``(None, why not)`` for auto or none."""
    from circuitx.tasks import TASKS, get_task

    if spec == "none":
        return None, "no reference requested"
    if spec == "auto":
        task = get_task(task_name)
        if model_id != task.paper_model:
            return None, (
                f"no reference: the published {task_name} circuit is for {task.paper_model}, "
                f"not this model; pass --reference {task_name} to force it"
            )
        return task.reference("", n_layers, n_heads, has_mlp), None
    base, _, variant = spec.partition(":")
    if base in TASKS:
        task = TASKS[base]
        if variant not in task.reference_variants:
            choices = ", ".join(f"{base}:{v}" if v else base for v in task.reference_variants)
            raise CircuitxError(f"unknown reference {spec!r}; choose from {choices}")
        return task.reference(variant, n_layers, n_heads, has_mlp), None
    if Path(spec).suffix.lower() in (".graphml", ".xml", ".json") or Path(spec).exists():
        graph = read_graph(spec)
        if shape_of(graph) != (n_layers, n_heads, has_mlp):
            raise CircuitxError(f"reference {spec} is for another model shape")
        return graph, None
    raise CircuitxError(
        f"unknown reference {spec!r}: use auto, none, a task name ({', '.join(TASKS)}) or a graph file"
    )
