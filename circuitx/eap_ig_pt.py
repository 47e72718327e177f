"""EAP-IG's graph as its ``Graph.to_pt`` saves it (MIB takes a circuit as .pt or .json):
the graph its JSON holds, as tensors over EAP-IG's source and destination nodes.

    {"cfg": {...}, "src_nodes": [...], "dst_nodes": [...], "edges_scores": (src, dst),
     "edges_in_graph": (src, dst), "nodes_in_graph": (src,), "nodes_scores": (src,)?}

It is read into, and written from, the JSON form (``{"cfg", "nodes", "edges"}``), so both
files go through the same checks. circuitx adds what its JSON adds, under keys EAP-IG's
``from_pt`` does not read: ``circuitx_metadata`` and ``circuitx_nodes_scores`` (the
node scores its JSON keeps in ``circuitx_score``).
"""

from __future__ import annotations

import math
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from circuitx.errors import CircuitxError, first_line, listed
from circuitx.graph import edges_by_name, full_graph, shape_text
from circuitx.names import HEAD_INPUTS, INPUT, LOGITS, parse_edge_name

PT_KEYS = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph")
METADATA = "circuitx_metadata"
# (JSON node key, .pt tensor): EAP-IG's node scores, and circuitx's where EAP-IG has none
NODE_SCORES = (("score", "nodes_scores"), ("circuitx_score", "circuitx_nodes_scores"))


def source_nodes(n_layers: int, n_heads: int) -> list[str]:
    """EAP-IG's forward (source) order: the input, then each layer's heads and its MLP."""
    names = [INPUT]
    for layer in range(n_layers):
        names += [f"a{layer}.h{head}" for head in range(n_heads)] + [f"m{layer}"]
    return names


def destination_nodes(n_layers: int, n_heads: int) -> list[str]:
    """EAP-IG's backward (destination) order: each layer's heads' q, then k, then v
    inputs, and its MLP; the logits last."""
    names = []
    for layer in range(n_layers):
        for letter in HEAD_INPUTS:
            names += [f"a{layer}.h{head}<{letter}>" for head in range(n_heads)]
        names.append(f"m{layer}")
    return [*names, LOGITS]


def _destination(receiver: str, head_input: str | None) -> str:
    return receiver if head_input is None else f"{receiver}<{head_input}>"


