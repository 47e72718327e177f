"""The masked forward pass of a patching engine over whole nodes (one position group):
its hooks correct each receiver group's input by the senders' differences its masks
patch, and record the gradients an attribution asks for. Circuits over positions run
:class:`circuitx.position_pass.PositionPass` instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from circuitx.attention import centred
from circuitx.layout import Layout, SenderChunk
from circuitx.models import (
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    HeadReads,
    attention_output_hook,
    head_input_hook,
    head_output_hook,
    head_vector_hook,
    mlp_input_hook,
    post_attention_scale_hook,
    resid_pre_hook,
    sender_output_hook,
)
from circuitx.names import HEAD_INPUTS
from circuitx.position_pass import PassMasks


class MaskedPass:
    """The hooks of one masked forward pass from block ``layer`` on, and what they record.

    Receivers are corrected in groups that read the same senders (a layer's q, k and v
    inputs; an MLP's input; the logits), one product per group. A group's correction
    sums the differences out - patch of the senders its patched edges leave (``off``),
    or, with ``complement`` and when fewer senders have an edge into it kept than
    patched, all readable senders' total minus the kept ones (``kept``): a small circuit
    costs as little as a small patch. The differences of senders before the pass starts
    (all of them when ``frozen``) are the engine's clean ones; those of later senders
    that a group reads are written, as the pass computes them, into a buffer
    [k, senders, n * pos * d].

    ``engine`` is the :class:`circuitx.patching.PatchingEngine` whose pass this is; it
    gives ``model``, ``layout``, ``data``, ``clean_cache``, ``patch_cache``, ``w_o``,
    ``clean_deltas``, ``fixed_total`` and ``clean_resid``.
    """

    def __init__(
        self,
        engine: Any,
        masks: PassMasks,
        complement: bool = False,
        reads: HeadReads | None = None,
    ) -> None:
        k, layer, node_mask, edge_mask = masks.k, masks.layer, masks.node_mask, masks.edge_mask
        mix, frozen, record_grads = masks.mix, masks.frozen, masks.record_grads
        self.reads, self.norms = reads, {}  # layer -> its heads' normed input and scale
        self.engine, self.k, self.layer, self.n = engine, k, layer, engine.data.n_prompts
        self.full = engine.model.work_dtype  # differences and sums: see Model.work_dtype
        self.record_grads = record_grads
        self.layout = layout = engine.layout
        self.node_mask, self.mix, self.frozen = node_mask, mix, frozen
        self.held = masks.held
        self.first_live = layout.n_senders if frozen else layout.head_sender(layer)
        self.groups: dict[int, ReceiverGroup] = {}  # by first receiver
        self.live_column = torch.full((layout.n_senders,), -1)
        self.live: torch.Tensor | None = None
        self.in_blocks = False  # the live differences kept as each chunk's block (_plan)
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (first column, [k, c, rows])
        self.total: torch.Tensor | None = None  # [k, rows]: every live difference so far
        self.last_total: tuple[int, torch.Tensor] | None = None  # (first sender, its chunk's)
        if edge_mask is not None:
            self._plan(edge_mask, masks.host_edges, complement)

    def _plan(self, edge_mask: torch.Tensor, host_mask: torch.Tensor, complement: bool) -> None:
        """Choose each receiver group's form and active senders, and the buffer columns of
        the live senders some group reads, from the edge mask's copy on the host (the
        products use ``edge_mask``, on the device)."""
        # entries of no edge (sender after receiver) patch nothing
        weight = (1.0 - edge_mask) * self.layout.valid.to(edge_mask.device)
        host_weight = (1.0 - host_mask) * self.layout.valid
        complement = complement and not self.frozen
        layout, live = self.layout, torch.zeros(self.layout.n_senders, dtype=torch.bool)
        exact = weight.requires_grad  # every readable sender, so every entry gets a gradient
        patched = (host_weight != 0).any(0)  # [senders, receivers]
        kept = (host_weight != 1).any(0)
        # an exact pass reads every readable sender into q, k and v alike: one product
        for first, count in _receiver_groups(layout, self.layer, complement or exact):
            readable = layout.readable(first)
            off = patched[:readable, first : first + count].any(1)
            if not bool(off.any()) and not exact:
                continue
            on = kept[:readable, first : first + count].any(1)
            form = "off"
            if exact:
                off = torch.ones(readable, dtype=torch.bool)
            elif complement and int(on.sum()) < int(off.sum()):
                form = "kept"
            active = (off if form == "off" else on).nonzero().flatten()
            w = weight[:, :readable, first : first + count]
            self.groups[first] = ReceiverGroup(
                first, count, readable, form, active, w if form == "off" else 1.0 - w
            )
            live[active[active >= self.first_live]] = True
        needed = self.live_senders = live.nonzero().flatten()
        if len(needed):
            self.live_column[needed] = torch.arange(len(needed))
            rows = self.engine.clean_deltas.shape[1]
            # a pass whose mask is learned writes nothing in place: each chunk's columns
            # stay a block of their own, which autograd saves once for every correction
            self.in_blocks = exact and not self.frozen
            if not self.in_blocks:
                self.live = torch.empty(
                    self.k, len(needed), rows, device=self.engine.model.device, dtype=self.full
                )
        if any(group.form == "kept" for group in self.groups.values()):
            fixed = self.engine.fixed_total(self.first_live)
            self.total = fixed.expand(self.k, -1).clone()

    def start(self) -> torch.Tensor:
        """The residual stream entering block ``layer``, [k * n, pos, d]."""
        engine = self.engine
        if self.layer > 0:
            return engine.clean_resid(self.layer).repeat(self.k, 1, 1)
        out = engine.clean_cache[EMBED_OUTPUT_HOOK].unsqueeze(0).unsqueeze(-2)
        embeddings = self._apply(self.layout.chunks[0], out.expand(self.k, *out.shape[1:]))
        return embeddings.squeeze(-2).flatten(0, 1)

    def hooks(self) -> list[tuple[str, Callable]]:
        layout, hooks = self.layout, []
        edges = bool(self.groups) or self.record_grads is not None
        if self.node_mask is None and not edges and self.mix is None and self.held is None:
            return hooks
        records = self.live is not None or self.in_blocks or self.total is not None
        for chunk in layout.chunks_from(self.layer):
            layer = chunk.layer
            if chunk.heads and edges and self.reads is not None:
                hooks.append((resid_pre_hook(layer), self._keep_norm(layer)))
                for head_input in HEAD_INPUTS:
                    hook = self._head_vector(layer, head_input)
                    hooks.append((head_vector_hook(layer, head_input), hook))
            elif chunk.heads and edges:
                for head_input in HEAD_INPUTS:
                    first = layout.head_receiver(layer, head_input)
                    hooks.append(
                        (head_input_hook(layer, head_input), self._in(first, layout.n_heads))
                    )
            if not chunk.heads and edges:
                hooks.append((mlp_input_hook(layer), self._in(layout.mlp_receiver(layer))))
            if self.node_mask is not None or self.held is not None or (records and not self.frozen):
                if chunk.heads and self.engine.model.post_attention_norm:
                    hooks += self._normed_heads_hooks(chunk)
                else:
                    hooks.append((sender_output_hook(chunk), self._sender_hook(chunk)))
        if edges:
            hooks.append((LOGITS_INPUT_HOOK, self._in(layout.logits_receiver)))
        return hooks

    def _sender_hook(self, chunk: SenderChunk) -> Callable:
        def hook(out: torch.Tensor) -> torch.Tensor:
            x = out.view(self.k, self.n, *out.shape[1:])
            if not chunk.heads:
                return self._apply(chunk, x.unsqueeze(-2)).squeeze(-2).reshape(out.shape)
            return self._apply(chunk, x).reshape(out.shape)

        return hook

    def _normed_heads_hooks(self, chunk: SenderChunk) -> list[tuple[str, Callable]]:
        """The hooks that mask a layer's heads where a norm follows their sum (Gemma-2):
        each head's output is its z over this pass's norm scale (what it writes, times
        the gain folded into ``w_o``), so the mask changes the layer's normed output by
        the masked heads' change in what they write."""
        layer, seen = chunk.layer, {}

        def keep(name: str) -> Callable:
            def hook(x: torch.Tensor) -> torch.Tensor:
                seen[name] = x
                return x

            return hook

        def mask(out: torch.Tensor) -> torch.Tensor:
            z = seen["z"] / seen["scale"].unsqueeze(-2)
            x = z.view(self.k, self.n, *z.shape[1:])
            change = (self._apply(chunk, x) - x).to(self.full)
            written = torch.einsum("knpse,sed->knpd", change, self.engine.w_o[layer])
            return out + written.reshape(out.shape).to(out.dtype)

        return [
            (head_output_hook(layer), keep("z")),
            (post_attention_scale_hook(layer), keep("scale")),
            (attention_output_hook(layer), mask),
        ]

    def _apply(self, chunk: SenderChunk, x: torch.Tensor) -> torch.Tensor:
        """A chunk's output [k, n, pos, s, e] under the node mask (and ``mix``), recording
        its differences from the patch values that later receivers read."""
        engine = self.engine
        hook = sender_output_hook(chunk)
        clean, patch = engine.clean_cache[hook], engine.patch_cache[hook]
        if not chunk.heads:
            clean, patch = clean.unsqueeze(-2), patch.unsqueeze(-2)
        if self.mix is not None and chunk.first == self.mix[0]:
            x = (patch + self.mix[1] * (clean - patch)).to(x.dtype).expand_as(x)
        if self.held is not None:  # held senders write their patch values
            held = self.held[chunk.first : chunk.first + chunk.count]
            if bool(held.any()):
                x = torch.where(held.view(-1, 1).to(x.device), patch.to(x.dtype), x)
        delta = (clean - patch).to(x.dtype) if self.frozen else x - patch.to(x.dtype)
        if self.node_mask is not None:
            # a mask per pass [k, senders], or per pass and prompt [k, n, senders]
            keep = self.node_mask[..., chunk.first : chunk.first + chunk.count].to(x.dtype)
            keep = keep.view(self.k, -1, 1, chunk.count, 1)
            x = x - (1.0 - keep) * delta
            delta = keep * delta
        if chunk.first < self.first_live:
            return x
        columns = self.live_column[chunk.first : chunk.first + chunk.count]
        picked = None
        if bool((columns >= 0).any()):
            wanted = (columns >= 0).nonzero().flatten()
            first, last = int(columns[wanted[0]]), int(columns[wanted[-1]])
            mine = _columns(delta, wanted, dim=-2)
            if self.in_blocks:  # autograd's: each chunk's columns a block of their own
                picked = self._in_residual_basis(chunk, mine, wanted)
                self.blocks.append((first, picked))
            else:  # written into the buffer's columns, not made and then copied there
                picked = self.live[:, first : last + 1]
                self._in_residual_basis(chunk, mine, wanted, picked)
            if len(wanted) < chunk.count:
                picked = None
        if self.total is not None:
            if picked is not None:  # every sender of the chunk: their sum
                total = picked.sum(1)
            elif chunk.heads:
                total = delta.to(self.full).flatten(-2) @ engine.w_o[chunk.layer].flatten(0, 1)
            else:
                total = delta.to(self.full).squeeze(-2)
            total = total.reshape(self.k, -1)
            self.total += total
            self.last_total = (chunk.first, total)
        return x

    def _in_residual_basis(
        self,
        chunk: SenderChunk,
        delta: torch.Tensor,
        wanted: torch.Tensor,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The differences [k, n, pos, s, e] of a chunk's ``wanted`` senders in the
        residual basis (a head's through its W_O), [k, s, n * pos * d]: written straight
        into ``out`` where it is given (the buffer's columns) and no gradient is wanted,
        else made first (which autograd can take)."""
        k, s = self.k, len(wanted)
        w_o = _columns(self.engine.w_o[chunk.layer], wanted, dim=0) if chunk.heads else None
        if out is not None and not (torch.is_grad_enabled() and delta.requires_grad):
            d = self.engine.model.d_model
            for at in range(k):
                rows = delta[at].to(self.full).flatten(0, 1).transpose(0, 1)  # [s, n * pos, e]
                target = out[at].view(s, -1, d)
                if w_o is None:
                    target.copy_(rows)
                else:
                    torch.bmm(rows, w_o, out=target)
            return out
        if w_o is None:
            made = delta.to(self.full).movedim(-2, 1).reshape(k, s, -1)
        else:
            made = torch.einsum("knpse,sed->ksnpd", delta.to(self.full), w_o).reshape(k, s, -1)
        return made if out is None else out.copy_(made)

    def _correction(self, group: ReceiverGroup) -> torch.Tensor | None:
        """sum over the group's active senders s of weight[s, r] * delta_s: [k, r, rows]
        (None when it has none)."""
        k, count, rows = self.k, group.count, self.engine.clean_deltas.shape[1]
        active, weight = group.active, group.weight
        total = None
        fixed, live = active[active < self.first_live], active[active >= self.first_live]
        if len(fixed):
            fixed = _span(fixed)  # a few zero weights cost less than copying rows out
            w = _columns(weight, fixed, dim=1)  # [k, a, r]
            deltas = _columns(self.engine.clean_deltas, fixed, dim=0)
            if torch.is_grad_enabled() and w.requires_grad:
                # not a view: the sums below are in place, and autograd would copy a
                # view's whole base back at each of them
                batched = deltas.unsqueeze(0).expand(k, *deltas.shape)
                total = torch.bmm(w.transpose(1, 2).to(deltas.dtype), batched)
            else:
                w = w.permute(0, 2, 1).reshape(k * count, len(fixed))
                total = (w.to(deltas.dtype) @ deltas).view(k, count, rows)
        if len(live):
            for columns, deltas in self._live_deltas(_span(self.live_column[live])):
                w = _columns(weight, self.live_senders[columns], dim=1).transpose(1, 2)
                w = w.to(deltas.dtype)
                if total is None:
                    total = torch.bmm(w, deltas)
                else:  # in place: autograd saves w and deltas, never the running sum
                    total.baddbmm_(w, deltas)
        return total

    def _live_deltas(self, columns: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The live differences of buffer ``columns`` (ascending) [k, c, rows], with the
        columns they are: one piece of the buffer, or one per chunk's block."""
        if not self.in_blocks:
            return [(columns, _columns(self.live, columns, dim=1))]
        pieces = []
        for first, block in self.blocks:
            inside = columns[(columns >= first) & (columns < first + block.shape[1])]
            if len(inside):
                pieces.append((inside, _columns(block, inside - first, dim=1)))
        return pieces

    def _readable_total(self, readable: int) -> torch.Tensor:
        """The sum of every readable sender's difference [k, rows]: the running total less
        a chunk it has counted that the group does not read (a parallel block's heads)."""
        total = self.total
        if self.last_total is not None and self.last_total[0] >= readable:
            total = total - self.last_total[1]
        return total

    def _in(self, receiver: int, count: int = 1) -> Callable:
        """The hook on the input of receivers ``receiver .. receiver + count - 1`` (the q,
        k or v inputs of a layer's heads, an MLP, the logits): it subtracts the patched
        edges' differences and, with ``record_grads``, records the gradient there."""
        group_first = next(
            (
                first
                for first in self.groups
                if first <= receiver < first + self.groups[first].count
            ),
            None,
        )

        def hook(x: torch.Tensor) -> torch.Tensor:
            if group_first is not None:
                x = self._corrected(self.groups[group_first], receiver, count, x)
            if self.record_grads is not None:
                x = x.view_as(x)  # its own node: the MLP's input is also the residual stream
                x.register_hook(self._store_grad(receiver, count))
            return x

        return hook

    def _corrected(
        self, group: ReceiverGroup, receiver: int, count: int, x: torch.Tensor
    ) -> torch.Tensor:
        """``x``, the input of receivers ``receiver ..`` of ``group`` [k * n, pos, (count,)
        d], less the group's correction (computed at its first hook, freed at its last)."""
        if group.correction is None and group.base is None:
            group.correction = self._correction(group)
            if group.form == "kept":
                group.base = self._readable_total(group.readable)
            if group.correction is not None and count < group.count:
                # one piece a hook (a layer's q, k, v): split's gradient is one
                # concatenation, where slices' would fill zeros of the whole for each
                group.correction = group.correction.split(count, dim=1)
        k, n, width, d = self.k, self.n, x.shape[1], x.shape[-1]
        y = x.view(k, n, width, count, d)
        offset = receiver - group.first
        part = None
        if group.correction is not None:
            pieces = group.correction
            part = pieces[offset // count] if isinstance(pieces, tuple) else pieces
            part = part.view(k, count, n, width, d)
            part = part.permute(0, 2, 3, 1, 4).to(y.dtype)  # [k, n, pos, count, d]
        if group.form == "kept":  # no gradients here: the fresh difference takes the rest in place
            y = y - group.base.view(k, n, width, 1, d).to(y.dtype)
            if part is not None:
                y = y.add_(part)
        elif part is not None:
            y = y - part
        if offset + count == group.count:  # the group's last hook
            group.correction = group.base = None
        return y.reshape(x.shape)

    def _keep_norm(self, layer: int) -> Callable:
        """A hook keeping what the norm before a layer's heads makes of its input: the
        normed input and the scale [n, pos, 1] that divided it."""
        reads = self.reads

        def hook(x: torch.Tensor) -> torch.Tensor:
            read = x.detach().to(self.full)
            if not reads.rms:
                read = centred(read)
            scale = (read.pow(2).mean(-1, keepdim=True) + reads.eps).rsqrt()
            self.norms[layer] = (read * scale, scale)
            return x

        return hook

    def _head_vector(self, layer: int, head_input: str) -> Callable:
        """A hook on the heads' q, k or v whose gradient there, back through W_Q (W_K,
        W_V) and the norm's Jacobian, is the gradient at each head's own input (given to
        ``record_grads``)."""
        first = self.layout.head_receiver(layer, head_input)
        reads = self.reads
        # the norm's gain folded in: [head, d_model, d_head]
        weight = reads.weights[head_input][layer] * reads.gains[layer][:, None]
        d_model = weight.shape[1]

        def store(grad: torch.Tensor) -> None:
            normed, scale = self.norms[layer]
            # the gradient at the norm's output, then back through its Jacobian:
            # scale * (upstream - mean(upstream) - normed * mean(upstream * normed))
            upstream = torch.einsum("bphe,hde->hbpd", grad.to(self.full), weight)
            dot = torch.einsum("hbpd,bpd->hbp", upstream, normed) / d_model
            upstream.addcmul_(normed, dot.unsqueeze(-1), value=-1.0)
            if not reads.rms:
                upstream.sub_(upstream.mean(-1, keepdim=True))
            upstream.mul_(scale)  # [head, n, pos, d]: the gradient at each head's input
            self.record_grads(first, upstream.reshape(len(weight), -1))

        def hook(vector: torch.Tensor) -> torch.Tensor:
            vector = vector.view_as(vector)
            vector.register_hook(store)
            return vector

        return hook

    def _store_grad(self, receiver: int, count: int) -> Callable:
        """A tensor hook giving the gradient at receivers' inputs to ``record_grads``."""

        def hook(grad: torch.Tensor) -> None:
            rows = grad.movedim(2, 0) if grad.dim() == 4 else grad.unsqueeze(0)
            self.record_grads(receiver, rows.reshape(count, -1))  # [count, n * pos * d]

        return hook


@dataclass
class ReceiverGroup:
    """Receivers ``first .. first + count - 1`` that read the same ``readable`` senders,
    the senders whose differences their correction sums (``active``) and its weights
    [k, readable, count]: how much of each edge is patched (``off``) or kept (``kept``)."""

    first: int
    count: int
    readable: int
    form: str
    active: torch.Tensor
    weight: torch.Tensor
    # [k, count, rows] while its hooks run, or one piece a hook where several share it
    correction: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    base: torch.Tensor | None = None  # ``kept``: every readable sender's total


def _receiver_groups(layout: Layout, layer: int, qkv: bool) -> list[tuple[int, int]]:
    """``(first receiver, count)`` of each group from block ``layer`` on, in pass order: a
    layer's q, k and v inputs (together with ``qkv``, else one group each), its MLP's
    input; the logits."""
    groups = []
    for at in range(layer, layout.n_layers):
        heads = [(layout.head_receiver(at, h), layout.n_heads) for h in HEAD_INPUTS]
        groups += [(heads[0][0], 3 * layout.n_heads)] if qkv else heads
        if layout.has_mlp:
            groups.append((layout.mlp_receiver(at), 1))
    return [*groups, (layout.logits_receiver, 1)]


def _span(index: torch.Tensor) -> torch.Tensor:
    """The run from ``index``'s first to its last entry (ascending) when it is at most
    twice as long, else ``index`` itself."""
    first, last = int(index[0]), int(index[-1])
    return torch.arange(first, last + 1) if last - first + 1 <= 2 * len(index) else index


def _columns(tensor: torch.Tensor, index: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``tensor``'s entries ``index`` (ascending) along ``dim``: a view when they are a run."""
    first, last = int(index[0]), int(index[-1])
    if first == 0 and len(index) == tensor.shape[dim]:
        return tensor  # not a view: its gradient is not copied into zeros of its shape
    if last - first + 1 == len(index):
        return tensor.narrow(dim, first, len(index))
    return tensor.index_select(dim, index.to(tensor.device))
