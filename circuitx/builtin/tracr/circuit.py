"""The circuit a tracr model computes, read from its weights.

tracr gives every RASP value its own residual subspace. A head or MLP is in the circuit
when its weights are non-zero; sender -> receiver<q|k|v> is an edge when the receiver's
W_Q / W_K / W_V (an MLP's first layer, the unembedding) reads a residual direction the
sender writes (the embeddings write the token, position and ``one`` directions). A node's
role is the RASP value it writes, by its name (tracr's labels carry a process-wide
counter: ``length_5`` in one process is ``length_8`` in another).
"""

from __future__ import annotations

import re
from typing import Any

import networkx as nx
import numpy as np

from circuitx.graph import shape_of
from circuitx.names import HEAD_INPUTS, INPUT, LOGITS, head_node, mlp_node
from circuitx.reference import mark_edge, put_in_circuit, reference_graph

# ACDC's tracr ground truths (acdc/tracr_task/utils.py, get_tracr_*_edges) in circuitx's
# names: its separate token and position embeddings are both ``input`` here, and its
# placeholder edges inside a head or MLP are not edges of this graph.
ACDC_EDGES: dict[str, list[tuple[str, str, str | None]]] = {
    "tracr-reverse": [
        ("a3.h0", LOGITS, None),
        ("m2", "a3.h0", "q"),
        (INPUT, "a3.h0", "k"),
        (INPUT, "a3.h0", "v"),
        ("m1", "m2", None),
        ("m0", "m1", None),
        (INPUT, "m1", None),
        ("a0.h0", "m0", None),
        (INPUT, "m0", None),
        (INPUT, "a0.h0", "v"),
    ],
    "tracr-proportion": [
        ("a1.h0", LOGITS, None),
        (INPUT, "a1.h0", "q"),
        (INPUT, "a1.h0", "k"),
        ("m0", "a1.h0", "v"),
        (INPUT, "m0", None),
    ],
}


def _rows(w: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.abs(w).sum(1)).tolist())


def _columns(w: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.abs(w).sum(0)).tolist())


def _components(
    assembled: Any,
) -> tuple[
    dict[str, dict[str, np.ndarray]], dict[str, set[int]], dict[tuple[str, str | None], set[int]]
]:
    """A compiled model's weights (tracr's own, [d_in, d_out]), what each non-zero head and
    MLP writes (residual dimensions) and what each of its inputs (a head's q, k or v; an
    MLP's ``None``) reads."""
    p = {
        key: {k: np.asarray(v) for k, v in group.items()} for key, group in assembled.params.items()
    }
    config = assembled.model_config
    key_size = config.key_size
    writes: dict[str, set[int]] = {}
    reads: dict[tuple[str, str | None], set[int]] = {}
    for layer in range(config.num_layers):
        attn, mlp = f"transformer/layer_{layer}/attn", f"transformer/layer_{layer}/mlp"
        for head in range(config.num_heads):
            cols = slice(head * key_size, (head + 1) * key_size)
            node = head_node(layer, head)
            written = _columns(p[f"{attn}/linear"]["w"][cols])
            if written and _columns(p[f"{attn}/value"]["w"][:, cols]):
                writes[node] = written
                for head_input, part in zip(HEAD_INPUTS, ("query", "key", "value")):
                    reads[node, head_input] = _rows(p[f"{attn}/{part}"]["w"][:, cols])
        if _columns(p[f"{mlp}/linear_1"]["w"]):
            writes[mlp_node(layer)] = _columns(p[f"{mlp}/linear_2"]["w"])
            reads[mlp_node(layer), None] = _rows(p[f"{mlp}/linear_1"]["w"])
    return p, writes, reads


def _values(assembled: Any, dims: set[int]) -> set[str]:
    """The RASP values (residual labels before ``:``) of residual dimensions ``dims``."""
    return {assembled.residual_labels[d].split(":")[0] for d in dims}


# a RASP value's label: its name, tracr's id, and for a selector width's hidden value a suffix
RASP_LABEL = re.compile(r"(?P<name>.+)_(?P<id>\d+)(?P<hidden>_selector_width_attn_output)?")


def role_names(labels: set[str]) -> dict[str, str]:
    """Each RASP value label its name without tracr's id (``opp_idx_4`` -> ``opp_idx``), the
    same whatever was compiled before; values of one name are told apart by the order of
    their ids (``map_1``, ``map_2``)."""
    ids: dict[str, list[int]] = {}
    for label in labels:
        if match := RASP_LABEL.fullmatch(label):
            ids.setdefault(match["name"], []).append(int(match["id"]))
    names = {}
    for label in labels:
        match = RASP_LABEL.fullmatch(label)
        if match is None:  # tokens, indices, one
            names[label] = label
            continue
        same = sorted(set(ids[match["name"]]))
        rank = f"_{same.index(int(match['id'])) + 1}" if len(same) > 1 else ""
        names[label] = f"{match['name']}{rank}{match['hidden'] or ''}"
    return names


def written_values(assembled: Any) -> dict[str, set[str]]:
    """The RASP values each head and MLP of a compiled model writes."""
    _, writes, _ = _components(assembled)
    return {node: _values(assembled, dims) for node, dims in writes.items()}


def weight_circuit(assembled: Any, output_dims: list[int], name: str) -> nx.MultiDiGraph:
    """The circuit of tracr's compiled model (its ``AssembledTransformerModel``)."""
    p, writes, reads = _components(assembled)
    writes[INPUT] = _columns(p["token_embed"]["embeddings"]) | _columns(
        p["pos_embed"]["embeddings"]
    )
    reads[LOGITS, None] = set(output_dims)
    config = assembled.model_config
    graph = reference_graph(f"{name} weights", config.num_layers, config.num_heads, True)
    graph.graph.update(task="tracr", model=name)
    roles = role_names({label.split(":")[0] for label in assembled.residual_labels})
    for node, dims in writes.items():
        if node != INPUT:
            put_in_circuit(
                graph, [node], ",".join(sorted(roles[v] for v in _values(assembled, dims)))
            )
    for (receiver, head_input), read in reads.items():
        for sender, written in writes.items():
            if read & written:
                mark_edge(graph, sender, receiver, [head_input] if head_input else HEAD_INPUTS)
    return graph


def acdc_circuit(name: str, weights: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """ACDC's ground truth for built-in ``name`` (a key of ``ACDC_EDGES``), in the shape of
    its circuit read from the ``weights``, whose nodes' roles (the values they write) it
    takes: a list names no roles of its own."""
    n_layers, n_heads, _ = shape_of(weights)
    graph = reference_graph(f"{name} (ACDC's edge list)", n_layers, n_heads, True)
    graph.graph.update(task="tracr", model=name)
    for sender, receiver, head_input in ACDC_EDGES[name]:
        for node in (sender, receiver):
            if node not in (INPUT, LOGITS):
                put_in_circuit(graph, [node], weights.nodes[node].get("role"))
        mark_edge(graph, sender, receiver, [head_input] if head_input else HEAD_INPUTS)
    return graph
