"""Node and edge names of the circuit universe: ``input``, ``a{L}.h{H}`` (attention head),
``m{L}`` (MLP), ``m{L}.f{i}`` / ``m{L}.rest`` (an MLP's transcoder features and the rest of
it), ``logits``; edges ``sender->receiver``, with ``<q>``, ``<k>`` or ``<v>`` when the
receiver is a head (MIB's names). In a circuit over token positions a node acts at one
position: ``a9.h9@END``, ``input@S1``, ``m3@other`` (the logits read the task's readout
positions and stay ``logits``)."""

from __future__ import annotations

import functools
import re

from circuitx.errors import CircuitxError

INPUT = "input"
LOGITS = "logits"
HEAD_INPUTS = ("q", "k", "v")
_NODE_RE = re.compile(r"^(input|logits|a(\d+)\.h(\d+)|m(\d+)(\.f\d+|\.rest)?)$")
_POSITION_RE = re.compile(r"[A-Za-z0-9_+]+")  # END, S1+1, A_def, other, 7
_EDGE_RE = re.compile(r"^(?P<sender>[^<>]+?)->(?P<receiver>[^<>]+?)(?:<(?P<input>[qkv])>)?$")


def head_node(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_node(layer: int) -> str:
    return f"m{layer}"


def at_position(node: str, position: str) -> str:
    """The node ``node`` acting at token position ``position``: ``a9.h9@END``."""
    return f"{node}@{position}"


def split_position(name: str) -> tuple[str, str | None]:
    """``(component, position)`` of a node name: ``("a9.h9", "END")`` for ``a9.h9@END``,
    ``(name, None)`` for a node of a circuit without positions."""
    component, at, position = name.partition("@")
    if not at:
        return name, None
    if not is_position_name(position) or component in (LOGITS,):
        raise CircuitxError(f"not a circuit node name: {name!r}")
    return component, position


def is_position_name(position: str) -> bool:
    """Whether ``position`` can name a token position in a node name (letters, digits,
    _ and +)."""
    return _POSITION_RE.fullmatch(position) is not None


@functools.lru_cache(maxsize=1 << 16)  # a file's check parses each name many times
def parse_node(name: str) -> tuple[str, int | None, int | None]:
    """``(kind, layer, head)`` of a node name (at a position or not); kind is input, head,
    mlp, feature (an MLP's transcoder feature ``m{L}.f{i}`` or the rest of it,
    ``m{L}.rest``) or logits."""
    name = split_position(name)[0]
    match = _NODE_RE.match(name)
    if not match:
        raise CircuitxError(f"not a circuit node name: {name!r}")
    if name in (INPUT, LOGITS):
        return name, None, None
    if match.group(2) is not None:
        return "head", int(match.group(2)), int(match.group(3))
    return "feature" if match.group(5) else "mlp", int(match.group(4)), None


def edge_name(sender: str, receiver: str, head_input: str | None = None) -> str:
    """MIB-style edge name, e.g. ``a0.h1->a3.h2<q>`` or ``m2->logits``."""
    return f"{sender}->{receiver}<{head_input}>" if head_input else f"{sender}->{receiver}"


def parse_edge_name(name: str) -> tuple[str, str, str | None]:
    """``(sender, receiver, head_input)`` of an edge name."""
    match = _EDGE_RE.match(name)
    if not match:
        raise CircuitxError(f"not a circuit edge name: {name!r}")
    sender, receiver, head_input = match.group("sender", "receiver", "input")
    parse_node(sender), parse_node(receiver)
    return sender, receiver, head_input


# auto-circuit's node names (auto_circuit.utils.graph_utils, its factorised graph): a head
# "A9.9", read at its q, k or v as "A9.9.Q"; "MLP 9"; "Resid Start" and "Resid End"
_AUTO_CIRCUIT_NODE = re.compile(
    r"^(?:A(?P<layer>\d+)\.(?P<head>\d+)(?:\.(?P<input>[QKV]))?|MLP (?P<mlp>\d+)"
    r"|(?P<start>Resid Start)|(?P<end>Resid End))$"
)
AUTO_CIRCUIT_NODES = "A9.9, A9.9.Q, MLP 9, Resid Start, Resid End"


def auto_circuit_edge_name(sender: str, receiver: str, head_input: str | None = None) -> str:
    """The edge as auto-circuit names it (its ``Edge.name``), e.g. ``A0.1->A3.2.Q``,
    ``Resid Start->MLP 0`` or ``MLP 2->Resid End``."""

    def node(name: str, read_at: str | None) -> str:
        kind, layer, head = parse_node(name)
        if kind == "head":
            return f"A{layer}.{head}" + (f".{read_at.upper()}" if read_at else "")
        if kind == "mlp":
            return f"MLP {layer}"
        if kind in (INPUT, LOGITS):
            return "Resid Start" if kind == INPUT else "Resid End"
        raise CircuitxError(f"auto-circuit's graphs have no node like {name!r}")

    return f"{node(sender, None)}->{node(receiver, head_input)}"


def parse_auto_circuit_edge_name(text: str) -> tuple[str, str, str | None]:
    """``(sender, receiver, head_input)`` of an edge named as auto-circuit names it."""
    parts = text.split("->")
    ends = []
    for part in parts if len(parts) == 2 else ():
        match = _AUTO_CIRCUIT_NODE.match(part.strip())
        if match is None:
            raise CircuitxError(
                f"edge {text!r}: {part.strip()!r} is not an auto-circuit node ({AUTO_CIRCUIT_NODES})"
            )
        if match["layer"] is not None:
            node = head_node(int(match["layer"]), int(match["head"]))
        elif match["mlp"] is not None:
            node = mlp_node(int(match["mlp"]))
        else:
            node = INPUT if match["start"] else LOGITS
        ends.append((node, (match["input"] or "").lower() or None))
    if len(ends) != 2:
        raise CircuitxError(f"{text!r} is not an edge name")
    (sender, _), (receiver, head_input) = ends
    if head_input is None and receiver.startswith("a"):
        raise CircuitxError(
            f"edge {text!r} goes into a head without naming its input: circuitx reads a "
            f"head's q, k and v apart, as auto-circuit names them ({parts[1].strip()}.Q, .K "
            "or .V) in a model made with separate_qkv=True"
        )
    return sender, receiver, head_input
