"""The patching engine every method runs on.

One engine per discovery. The clean and corrupted runs are made once, caching every
sender's output: what the embeddings write (``input``), each head's z and each MLP's
output. A patched run is a forward pass on the clean prompts under two masks:

- a node mask [k, n_senders] moves each sender's output between its patch value (0)
  and what it computes in this pass (1);
- an edge mask [k, n_senders, n_receivers] does the same for each edge: receiver input r
  (a head's q, k or v, an MLP's input, the logits) reads its usual input minus
  ``sum_s (1 - mask[s, r]) * (out_s - patch_s)``.

The patch value is the sender's output on the corrupted prompt, its mean over the
corrupted prompts, or zero (``ablation``). Masks are float tensors, so a pass can be
differentiated with respect to them (EAP), and k masks run as k stacked copies of the
prompt batch in one forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import torch

from circuitx.errors import CircuitxError
from circuitx.graph import (
    HEAD_INPUTS,
    INPUT,
    LOGITS,
    edge_name,
    head_node,
    mlp_node,
    parse_edge_name,
)
from circuitx.models import (
    EDGE_HOOK_FLAGS,
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    Model,
    head_input_hook,
    head_output_hook,
    mlp_input_hook,
    mlp_output_hook,
    resid_pre_hook,
)
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, TaskData

ABLATIONS = ("corrupted", "mean", "zero")
# Tokens in one patched forward pass. On CPU larger passes fall out of cache and run
# slower (measured on GPT-2-small shape: 16384 tokens/pass took 2x the time of 2048).
TOKENS_PER_PASS = {"cpu": 2048, "cuda": 32768}


@dataclass(frozen=True)
class SenderChunk:
    """Senders that one hook point writes: the embeddings, a layer's heads, or an MLP."""

    first: int  # index of the first sender
    count: int
    hook: str
    layer: int  # the block it belongs to (0 for the embeddings)
    heads_layer: int | None  # the layer, for a chunk of heads (its hook holds z)


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

    @property
    def per_layer(self) -> int:
        return self.n_heads + int(self.has_mlp)

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
        chunks = [SenderChunk(0, 1, EMBED_OUTPUT_HOOK, 0, None)]
        for layer in range(self.n_layers):
            chunks.append(
                SenderChunk(
                    self.head_sender(layer), self.n_heads, head_output_hook(layer), layer, layer
                )
            )
            if self.has_mlp:
                chunks.append(
                    SenderChunk(self.mlp_sender(layer), 1, mlp_output_hook(layer), layer, None)
                )
        return chunks

    def chunks_before(self, layer: int) -> list[SenderChunk]:
        """The embeddings and the heads and MLPs of the layers before ``layer``."""
        return [c for c in self.chunks if c.first < self.head_sender(layer) or c.first == 0]

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
        return end + self.n_heads if offset == 3 * self.n_heads else end

    @cached_property
    def edges(self) -> list[str]:
        """Every edge name, in mask order (receiver-major)."""
        return [edge_name(s, r, i) for _, s, r, i in self._edge_rows]

    @cached_property
    def edge_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sender and receiver index of every edge of :attr:`edges`."""
        rows = self._edge_rows
        return torch.tensor([row[0][0] for row in rows]), torch.tensor([row[0][1] for row in rows])

    @cached_property
    def _edge_rows(self) -> list[tuple[tuple[int, int], str, str, str | None]]:
        rows = []
        for r, (receiver, head_input) in enumerate(self.receivers):
            for s in range(self.readable(r)):
                rows.append(((s, r), self.senders[s], receiver, head_input))
        return rows

    @cached_property
    def _index_of_edge(self) -> dict[str, tuple[int, int]]:
        return {edge_name(s, r, i): pos for pos, s, r, i in self._edge_rows}

    def sender(self, node: str) -> int:
        try:
            return self._index_of_sender[node]
        except KeyError:
            raise CircuitxError(f"no sender {node!r} in this model") from None

    @cached_property
    def _index_of_sender(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.senders)}

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
            no_input[0] = False
            pruned = mask.clone()
            pruned[no_input] = 0.0
            dead_receivers = torch.zeros(self.n_receivers, dtype=torch.bool)
            dead_receivers[into_node] = outgoing[owner[into_node]] == 0
            pruned[:, dead_receivers] = 0.0
            if torch.equal(pruned, mask):
                return mask
            mask = pruned

    def edge_mask(self, kept: Sequence[str]) -> torch.Tensor:
        """[n_senders, n_receivers] mask: 1 on the ``kept`` edges, 0 elsewhere."""
        mask = torch.zeros(self.n_senders, self.n_receivers)
        if kept:
            senders, receivers = zip(*(self.edge(name) for name in kept))
            mask[list(senders), list(receivers)] = 1.0
        return mask


class PatchingEngine:
    """Cached clean and corrupted runs of one task batch, and masked runs built from them."""

    def __init__(
        self,
        model: Model,
        task: Task,
        data: TaskData,
        metric: str = "logit-diff",
        ablation: str = "corrupted",
        tokens_per_pass: int | None = None,
    ) -> None:
        if ablation not in ABLATIONS:
            raise CircuitxError(
                f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}"
            )
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.ablation = ablation
        self.layout = Layout(model.n_layers, model.n_heads, model.has_mlp)
        self.end = data.positions["END"]
        self.tokens_per_pass = tokens_per_pass or TOKENS_PER_PASS.get(model.device.type, 2048)
        outputs = [EMBED_OUTPUT_HOOK, *model.output_hooks()]
        resids = [resid_pre_hook(layer) for layer in range(1, model.n_layers)]
        self.clean_final, self.clean_cache = model.run_with_cache(
            data.clean, [*outputs, *resids, LOGITS_INPUT_HOOK], self.end
        )
        self.clean_resid_final = self.clean_cache.pop(LOGITS_INPUT_HOOK)
        self.corrupted_final, corrupted = model.run_with_cache(data.corrupted, outputs, self.end)
        self.patch_cache = {name: _ablate(value, ablation) for name, value in corrupted.items()}
        self.clean_metric = float(self.metric(self.clean_final).mean())
        self.corrupted_metric = float(self.metric(self.corrupted_final).mean())
        self.w_o = [model.head_output_weights(layer) for layer in range(model.n_layers)]
        self._clean_deltas: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ metrics

    def metric(self, final: torch.Tensor) -> torch.Tensor:
        """Per-prompt task metric of END logits [..., n, vocab]."""
        return self.task.metric(self.metric_name, final, self.data, self.clean_final)

    @property
    def gap(self) -> float:
        """clean - corrupted metric; an error when there is no effect to attribute."""
        gap = self.clean_metric - self.corrupted_metric
        if abs(gap) < 1e-9:
            raise CircuitxError(
                f"clean and corrupted prompts give the same {self.metric_name} "
                f"({self.clean_metric:.3g}); there is no effect to attribute"
            )
        return gap

    def normalised_effect(self, patched_metric: torch.Tensor) -> torch.Tensor:
        """(clean - patched) / (clean - corrupted): 1 where a patch removes the whole effect."""
        return (self.clean_metric - patched_metric) / self.gap

    # ------------------------------------------------------------------ batched patches

    def patch_each_node(self, nodes: Sequence[str], advance: Advance = no_progress) -> torch.Tensor:
        """Mean metric [len(nodes)] when each node alone carries its patch value."""
        layout = self.layout
        senders = [layout.sender(node) for node in nodes]

        def masks(chunk: Sequence[int]) -> tuple[torch.Tensor, None]:
            mask = torch.ones(len(chunk), layout.n_senders)
            mask[torch.arange(len(chunk)), torch.tensor(chunk)] = 0.0
            return mask, None

        return self.mean_metrics(senders, masks, layout.sender_layer, advance)

    def patch_together(self, nodes: Sequence[str]) -> float:
        """Mean metric when all of ``nodes`` carry their patch values at once."""
        mask = torch.ones(1, self.layout.n_senders)
        mask[0, [self.layout.sender(node) for node in nodes]] = 0.0
        return float(self.metric(self.run(node_mask=mask)).mean())

    def patch_each_edge(
        self, groups: Sequence[Sequence[tuple[int, int]]], advance: Advance = no_progress
    ) -> torch.Tensor:
        """Mean metric [len(groups)] when the ``(sender, receiver)`` edges of each group are
        patched together, every other edge clean."""
        layout = self.layout

        def masks(chunk: Sequence[Sequence[tuple[int, int]]]) -> tuple[None, torch.Tensor]:
            mask = torch.ones(len(chunk), layout.n_senders, layout.n_receivers)
            for copy, edges in enumerate(chunk):
                senders, receivers = zip(*edges)
                mask[copy, list(senders), list(receivers)] = 0.0
            return None, mask

        def first_layer(edges: Sequence[tuple[int, int]]) -> int:
            return min(layout.receiver_layer(r) for _, r in edges)

        return self.mean_metrics(groups, masks, first_layer, advance)

    def edge_mask_metrics(self, masks: torch.Tensor) -> torch.Tensor:
        """Mean metric [k] under each of k edge masks [k, n_senders, n_receivers]."""
        return self.mean_metrics(list(range(len(masks))), lambda chunk: (None, masks[chunk]))

    def mean_metrics(
        self,
        items: Sequence,
        masks: Callable[[Sequence], tuple[torch.Tensor | None, torch.Tensor | None]],
        layer_of: Callable[[Any], int] | None = None,
        advance: Advance = no_progress,
    ) -> torch.Tensor:
        """Mean metric per item, ``masks(chunk)`` giving the node and edge masks of a chunk;
        as many items per forward pass as ``tokens_per_pass`` allows, grouped by the layer
        (``layer_of``) their passes start at."""
        n, width = self.data.clean.shape
        copies = max(1, self.tokens_per_pass // (n * width))
        order = list(range(len(items)))
        if layer_of is not None:
            order.sort(key=lambda i: layer_of(items[i]))
        results = torch.empty(len(items))
        for start in range(0, len(items), copies):
            chunk = order[start : start + copies]
            node_mask, edge_mask = masks([items[i] for i in chunk])
            final = self.run(node_mask=node_mask, edge_mask=edge_mask)
            results[chunk] = self.metric(final).mean(-1).cpu()
            advance(len(chunk))
        return results

    # ------------------------------------------------------------------ gradients

    def mask_gradients(self, mix: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the mean metric with respect to the node mask [n_senders] and the edge
        mask [n_senders, n_receivers], both at all ones.

        Without ``mix`` the pass is the clean run and the gradients are EAP's
        ``(out_s - patch_s) . d metric / d input_r``. With ``mix`` = a, the embeddings are
        ``patch + a (clean - patch)`` and the differences stay the clean run's, as in
        EAP-IG over the inputs.
        """
        node_mask = torch.ones(1, self.layout.n_senders, requires_grad=True)
        edge_mask = torch.ones(1, self.layout.n_senders, self.layout.n_receivers)
        edge_mask.requires_grad_(True)
        final = self.run(node_mask, edge_mask, grad=True, mix=mix)
        self.metric(final).mean().backward()
        return node_mask.grad[0], edge_mask.grad[0]

    # ------------------------------------------------------------------ the masked pass

    def run(
        self,
        node_mask: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        grad: bool = False,
        mix: float | None = None,
    ) -> torch.Tensor:
        """END logits [k, n, vocab] of the clean prompts under k node masks [k, n_senders]
        and/or k edge masks [k, n_senders, n_receivers] (None: all ones).

        ``mix`` (see :meth:`mask_gradients`) replaces the embeddings by an interpolation
        and freezes the sender differences at their clean values. Without gradients the
        pass starts at the first layer a mask changes.
        """
        given = node_mask if node_mask is not None else edge_mask
        k = 1 if given is None else given.shape[0]
        device = self.model.device
        node_mask = None if node_mask is None else node_mask.to(device)
        edge_mask = None if edge_mask is None else edge_mask.to(device)
        layer = 0 if grad or mix is not None else self._first_changed_layer(node_mask, edge_mask)
        pass_ = _MaskedPass(self, k, layer, node_mask, edge_mask, mix)
        resid = pass_.start()
        tokens = self.data.clean.repeat(k, 1)
        flags = EDGE_HOOK_FLAGS if edge_mask is not None else ()
        with self.model.hooks_enabled(flags):
            final = self.model.run_from(
                layer, resid, tokens, pass_.hooks(), self.end.repeat(k), grad=grad
            )
        return final.view(k, self.data.n_prompts, -1)

    def _first_changed_layer(
        self, node_mask: torch.Tensor | None, edge_mask: torch.Tensor | None
    ) -> int:
        """The first layer whose blocks see anything but the clean run."""
        layout, first = self.layout, self.layout.n_layers
        if node_mask is not None:
            changed = (node_mask != 1).any(0).nonzero().flatten().tolist()
            first = min([first, *(layout.sender_layer(s) for s in changed)])
        if edge_mask is not None:
            changed = ((edge_mask != 1).any(0) & layout.valid.to(edge_mask.device)).any(0)
            receivers = changed.nonzero().flatten().tolist()
            first = min([first, *(layout.receiver_layer(r) for r in receivers)])
        return first

    def clean_delta(self, chunk: "SenderChunk") -> torch.Tensor:
        """clean - patch output of a chunk's senders, in the residual basis: [n, pos, s, d]."""
        if chunk.first not in self._clean_deltas:
            delta = self.clean_cache[chunk.hook] - self.patch_cache[chunk.hook]
            if chunk.heads_layer is None:
                delta = delta.unsqueeze(-2)
            else:
                delta = torch.einsum("npse,sed->npsd", delta, self.w_o[chunk.heads_layer])
            self._clean_deltas[chunk.first] = delta
        return self._clean_deltas[chunk.first]


