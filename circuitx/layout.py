"""The node and edge universe of one model shape, and where each node and edge sits in the
patching masks. The circuit graph (:func:`circuitx.graph.full_graph`) is built from it.

Senders (what writes to the residual stream): ``input``, then per layer its heads and its
MLP. Receivers (what reads it): per layer its heads' q inputs, k inputs, v inputs and its
MLP input, then ``logits``. A mask over edges is [n_senders, n_receivers]. In a block whose
attention and MLP run in parallel (GPT-NeoX, Pythia, GPT-J) the MLP reads what the heads
read, so no edge runs from a head to the MLP of its own layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from circuitx.errors import CircuitxError
from circuitx.names import (
    HEAD_INPUTS,
    INPUT,
    LOGITS,
    at_position,
    edge_name,
    head_node,
    mlp_node,
    parse_edge_name,
    parse_node,
    split_position,
)


@dataclass(frozen=True)
class SenderChunk:
    """Senders that one hook point writes: the embeddings, a layer's heads, or an MLP."""

    first: int  # index of the first sender
    count: int
    layer: int  # the block it belongs to (0 for the embeddings)
    kind: str  # "input", "heads" (a layer's heads: what they write is z @ W_O) or "mlp"

    @property
    def heads(self) -> bool:
        return self.kind == "heads"