def eap_ig_shape(cfg: Any) -> tuple[int, int, bool]:
    """The ``(n_layers, n_heads, parallel_attn_mlp)`` of an EAP-IG graph's cfg: whole
    numbers of at least 1 (EAP-IG's ``Graph.from_model`` does arithmetic and ``range``
    with them, so "4" or 5.0 fail there)."""
    if not isinstance(cfg, dict) or "n_layers" not in cfg or "n_heads" not in cfg:
        raise CircuitxError("EAP-IG graph cfg lacks n_layers and n_heads")
    for key in ("n_layers", "n_heads"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CircuitxError(
                f"EAP-IG graph cfg's {key} must be a whole number of at least 1, not {value!r}"
            )
    return cfg["n_layers"], cfg["n_heads"], bool(cfg.get("parallel_attn_mlp"))


def _check_order(key: str, names: list[Any], order: list[str], shape: str) -> None:
    """Fail in one line unless ``names`` (the file's ``key`` list) is EAP-IG's ``order``:
    its ``from_pt`` lays the tensors out in that order whatever the lists say, so a file
    listing its nodes otherwise means another graph to EAP-IG (and MIB) than its names."""
    if names == order:
        return
    if len(names) != len(order):
        why = f"it has {len(names)} names, where EAP-IG has {len(order)}"
    else:
        at = next(i for i, (name, wanted) in enumerate(zip(names, order)) if name != wanted)
        why = f"entry {at} is {names[at]!r}, where EAP-IG has {order[at]!r}"
    raise CircuitxError(
        f"EAP-IG graph's {key} are not EAP-IG's order for a {shape} model ({why}): its "
        "from_pt reads the tensors in its own order, whatever the names say"
    )


def load_pt(path: str | Path) -> dict[str, Any]:
    """The JSON form of the graph EAP-IG's ``to_pt`` saved at ``path`` (loaded as plain
    tensors and values: nothing in the file is run)."""
    if not zipfile.is_zipfile(path):  # else torch reads it as a pickle: "invalid load key"
        with open(path, "rb") as handle:
            cut = handle.read(4) == b"PK\x03\x04"  # a zip's start without its directory
        raise CircuitxError(
            "not a graph EAP-IG's to_pt saved: "
            + (
                "it is a zip archive cut short (its end is missing: a copy or download cut off?)"
                if cut
                else "it is no zip archive, as torch.save writes"
            )
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message offers to run the file's code
        raise CircuitxError(
            "not a graph EAP-IG's to_pt saved: it holds objects other than tensors and plain "
            "values, which circuitx does not unpickle (to_pt saves none)"
        ) from None
    except Exception as error:  # torch raises many types for what it cannot read
        raise CircuitxError(f"not a graph EAP-IG's to_pt saved: {first_line(error)}") from None
    if not isinstance(data, dict):
        raise CircuitxError(f"not a graph EAP-IG's to_pt saved: it holds a {type(data).__name__}")
    if any("neuron" in str(key) for key in data):
        raise CircuitxError(
            "neuron-level EAP-IG graphs are not supported: circuitx graphs have heads and MLPs"
        )
    if "edges" in data and "edges_scores" not in data:  # to_pt's keys before February 2025
        raise CircuitxError(
            "an EAP-IG graph saved by to_pt before February 2025 (its scores under 'edges'), "
            "whose tensor layout circuitx does not read: load it with that EAP-IG and save "
            "it with to_json, which circuitx reads"
        )
    missing = [key for key in PT_KEYS if key not in data]
    if missing:
        raise CircuitxError(
            f"not a graph EAP-IG's to_pt saved: it lacks {', '.join(missing)} (it has "
            f"{listed([str(key) for key in data], 4) or 'nothing'})"
        )
    return from_pt_dict(data)


def from_pt_dict(data: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of a ``to_pt`` dict (see the module's docstring)."""
    n_layers, n_heads, parallel = eap_ig_shape(data["cfg"])
    sources, destinations = list(data["src_nodes"]), list(data["dst_nodes"])
    shape = shape_text((n_layers, n_heads, True))
    _check_order("src_nodes", sources, source_nodes(n_layers, n_heads), shape)
    _check_order("dst_nodes", destinations, destination_nodes(n_layers, n_heads), shape)
    scores, member, nodes_in = (
        torch.as_tensor(data[key]) for key in ("edges_scores", "edges_in_graph", "nodes_in_graph")
    )
    grid = (len(sources), len(destinations))
    if tuple(scores.shape) != grid or tuple(member.shape) != grid or len(nodes_in) != grid[0]:
        raise CircuitxError(
            f"EAP-IG graph tensors do not fit its {grid[0]} source and {grid[1]} destination "
            f"nodes: edges_scores {tuple(scores.shape)}, edges_in_graph {tuple(member.shape)}, "
            f"nodes_in_graph {tuple(nodes_in.shape)}"
        )
    row, column = ({name: i for i, name in enumerate(names)} for names in (sources, destinations))
    nodes: dict[str, Any] = {
        name: {"in_graph": bool(nodes_in[i])} for i, name in enumerate(sources)
    }
    for key, tensor in NODE_SCORES:
        if data.get(tensor) is None:
            continue
        values = torch.as_tensor(data[tensor]).tolist()
        if len(values) != len(sources):
            raise CircuitxError(
                f"EAP-IG graph {tensor} has {len(values)} scores, not {len(sources)}"
            )
        for name, score in zip(sources, values):
            if not math.isnan(score):  # NaN: EAP-IG's "not scored"
                nodes[name][key] = score
    nodes[LOGITS] = {"in_graph": True}  # EAP-IG's logits are always in the graph
    edges = {}
    for name in edges_by_name(full_graph(n_layers, n_heads, True, parallel)):
        sender, receiver, head_input = parse_edge_name(name)
        i, j = row[sender], column[_destination(receiver, head_input)]
        edges[name] = {"score": float(scores[i, j]), "in_graph": bool(member[i, j])}
    form = {"cfg": dict(data["cfg"]), "nodes": nodes, "edges": edges}
    if isinstance(data.get(METADATA), dict):
        form[METADATA] = data[METADATA]
    return form


def to_pt_dict(form: dict[str, Any]) -> dict[str, Any]:
    """What EAP-IG's ``to_pt`` saves for the graph whose JSON form is ``form``: node
    scores go to ``nodes_scores`` where the JSON puts them where EAP-IG reads them
    (``score``), else to ``circuitx_nodes_scores``; an unscored node's is NaN, as
    EAP-IG's."""
    n_layers, n_heads, _ = eap_ig_shape(form["cfg"])
    sources, destinations = source_nodes(n_layers, n_heads), destination_nodes(n_layers, n_heads)
    row, column = ({name: i for i, name in enumerate(names)} for names in (sources, destinations))
    # float64, which EAP-IG's from_pt casts to its float32: the scores read back exactly
    scores = torch.zeros(len(sources), len(destinations), dtype=torch.float64)
    member = torch.zeros(len(sources), len(destinations), dtype=torch.bool)
    for name, edge in form["edges"].items():
        sender, receiver, head_input = parse_edge_name(name)
        at = row[sender], column[_destination(receiver, head_input)]
        scores[at], member[at] = edge["score"], edge["in_graph"]
    nodes = form["nodes"]
    saved = {
        "cfg": dict(form["cfg"]),
        "src_nodes": sources,
        "dst_nodes": destinations,
        "edges_scores": scores,
        "edges_in_graph": member,
        "nodes_in_graph": torch.tensor([bool(nodes[name]["in_graph"]) for name in sources]),
    }
    for key, tensor in NODE_SCORES:
        if any(key in nodes[name] for name in sources):
            values = [float(nodes[name].get(key, math.nan)) for name in sources]
            saved[tensor] = torch.tensor(values, dtype=torch.float64)
    if METADATA in form:
        saved[METADATA] = form[METADATA]
    return saved
