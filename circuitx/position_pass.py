"""The masked forward pass of a circuit over token positions (:class:`PositionLayout`).

Masks are over the layout's senders and receivers, each a model sender or receiver at a
position group (index ``i * G + g``). A node mask entry moves a sender's output at the
group's tokens between its patch value and what it computes; an edge mask entry
``(s@g_s, r@g_r)`` does the same for what receiver r reads of sender s: at the tokens of
``g_s`` (= ``g_r``) for a residual receiver (a head's q input, an MLP, the logits), and,
for a head's k or v input, at the key tokens of ``g_s`` as read by the queries of ``g_r``.
Where a layer's keys or values differ by query group (or gradients must tell the groups
apart), the layer's heads' outputs are computed here
(:func:`circuitx.attention.grouped_heads_output`) in place of the model's.

The pass reads the engine's cached runs (clean and patch values, each sender's clean -
patch difference in the residual basis) and has the interface of the engine's own pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from circuitx.attention import grouped_heads_output
from circuitx.errors import CircuitxError
from circuitx.layout import PositionLayout, SenderChunk
from circuitx.models import (
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    Model,
    TransformerWeights,
    head_input_hook,
    mlp_input_hook,
    sender_output_hook,
    transformer_weights,
)
from circuitx.names import HEAD_INPUTS

# an interpolated pass: (the first sender of the chunk interpolated, a): that chunk (the
# embeddings, a layer's heads or an MLP) writes patch + a (clean - patch), a constant
Mix = tuple[int, float]


@dataclass(frozen=True)
class PassMasks:
    """What one masked pass applies, as :meth:`circuitx.patching.PatchingEngine.run`
    prepares it: ``k`` stacked masks from block ``layer`` on; the node and edge masks on
    the device (None: all ones) and the edge mask's copy on the host, to plan from;
    ``mix``, an interpolation (see the engine); ``frozen``: the senders' differences are
    the clean run's; ``record_grads`` hears the gradients at receivers' inputs in the
    backward pass; ``held`` [n_senders] (bool, on the host; None: none) the senders that
    write their patch values in every pass (backup rounds: the engine's held circuit)."""

    k: int
    layer: int
    node_mask: torch.Tensor | None
    edge_mask: torch.Tensor | None
    host_edges: torch.Tensor | None
    mix: Mix | None
    frozen: bool
    record_grads: Callable[[int, torch.Tensor], None] | None
    held: torch.Tensor | None = None


def position_weights(model: Model) -> TransformerWeights:
    """The weights the position pass computes attention from, or a one-line error for a
    model whose attention it cannot compute (grouped keys, norms after attention)."""
    if model.post_attention_norm:
        raise CircuitxError(
            f"model {model.name!r} normalises its heads' summed output (Gemma-2): a circuit "
            "over positions needs each head's own write; use --positions none"
        )
    try:
        return transformer_weights(model, llama=True)
    except CircuitxError as error:
        raise CircuitxError(f"--positions: {error}") from None


class PositionPass:
    """The hooks of one masked forward pass over position groups, from block ``layer`` on.

    ``engine`` is a patching engine whose ``layout`` is a :class:`PositionLayout`; it
    gives ``clean_cache``, ``patch_cache``, ``w_o``, ``sender_deltas`` ([base senders, n,
    pos, d_model]), ``group_index`` [n, pos], ``group_onehot`` and ``position_weights``."""

    def __init__(
        self,
        engine: Any,
        masks: PassMasks,
        pattern_grads: Callable[[int, torch.Tensor], None] | None = None,
    ) -> None:
        k, layer, node_mask, edge_mask = masks.k, masks.layer, masks.node_mask, masks.edge_mask
        mix, frozen, record_grads = masks.mix, masks.frozen, masks.record_grads
        host_edges = masks.host_edges
        if masks.held is not None:
            raise CircuitxError("held senders (--backup-rounds) work on circuits without positions")
        self.engine, self.k, self.layer = engine, k, layer
        self.full = engine.model.work_dtype  # differences and sums: see Model.work_dtype
        self.layout: PositionLayout = engine.layout
        self.base, self.g = self.layout.base, self.layout.n_groups
        self.n = engine.data.n_prompts
        self.mix, self.frozen, self.record_grads = mix, frozen, record_grads
        self.pattern_grads = pattern_grads
        # a backward pass tells the query groups apart at every layer
        self.every_layer_grouped = record_grads is not None or pattern_grads is not None
        self.groups = engine.group_index  # [n, pos] on the device
        self.node_mask = None
        if node_mask is not None:
            if node_mask.dim() == 2:  # one mask per pass: the same for every prompt
                node_mask = node_mask.unsqueeze(1).expand(k, self.n, -1)
            self.node_mask = node_mask.reshape(k, self.n, self.base.n_senders, self.g)
        self.weight = None  # [k, senders, G, receivers, G]: how much of each edge is patched
        self.patched = torch.zeros(self.base.n_receivers, dtype=torch.bool)
        if edge_mask is not None:
            valid = self.layout.valid.to(edge_mask.device)
            weight = (1.0 - edge_mask) * valid
            shape = (k, self.base.n_senders, self.g, self.base.n_receivers, self.g)
            self.weight = weight.view(shape)
            host = ((1.0 - host_edges) * self.layout.valid) != 0
            self.patched = host.view(shape).any(4).any(2).any(1).any(0)  # per base receiver
        self.first_live = self.base.n_senders if frozen else self.base.head_sender(layer)
        self.live: dict[int, torch.Tensor] = {}  # base sender -> [k, n, pos, d] this pass
        self.stored: dict[tuple[int, str], torch.Tensor] = {}  # a layer's grouped inputs

    # ------------------------------------------------------------------ the pass

    def start(self) -> torch.Tensor:
        engine = self.engine
        if self.layer > 0:
            return engine.clean_resid(self.layer).repeat(self.k, 1, 1)
        out = engine.clean_cache[EMBED_OUTPUT_HOOK].unsqueeze(0)
        return self._apply(self.layout.chunks[0], out.expand(self.k, *out.shape[1:])).flatten(0, 1)

    def grouped(self, layer: int) -> bool:
        """Whether layer ``layer``'s heads read keys and values by query group here."""
        if self.every_layer_grouped:
            return True
        k_first = self.base.head_receiver(layer, "k")
        return bool(self.patched[k_first : k_first + 2 * self.base.n_heads].any())

    def hooks(self) -> list[tuple[str, Callable]]:
        hooks: list[tuple[str, Callable]] = []
        edges = self.weight is not None or self.every_layer_grouped
        for chunk in self.base.chunks:
            if chunk.first < self.base.head_sender(self.layer) or chunk.kind == "input":
                continue
            layer = chunk.layer
            if chunk.heads and edges:
                for head_input in HEAD_INPUTS:
                    hook = self._head_input(layer, head_input)
                    hooks.append((head_input_hook(layer, head_input), hook))
            if not chunk.heads and edges:
                hooks.append((mlp_input_hook(layer), self._residual(self.base.mlp_receiver(layer))))
            virtual = self.layout.chunks[self.base.chunks.index(chunk)]
            hooks.append((sender_output_hook(chunk), self._output(virtual)))
        if edges:
            hooks.append((LOGITS_INPUT_HOOK, self._residual(self.base.logits_receiver)))
        return hooks

    # ------------------------------------------------------------------ senders

    def _output(self, chunk: SenderChunk) -> Callable:
        def hook(out: torch.Tensor) -> torch.Tensor:
            if chunk.heads and self.grouped(chunk.layer):
                out = self._grouped_z(chunk.layer).to(out.dtype)
            x = out.view(self.k, self.n, *out.shape[1:])
            return self._apply(chunk, x).reshape(out.shape)

        return hook

    def _apply(self, chunk: SenderChunk, x: torch.Tensor) -> torch.Tensor:
        """A chunk's output [k, n, pos, (s,) e] under the node mask (and ``mix``); keeps
        its senders' differences from their patch values in the residual basis where
        later receivers read them live."""
        engine = self.engine
        hook = sender_output_hook(chunk)
        clean, patch = engine.clean_cache[hook], engine.patch_cache[hook]
        if not chunk.heads:
            x, clean, patch = x.unsqueeze(-2), clean.unsqueeze(-2), patch.unsqueeze(-2)
        if self.mix is not None and chunk.first == self.mix[0]:
            x = (patch + self.mix[1] * (clean - patch)).to(x.dtype).expand_as(x)
        delta = (clean - patch).to(x.dtype) if self.frozen else x - patch.to(x.dtype)
        first, count = chunk.first // self.g, chunk.count // self.g
        if self.node_mask is not None:
            mask = self.node_mask[:, :, first : first + count]  # [k, n, count, G]
            index = self.groups.view(1, self.n, 1, -1).expand(self.k, -1, count, -1)
            keep = mask.gather(3, index.to(mask.device)).permute(0, 1, 3, 2).unsqueeze(-1)
            keep = keep.to(x.dtype)  # [k, n, pos, count, 1]
            x = x - (1.0 - keep) * delta
            delta = keep * delta
        if first >= self.first_live and not self.frozen:
            written = delta.to(self.full)
            if chunk.heads:
                written = torch.einsum("knpse,sed->knpsd", written, engine.w_o[chunk.layer])
            for at in range(count):
                self.live[first + at] = written[..., at, :]
        return x if chunk.heads else x.squeeze(-2)

    def _deltas(self, readable: int) -> torch.Tensor:
        """The differences of the first ``readable`` base senders [k or 1, s, n, pos, d]."""
        fixed = self.engine.sender_deltas[: min(readable, self.first_live)].unsqueeze(0)
        if readable <= self.first_live:
            return fixed
        live = torch.stack([self.live[s] for s in range(self.first_live, readable)], 1)
        return torch.cat([fixed.expand(self.k, *fixed.shape[1:]), live], 1)

    # ------------------------------------------------------------------ receivers

    def _correction(self, first: int, count: int) -> torch.Tensor | None:
        """[k, n, pos, count, G, d]: what base receivers ``first ..`` read less of each
        sender's difference for each receiver group (None: nothing is patched there)."""
        if self.weight is None or not bool(self.patched[first : first + count].any()):
            return None
        readable = self.base.readable(first)
        weight = self.weight[:, :readable, :, first : first + count]  # [k, s, G, c, G]
        index = self.groups.reshape(1, 1, -1, 1, 1).expand(self.k, readable, -1, count, self.g)
        at = weight.gather(2, index.to(weight.device))  # [k, s, n * pos, c, G]
        at = at.view(self.k, readable, self.n, -1, count, self.g)
        deltas = self._deltas(readable).to(at.dtype)
        return torch.einsum("ksnpcg,ksnpd->knpcgd", at, deltas.expand(self.k, *deltas.shape[1:]))

    def _own_group(self, values: torch.Tensor) -> torch.Tensor:
        """[k, n, pos, c, d] of [k, n, pos, c, G, d]: each token's own group's entry."""
        index = self.groups.view(1, self.n, -1, 1, 1, 1)
        index = index.expand(*values.shape[:-2], 1, values.shape[-1])
        return values.gather(4, index.to(values.device)).squeeze(4)

    def _residual(self, receiver: int) -> Callable:
        """The hook on an MLP's input or the logits' (a base receiver that reads its own
        position)."""

        def hook(x: torch.Tensor) -> torch.Tensor:
            y = x.view(self.k, self.n, -1, 1, x.shape[-1])
            correction = self._correction(receiver, 1)
            if correction is not None:
                y = y - self._own_group(correction).to(y.dtype)
            y = y.reshape(x.shape)
            if self.record_grads is not None:
                y = y.view_as(y)
                y.register_hook(self._split_by_group(receiver, 1))
            return y

        return hook

    def _head_input(self, layer: int, head_input: str) -> Callable:
        first = self.base.head_receiver(layer, head_input)
        heads = self.base.n_heads

        def hook(x: torch.Tensor) -> torch.Tensor:
            y = x.view(self.k, self.n, *x.shape[1:])  # [k, n, pos, head, d]
            correction = self._correction(first, heads)
            grouped = self.grouped(layer)
            if head_input == "q" or not grouped:
                if correction is not None:
                    y = y - self._own_group(correction).to(y.dtype)
                y = y.reshape(x.shape)
                if self.record_grads is not None:
                    y = y.view_as(y)
                    y.register_hook(self._split_by_group(first, heads))
                if grouped:
                    self.stored[(layer, head_input)] = y
                return y
            # a key or value input per query group: [G, k * n, pos, head, d]
            base = y.unsqueeze(0).expand(self.g, *y.shape)
            if correction is not None:
                base = base - correction.permute(4, 0, 1, 2, 3, 5).to(y.dtype)
            grouped = base.reshape(self.g, *x.shape)
            if self.record_grads is not None:
                grouped = grouped.view_as(grouped)
                grouped.register_hook(self._by_query_group(first, heads))
            self.stored[(layer, head_input)] = grouped
            return x

        return hook

    def _grouped_z(self, layer: int) -> torch.Tensor:
        q_in = self.stored.pop((layer, "q"))
        k_in, v_in = self.stored.pop((layer, "k")), self.stored.pop((layer, "v"))
        groups = self.groups.repeat(self.k, 1)
        weights = self.engine.position_weights
        block = weights.blocks[layer]

        def hear(pattern: torch.Tensor) -> torch.Tensor:  # [G, b, head, q, k]
            if self.pattern_grads is None or not pattern.requires_grad:
                return pattern
            pattern = pattern.view_as(pattern)
            index = groups.view(1, groups.shape[0], 1, -1, 1).to(pattern.device)

            def each_query_own_group(grad: torch.Tensor) -> None:
                own = grad.gather(0, index.expand(1, *grad.shape[1:])).squeeze(0)
                self.pattern_grads(layer, own)

            pattern.register_hook(each_query_own_group)
            return pattern

        return grouped_heads_output(
            q_in.to(self.full), k_in.to(self.full), v_in.to(self.full), groups, block, weights, hear
        )

    # ------------------------------------------------------------------ gradients

    def _split_by_group(self, receiver: int, count: int) -> Callable:
        """A tensor hook giving ``record_grads`` the gradient at base receivers'
        ``receiver ..`` input, once per group: at that group's tokens, zero elsewhere."""

        def hook(grad: torch.Tensor) -> None:
            g = grad.to(self.full).view(self.k * self.n, grad.shape[1], count, -1)  # [b, pos, c, d]
            onehot = self.engine.group_onehot.repeat(self.k, 1, 1)  # [b, pos, G]
            rows = torch.einsum("bpcd,bpg->cgbpd", g, onehot)
            self.record_grads(receiver * self.g, rows.reshape(count * self.g, -1))

        return hook

    def _by_query_group(self, receiver: int, count: int) -> Callable:
        """A tensor hook giving ``record_grads`` the gradient at each query group's copy
        of base receivers' ``receiver ..`` input [G, b, pos, c, d]."""

        def hook(grad: torch.Tensor) -> None:
            rows = grad.to(self.full).permute(3, 0, 1, 2, 4)  # [c, G, b, pos, d]
            self.record_grads(receiver * self.g, rows.reshape(count * self.g, -1))

        return hook