class _MaskedPass:
    """The hooks of one masked forward pass from block ``layer`` on, and what they record."""

    def __init__(
        self,
        engine: PatchingEngine,
        k: int,
        layer: int,
        node_mask: torch.Tensor | None,
        edge_mask: torch.Tensor | None,
        mix: float | None,
    ) -> None:
        self.engine, self.k, self.layer, self.n = engine, k, layer, engine.data.n_prompts
        self.layout = engine.layout
        self.node_mask, self.mix = node_mask, mix
        self.edge_weight = None if edge_mask is None else 1.0 - edge_mask  # patched share
        self.deltas: list[tuple[int, torch.Tensor]] = []  # (first sender, [k or 1, n, pos, s, d])
        self.head_corrections: dict[int, torch.Tensor | None] = {}

    def start(self) -> torch.Tensor:
        """The residual stream entering block ``layer``, [k * n, pos, d]; records the
        differences of the senders before it (all clean there, unless it is block 0)."""
        engine = self.engine
        if self.layer > 0:
            if self.edge_weight is not None:
                for chunk in self.layout.chunks_before(self.layer):
                    self.deltas.append((chunk.first, engine.clean_delta(chunk).unsqueeze(0)))
            name = resid_pre_hook(self.layer) if self.layer < self.layout.n_layers else None
            resid = engine.clean_cache[name] if name else engine.clean_resid_final
            return resid.repeat(self.k, 1, 1)
        chunk = self.layout.chunks_before(1)[0]
        out = engine.clean_cache[EMBED_OUTPUT_HOOK].unsqueeze(0).unsqueeze(-2)
        return self._apply(chunk, out.expand(self.k, *out.shape[1:])).squeeze(-2).flatten(0, 1)

    def hooks(self) -> list[tuple[str, Callable]]:
        layout, hooks = self.layout, []
        if self.node_mask is None and self.edge_weight is None and self.mix is None:
            return hooks
        for chunk in layout.chunks_from(self.layer):
            layer = chunk.layer
            if chunk.heads_layer is not None and self.edge_weight is not None:
                for head_input in HEAD_INPUTS:
                    hooks.append(
                        (head_input_hook(layer, head_input), self._heads_in(layer, head_input))
                    )
            if chunk.heads_layer is None and self.edge_weight is not None:
                hooks.append((mlp_input_hook(layer), self._single_in(layout.mlp_receiver(layer))))
            hooks.append((chunk.hook, self._sender_hook(chunk)))
        if self.edge_weight is not None:
            hooks.append((LOGITS_INPUT_HOOK, self._single_in(layout.logits_receiver)))
        return hooks

    def _sender_hook(self, chunk: "SenderChunk") -> Callable:
        def hook(out: torch.Tensor) -> torch.Tensor:
            x = out.view(self.k, self.n, *out.shape[1:])
            if chunk.heads_layer is None:
                return self._apply(chunk, x.unsqueeze(-2)).squeeze(-2).reshape(out.shape)
            return self._apply(chunk, x).reshape(out.shape)

        return hook

    def _apply(self, chunk: "SenderChunk", x: torch.Tensor) -> torch.Tensor:
        """A chunk's output [k, n, pos, s, e] under the node mask (and ``mix``), recording its
        difference from the patch value for the edges."""
        engine = self.engine
        clean, patch = engine.clean_cache[chunk.hook], engine.patch_cache[chunk.hook]
        if chunk.heads_layer is None:
            clean, patch = clean.unsqueeze(-2), patch.unsqueeze(-2)
        frozen = self.mix is not None
        if frozen and chunk.first == 0:
            x = (patch + self.mix * (clean - patch)).to(x.dtype).expand_as(x)
        delta = (clean - patch).to(x.dtype) if frozen else x - patch.to(x.dtype)
        if self.node_mask is not None:
            keep = self.node_mask[:, chunk.first : chunk.first + chunk.count].to(x.dtype)
            keep = keep.view(self.k, 1, 1, -1, 1)
            x = x - (1.0 - keep) * delta
            if not frozen:
                delta = keep * delta
        if self.edge_weight is not None:
            if frozen:
                self.deltas.append((chunk.first, engine.clean_delta(chunk).unsqueeze(0)))
            else:
                if chunk.heads_layer is not None:
                    delta = torch.einsum("knpse,sed->knpsd", delta, engine.w_o[chunk.heads_layer])
                self.deltas.append((chunk.first, delta.expand(self.k, *delta.shape[1:])))
        return x

    def _correction(self, receivers: slice) -> torch.Tensor | None:
        """sum_s weight[s, r] * delta_s for the receivers in ``receivers``: [k, n, pos, r, d]."""
        total = None
        weight = self.edge_weight[:, :, receivers]
        readable = self.layout.readable(receivers.start)
        for first, delta in self.deltas:
            if first >= readable:
                break
            w = weight[:, first : first + delta.shape[-2]]
            if not w.requires_grad and not bool(w.any()):
                continue
            w = w.to(delta.dtype)
            if delta.shape[0] == 1:
                term = torch.einsum("npsd,ksr->knprd", delta[0], w)
            else:
                term = torch.einsum("knpsd,ksr->knprd", delta, w)
            total = term if total is None else total + term
        return total

    def _heads_in(self, layer: int, head_input: str) -> Callable:
        """Subtract the patched edges' differences from each head's q, k or v input."""
        heads = self.layout.n_heads
        which = HEAD_INPUTS.index(head_input)

        def hook(x: torch.Tensor) -> torch.Tensor:
            if layer not in self.head_corrections:
                first = self.layout.head_receiver(layer, "q")
                self.head_corrections[layer] = self._correction(slice(first, first + 3 * heads))
            correction = self.head_corrections[layer]
            if correction is None:
                return x
            part = correction[..., which * heads : (which + 1) * heads, :]
            return x - part.reshape(x.shape).to(x.dtype)

        return hook

    def _single_in(self, receiver: int) -> Callable:
        """Subtract the patched edges' differences from an MLP's or the logits' input."""

        def hook(x: torch.Tensor) -> torch.Tensor:
            correction = self._correction(slice(receiver, receiver + 1))
            if correction is None:
                return x
            return x - correction.reshape(x.shape).to(x.dtype)

        return hook


def _ablate(corrupted: torch.Tensor, ablation: str) -> torch.Tensor:
    """The patch value of a sender output [n, pos, ...] under ``ablation``."""
    if ablation == "mean":
        return corrupted.mean(0, keepdim=True)
    if ablation == "zero":
        return torch.zeros_like(corrupted[:1])
    return corrupted