@dataclass(frozen=True)
class Layout:
    """Where each node sits in the masks' sender and receiver axes.

    Senders: ``input``, then per layer its heads and its MLP. Receivers: per layer its
    heads' q inputs, k inputs, v inputs and its MLP input, then ``logits``. The senders a
    receiver can read form a prefix of the sender axis.
    """

    n_layers: int
    n_heads: int
    has_mlp: bool
    parallel: bool = False  # attention and MLP read the same residual stream

    @property
    def per_layer(self) -> int:
        return self.n_heads + int(self.has_mlp)

    @property
    def inputs(self) -> int:
        """How many senders are the embeddings (the first ones): 1, or one per position
        group."""
        return 1

    @property
    def n_groups(self) -> int:
        """Position groups each sender and receiver is repeated over (1: none)."""
        return 1

    @property
    def base(self) -> Layout:
        """The model's own universe (over positions, the one each group repeats)."""
        return self

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * self.per_layer

    @property
    def receivers_per_layer(self) -> int:
        return 3 * self.n_heads + int(self.has_mlp)

    @property
    def n_receivers(self) -> int:
        return self.n_layers * self.receivers_per_layer + 1

    def head_sender(self, layer: int, head: int = 0) -> int:
        return 1 + layer * self.per_layer + head

    def mlp_sender(self, layer: int) -> int:
        return self.head_sender(layer, self.n_heads)

    def head_receiver(self, layer: int, head_input: str, head: int = 0) -> int:
        return (
            layer * self.receivers_per_layer + HEAD_INPUTS.index(head_input) * self.n_heads + head
        )

    def mlp_receiver(self, layer: int) -> int:
        return self.head_receiver(layer, "q", 3 * self.n_heads)

    @property
    def logits_receiver(self) -> int:
        return self.n_receivers - 1

    def sender_layer(self, sender: int) -> int:
        return 0 if sender == 0 else (sender - 1) // self.per_layer

    def receiver_layer(self, receiver: int) -> int:
        return receiver // self.receivers_per_layer  # logits: n_layers

    @cached_property
    def chunks(self) -> list[SenderChunk]:
        chunks = [SenderChunk(0, 1, 0, "input")]
        for layer in range(self.n_layers):
            chunks.append(SenderChunk(self.head_sender(layer), self.n_heads, layer, "heads"))
            if self.has_mlp:
                chunks.append(SenderChunk(self.mlp_sender(layer), 1, layer, "mlp"))
        return chunks

    def chunks_from(self, layer: int) -> list[SenderChunk]:
        """The heads and MLPs of ``layer`` and later."""
        return [c for c in self.chunks if c.first >= self.head_sender(layer) and c.first > 0]

    @cached_property
    def valid(self) -> torch.Tensor:
        """[n_senders, n_receivers]: True where the sender is upstream of the receiver."""
        readable = torch.tensor([self.readable(r) for r in range(self.n_receivers)])
        return torch.arange(self.n_senders).unsqueeze(1) < readable.unsqueeze(0)

    @cached_property
    def senders(self) -> list[str]:
        names = [INPUT]
        for layer in range(self.n_layers):
            names += [head_node(layer, head) for head in range(self.n_heads)]
            names += [mlp_node(layer)] if self.has_mlp else []
        return names

    @cached_property
    def receivers(self) -> list[tuple[str, str | None]]:
        """``(node, head input)`` per receiver index."""
        names: list[tuple[str, str | None]] = []
        for layer in range(self.n_layers):
            for head_input in HEAD_INPUTS:
                names += [(head_node(layer, head), head_input) for head in range(self.n_heads)]
            names += [(mlp_node(layer), None)] if self.has_mlp else []
        return names + [(LOGITS, None)]

    def readable(self, receiver: int) -> int:
        """How many senders (a prefix of the sender axis) ``receiver`` reads."""
        if receiver == self.logits_receiver:
            return self.n_senders
        layer, offset = divmod(receiver, self.receivers_per_layer)
        end = self.head_sender(layer)
        reads_heads = offset == 3 * self.n_heads and not self.parallel  # the MLP
        return end + self.n_heads if reads_heads else end

    @cached_property
    def _edge_rows(self) -> list[tuple[int, int, str, str, str | None]]:
        """``(sender index, receiver index, sender, receiver node, head input)`` of every
        edge in graph order: sender-major, receivers in node order (a head's q, k, v
        together)."""
        by_node: dict[str, list[int]] = {}
        for r, (node, _) in enumerate(self.receivers):  # a head's q, k, v in that order
            by_node.setdefault(node, []).append(r)
        reads = [self.readable(r) for r in range(self.n_receivers)]
        rows = []
        for s, sender in enumerate(self.senders):
            for node, *_ in self.nodes:
                for r in by_node.get(node, []):
                    if s < reads[r]:
                        rows.append((s, r, sender, node, self.receivers[r][1]))
        return rows

    @cached_property
    def edges(self) -> list[tuple[str, str, str | None]]:
        """``(sender, receiver, head input)`` of every edge, in graph order."""
        return [(sender, node, head_input) for _, _, sender, node, head_input in self._edge_rows]

    @cached_property
    def edge_names(self) -> list[str]:
        """Every edge's name, in graph order."""
        return [edge_name(*edge) for edge in self.edges]

    @cached_property
    def edge_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sender and receiver index of every edge, in graph order."""
        rows = self._edge_rows
        return torch.tensor([row[0] for row in rows]), torch.tensor([row[1] for row in rows])

    @cached_property
    def edge_ends(self) -> torch.Tensor:
        """[n_edges, 2]: the index in :attr:`nodes` of each edge's sender and receiver."""
        senders, receivers = self.edge_positions
        owners = self.receiver_owner[receivers]
        return torch.stack([senders, owners.masked_fill(owners < 0, self.n_senders)], 1)

    @cached_property
    def _index_of_edge(self) -> dict[str, tuple[int, int]]:
        return {name: (row[0], row[1]) for name, row in zip(self.edge_names, self._edge_rows)}

    def sender(self, node: str) -> int:
        try:
            return self._index_of_sender[node]
        except KeyError:
            raise CircuitxError(f"no sender {node!r} in this model") from None

    @cached_property
    def _index_of_sender(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.senders)}

    def receiver(self, node: str, head_input: str | None = None) -> int:
        """The index of ``node``'s input ``head_input`` (a head's q, k or v; None for an
        MLP's)."""
        try:
            return self._index_of_receiver[(node, head_input)]
        except KeyError:
            raise CircuitxError(f"no receiver {node!r} {head_input or ''} in this model") from None

    @cached_property
    def _index_of_receiver(self) -> dict[tuple[str, str | None], int]:
        return {key: r for r, key in enumerate(self.receivers) if key[0] != LOGITS}

    def edge(self, name: str) -> tuple[int, int]:
        """``(sender, receiver)`` index of an edge name."""
        if name not in self._index_of_edge:
            parse_edge_name(name)  # a malformed name gets the parser's message
            raise CircuitxError(f"no edge {name!r} in this model")
        return self._index_of_edge[name]

    @cached_property
    def receiver_owner(self) -> torch.Tensor:
        """[n_receivers]: the sender index of each receiver's node (-1 for the logits)."""
        return torch.tensor(
            [-1 if node == LOGITS else self.sender(node) for node, _ in self.receivers]
        )

    def prune(self, mask: torch.Tensor) -> torch.Tensor:
        """An edge mask [n_senders, n_receivers] without dangling edges, as MIB prunes
        circuits: repeatedly drop the edges out of a node no kept edge enters (the input
        excepted) and the edges into a node no kept edge leaves (the logits excepted)."""
        mask = mask * self.valid
        owner = self.receiver_owner
        into_node = owner >= 0
        while True:
            outgoing = mask.sum(1)
            incoming = torch.zeros(self.n_senders).index_add(
                0, owner[into_node], mask[:, into_node].sum(0)
            )
            no_input = incoming == 0
            no_input[: self.inputs] = False
            pruned = mask.clone()
            pruned[no_input] = 0.0
            dead_receivers = torch.zeros(self.n_receivers, dtype=torch.bool)
            dead_receivers[into_node] = outgoing[owner[into_node]] == 0
            pruned[:, dead_receivers] = 0.0
            if torch.equal(pruned, mask):
                return mask
            mask = pruned

    def edge_mask(self, kept: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """[n_senders, n_receivers] mask: 1 on the ``kept`` edges (names, or indices or a
        boolean vector over :attr:`edges`), 0 elsewhere."""
        mask = torch.zeros(self.n_senders, self.n_receivers)
        if isinstance(kept, torch.Tensor):
            senders, receivers = self.edge_positions
            mask[senders[kept], receivers[kept]] = 1.0
        elif kept:
            senders, receivers = zip(*(self.edge(name) for name in kept))
            mask[list(senders), list(receivers)] = 1.0
        return mask

    @cached_property
    def nodes(self) -> list[tuple[str, str, int, int | None]]:
        """``(name, kind, layer, head)`` of every node in graph order: the senders, then the
        logits (the input's layer is -1, the logits' ``n_layers``)."""
        rows = []
        for name in [*self.senders, LOGITS]:
            kind, layer, head = parse_node(name)
            if kind == "input":
                layer = -1
            elif kind == "logits":
                layer = self.n_layers
            rows.append((name, kind, layer, head))
        return rows


OTHER = "other"  # the position group of every token no named group holds


@dataclass(frozen=True)
class PositionLayout(Layout):
    """The universe of a circuit over token positions: every sender and receiver of the
    model's :class:`Layout` once per position group (a task's named positions and
    ``other``, or every position), named ``a9.h9@END``. Index ``i * G + g`` is base index
    ``i`` at group ``g`` (G groups), so a base prefix of senders is a prefix here too.

    A residual edge (into a head's q input, an MLP, the logits) stays at its position; an
    edge into a head's k or v input runs from the sender at the key's position to the
    head at the query's: the keys and values a query group reads are its own. With
    ``ordered`` (every position its own group, a causal model) a key comes no later than
    its query; a pair in ``later_keys`` (key group, query group: the key comes after the
    query in every prompt, in a causal model) has no k or v edge. The logits read the
    ``readout`` groups alone."""

    positions: tuple[str, ...] = ()
    readout: tuple[str, ...] = ()
    ordered: bool = False
    later_keys: tuple[tuple[str, str], ...] = ()
    # (name, group): a named position that every prompt has at one group (--positions all)
    aliases: tuple[tuple[str, str], ...] = ()

    def group_of(self, name: str) -> str | None:
        """The group that holds a named position's token: itself, or where
        :attr:`aliases` puts it; a position the layout does not name is in :data:`OTHER`;
        None where there is no such group (``--positions all`` and a position not at one
        index in every prompt)."""
        group = dict(self.aliases).get(name, name)
        if group in self.positions:
            return group
        return OTHER if OTHER in self.positions else None

    @cached_property
    def base(self) -> Layout:
        return Layout(self.n_layers, self.n_heads, self.has_mlp, self.parallel)

    @property
    def n_groups(self) -> int:
        return len(self.positions)

    @property
    def inputs(self) -> int:
        return self.n_groups

    @property
    def per_layer(self) -> int:
        return self.base.per_layer * self.n_groups

    @property
    def n_senders(self) -> int:
        return self.base.n_senders * self.n_groups

    @property
    def receivers_per_layer(self) -> int:
        return self.base.receivers_per_layer * self.n_groups

    @property
    def n_receivers(self) -> int:
        return self.base.n_receivers * self.n_groups

    def head_sender(self, layer: int, head: int = 0) -> int:
        return self.base.head_sender(layer, head) * self.n_groups

    def head_receiver(self, layer: int, head_input: str, head: int = 0) -> int:
        return self.base.head_receiver(layer, head_input, head) * self.n_groups

    @property
    def logits_receiver(self) -> int:
        """The first of the logits' receivers (one per group)."""
        return self.base.logits_receiver * self.n_groups

    def sender_layer(self, sender: int) -> int:
        return self.base.sender_layer(sender // self.n_groups)

    def receiver_layer(self, receiver: int) -> int:
        return self.base.receiver_layer(receiver // self.n_groups)

    def readable(self, receiver: int) -> int:
        return self.base.readable(receiver // self.n_groups) * self.n_groups

    @cached_property
    def chunks(self) -> list[SenderChunk]:
        g = self.n_groups
        return [SenderChunk(c.first * g, c.count * g, c.layer, c.kind) for c in self.base.chunks]

    def across(self, receiver: int) -> bool:
        """Whether base receiver ``receiver`` reads other positions (a head's k or v)."""
        return self.base.receivers[receiver][1] in ("k", "v")

    @cached_property
    def valid(self) -> torch.Tensor:
        g = self.n_groups
        base = self.base.valid.repeat_interleave(g, 0).repeat_interleave(g, 1)
        same = torch.eye(g, dtype=torch.bool)
        key_first = torch.ones(g, g).triu().bool() if self.ordered else torch.ones(g, g).bool()
        for key, query in self.later_keys:
            key_first[self.positions.index(key), self.positions.index(query)] = False
        across = torch.tensor([self.across(r) for r in range(self.base.n_receivers)])
        pairs = torch.where(across.view(-1, 1, 1), key_first, same)  # [R, g_s, g_r]
        read = torch.tensor([p in self.readout for p in self.positions])
        pairs[self.base.logits_receiver] &= read.view(1, g)
        allowed = pairs.permute(1, 0, 2).reshape(1, g, -1).expand(self.base.n_senders, g, -1)
        return base & allowed.reshape(self.n_senders, self.n_receivers)

    @cached_property
    def senders(self) -> list[str]:
        return [at_position(name, p) for name in self.base.senders for p in self.positions]

    @cached_property
    def receivers(self) -> list[tuple[str, str | None]]:
        rows = []
        for node, head_input in self.base.receivers:
            for p in self.positions:
                rows.append((node if node == LOGITS else at_position(node, p), head_input))
        return rows

    @cached_property
    def _edge_rows(self) -> list[tuple[int, int, str, str, str | None]]:
        """As :class:`Layout`'s: the valid (sender, receiver) pairs, sender-major, then by
        the receiver's node, a head's q, k and v in that order."""
        senders, receivers = self.valid.nonzero(as_tuple=True)
        owner = self.receiver_owner[receivers]
        owner = owner.masked_fill(owner < 0, self.n_senders)  # the logits: the last node
        key = (senders * (self.n_senders + 1) + owner) * self.n_receivers + receivers
        order = torch.argsort(key)
        names, inputs = self.senders, self.receivers
        return [
            (s, r, names[s], inputs[r][0], inputs[r][1])
            for s, r in zip(senders[order].tolist(), receivers[order].tolist())
        ]

    @cached_property
    def nodes(self) -> list[tuple[str, str, int, int | None]]:
        base = {name: row for name, *row in self.base.nodes}
        return [(name, *base[split_position(name)[0]]) for name in [*self.senders, LOGITS]]
