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
corrupted prompts, or zero (``ablation``; for the embeddings of a model with a
``zero_embedding``, that vector). The metric reads the logits at END, or at each of a
task's readout positions (n * P rows). Masks are float tensors, so a pass can be
differentiated with respect to them (EAP), and k masks run as k stacked copies of the
prompt batch in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.layout import SenderChunk
from circuitx.models import (
    EDGE_HOOK_FLAGS,
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    Model,
    attention_output_hook,
    head_input_hook,
    head_output_hook,
    mlp_input_hook,
    post_attention_scale_hook,
    resid_pre_hook,
    sender_output_hook,
)
from circuitx.names import HEAD_INPUTS
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, TaskData

ABLATIONS = ("corrupted", "mean", "zero")
# Tokens in one patched forward pass. On CPU larger passes fall out of cache and run
# slower (measured on GPT-2-small shape: 16384 tokens/pass took 2x the time of 2048).
TOKENS_PER_PASS = {"cpu": 2048, "cuda": 32768}


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
        reference: tuple[float, float] | None = None,
        patch_values: dict[str, torch.Tensor] | None = None,
        first_prompt: int = 0,
    ) -> None:
        """``reference``: the clean and corrupted metrics effects are measured against
        (default: this batch's); ``patch_values``: every sender output's patch value
        (default: from this batch's corrupted run by ``ablation``). A part of a larger
        batch takes both from the whole (:class:`circuitx.engine.Engine`), and
        ``first_prompt`` is the index of its first prompt there."""
        if ablation not in ABLATIONS:
            raise CircuitxError(
                f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}"
            )
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.ablation, self.first_prompt = ablation, first_prompt
        self.layout = model.layout
        self.end = data.positions["END"]
        self.readout = data.readout_positions  # [n, P]: the metric's rows are n * P
        self.tokens_per_pass = tokens_per_pass or TOKENS_PER_PASS.get(model.device.type, 2048)
        outputs = [EMBED_OUTPUT_HOOK, *model.output_hooks(), *model.scale_hooks()]
        resids = [resid_pre_hook(layer) for layer in range(1, model.n_layers)]
        clean_final, self.clean_cache = model.run_with_cache(
            data.clean, [*outputs, *resids, LOGITS_INPUT_HOOK], self.readout
        )
        self.clean_final = clean_final.flatten(0, 1)  # [n * P, vocab]
        self.clean_resid_final = self.clean_cache.pop(LOGITS_INPUT_HOOK)
        corrupted_final, self.corrupted_cache = model.run_with_cache(
            data.corrupted, outputs, self.readout
        )
        self.corrupted_final = corrupted_final.flatten(0, 1)
        # a head's output is its z over the post-attention norm's scale, where there is
        # one: then it times head_write_weights is what the head writes (see _MaskedPass)
        for cache in (self.clean_cache, self.corrupted_cache):
            for layer in range(model.n_layers):
                cache[head_output_hook(layer)] = model.head_outputs(cache, layer)
            for name in model.scale_hooks():
                del cache[name]
        self.patch_cache = patch_values or {
            name: ablate(
                value, ablation, model.zero_embedding if name == EMBED_OUTPUT_HOOK else None
            )
            for name, value in self.corrupted_cache.items()
        }
        self.clean_metric, self.corrupted_metric = reference or (
            float(self.metric(self.clean_final).mean()),
            float(self.metric(self.corrupted_final).mean()),
        )
        # float32 whatever the model's dtype, as the caches (Model.run_with_cache)
        self.w_o = [model.head_write_weights(layer).float() for layer in range(model.n_layers)]

    # ------------------------------------------------------------------ metrics

    def metric(self, final: torch.Tensor) -> torch.Tensor:
        """Per-prompt task metric of END logits [..., n, vocab]."""
        return self.task.metric(self.metric_name, final, self.data, self.clean_final)

    def release(self) -> None:
        """Free the cached runs: a part of a larger batch that is done with (using it
        after this is an error)."""
        for name in (
            "clean_cache",
            "corrupted_cache",
            "patch_cache",
            "clean_final",
            "corrupted_final",
            "clean_resid_final",
            "clean_deltas",
        ):
            self.__dict__.pop(name, None)

    def accuracy(self, corrupted: bool = False) -> float:
        """Share of the prompts the model answers right, clean or corrupted."""
        final = self.corrupted_final if corrupted else self.clean_final
        return self.task.accuracy(final, self.data)

    @property
    def gap(self) -> float:
        """clean - corrupted metric; an error when there is no effect to attribute."""
        return effect_gap(self.clean_metric, self.corrupted_metric, self.metric_name)

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
        EAP-IG over the inputs. The edge mask's gradient is one product of the senders'
        differences and the gradients at every receiver's input, taken as the backward pass
        reaches each receiver (the gradients themselves are never all held at once).
        """
        node_mask = torch.ones(1, self.layout.n_senders, requires_grad=True)
        deltas = self.clean_deltas
        by_receiver = torch.zeros(
            self.layout.n_receivers, self.layout.n_senders, device=deltas.device
        )
        final = self.run(node_mask, grad=True, mix=mix, edge_grads=by_receiver)
        self.metric(final).mean().backward()
        edge_grad = by_receiver.T
        return node_mask.grad[0], edge_grad * self.layout.valid.to(edge_grad.device)

    # ------------------------------------------------------------------ the masked pass

    def run(
        self,
        node_mask: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        grad: bool = False,
        mix: float | None = None,
        edge_grads: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Readout logits [k, n * P, vocab] (END alone: P = 1) of the clean prompts under
        k node masks [k, n_senders] and/or k edge masks [k, n_senders, n_receivers] (None:
        all ones).

        With ``edge_grads`` [n_receivers, n_senders] (and ``grad``, k = 1), the backward
        pass writes into each receiver's row the gradient at its input times every
        sender's clean difference (:attr:`clean_deltas`): the edge mask's gradient.

        With ``grad`` (or ``mix``, see :meth:`mask_gradients`) the pass starts at the
        embeddings and the sender differences are frozen at the clean run's, which gives
        the exact gradients at all-ones masks; otherwise the differences are those of
        this pass, and the pass starts at the first layer a mask changes.
        """
        given = node_mask if node_mask is not None else edge_mask
        k = 1 if given is None else given.shape[0]
        device = self.model.device
        node_mask = None if node_mask is None else node_mask.to(device)
        edge_mask = None if edge_mask is None else edge_mask.to(device)
        frozen = grad or mix is not None
        layer = 0 if frozen else self._first_changed_layer(node_mask, edge_mask)
        pass_ = _MaskedPass(self, k, layer, node_mask, edge_mask, mix, frozen, edge_grads)
        resid = pass_.start()
        tokens = self.data.clean.repeat(k, 1)
        flags = EDGE_HOOK_FLAGS if edge_mask is not None or edge_grads is not None else ()
        with self.model.hooks_enabled(flags):
            final = self.model.run_from(
                layer, resid, tokens, pass_.hooks(), self.readout.repeat(k, 1), grad=grad
            )
        return final.view(k, self.clean_final.shape[0], -1)

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

    def clean_resid(self, layer: int) -> torch.Tensor:
        """The clean run's residual stream entering block ``layer`` (``n_layers``: the final
        LayerNorm) [n, pos, d_model]."""
        if layer == self.layout.n_layers:
            return self.clean_resid_final
        return self.clean_cache[EMBED_OUTPUT_HOOK if layer == 0 else resid_pre_hook(layer)]

    def mean_writes(self, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        """What each sender writes to the residual stream, averaged over each prompt's tokens
        (BOS to END; padding left out), from a run's cached outputs: [n, n_senders, d_model]."""
        n, width = self.data.clean.shape
        real = torch.arange(width, device=self.end.device) <= self.end.unsqueeze(1)
        weights = real.float() / real.sum(1, keepdim=True)
        writes = torch.empty(n, self.layout.n_senders, self.model.d_model, device=self.model.device)
        for chunk in self.layout.chunks:
            out = cache[sender_output_hook(chunk)]
            mean = torch.einsum("np,np...->n...", weights.to(out), out)
            if chunk.heads:
                mean = torch.einsum("nse,sed->nsd", mean, self.w_o[chunk.layer])
            writes[:, chunk.first : chunk.first + chunk.count] = mean.reshape(n, chunk.count, -1)
        return writes

    @cached_property
    def clean_deltas(self) -> torch.Tensor:
        """clean - patch output of every sender in the residual basis, senders last:
        [n * pos * d_model, n_senders]."""
        n, width = self.data.clean.shape
        matrix = torch.empty(n, width, self.model.d_model, self.layout.n_senders)
        for chunk in self.layout.chunks:
            hook = sender_output_hook(chunk)
            delta = self.clean_cache[hook] - self.patch_cache[hook]
            if not chunk.heads:
                delta = delta.unsqueeze(-2)
            else:
                delta = torch.einsum("npse,sed->npsd", delta, self.w_o[chunk.layer])
            matrix[..., chunk.first : chunk.first + chunk.count] = delta.transpose(-1, -2)
        return matrix.flatten(0, 2)


class _MaskedPass:
    """The hooks of one masked forward pass from block ``layer`` on, and what they record.

    The differences out - patch of the senders before the pass starts (all of them when
    ``frozen``) are the engine's clean ones; those of later senders are written, as the
    pass computes them, into a buffer [k, n * pos * d, senders] of this pass.
    """

    def __init__(
        self,
        engine: PatchingEngine,
        k: int,
        layer: int,
        node_mask: torch.Tensor | None,
        edge_mask: torch.Tensor | None,
        mix: float | None,
        frozen: bool,
        edge_grads: torch.Tensor | None = None,
    ) -> None:
        self.engine, self.k, self.layer, self.n = engine, k, layer, engine.data.n_prompts
        self.edge_grads = edge_grads
        self.layout = layout = engine.layout
        self.node_mask, self.mix, self.frozen = node_mask, mix, frozen
        self.edge_weight = None  # [k, senders, receivers]: how much of each edge is patched
        if edge_mask is not None:  # entries of no edge (sender after receiver) patch nothing
            self.edge_weight = (1.0 - edge_mask) * layout.valid.to(edge_mask.device)
        self.first_live = layout.n_senders if frozen else layout.head_sender(layer)
        # the live senders some patched edge leaves, and their columns in the buffer
        self.live: torch.Tensor | None = None
        self.live_column = torch.full((layout.n_senders,), -1)
        if self.edge_weight is not None:
            patched = self.edge_weight.any(2).any(0).cpu()
            patched[: self.first_live] = False
            needed = patched.nonzero().flatten()
            if len(needed):
                self.live_column[needed] = torch.arange(len(needed))
                self.live = torch.empty(k, engine.clean_deltas.shape[0], len(needed))

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
        edges = self.edge_weight is not None or self.edge_grads is not None
        if self.node_mask is None and not edges and self.mix is None:
            return hooks
        for chunk in layout.chunks_from(self.layer):
            layer = chunk.layer
            if chunk.heads and edges:
                for head_input in HEAD_INPUTS:
                    hook = self._heads_in(layer, head_input)
                    hooks.append((head_input_hook(layer, head_input), hook))
            if not chunk.heads and edges:
                hooks.append((mlp_input_hook(layer), self._single_in(layout.mlp_receiver(layer))))
            if self.node_mask is not None or (self.live is not None and not self.frozen):
                if chunk.heads and self.engine.model.post_attention_norm:
                    hooks += self._normed_heads_hooks(chunk)
                else:
                    hooks.append((sender_output_hook(chunk), self._sender_hook(chunk)))
        if edges:
            hooks.append((LOGITS_INPUT_HOOK, self._single_in(layout.logits_receiver)))
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
            change = (self._apply(chunk, x) - x).float()
            written = torch.einsum("knpse,sed->knpd", change, self.engine.w_o[layer])
            return out + written.reshape(out.shape).to(out.dtype)

        return [
            (head_output_hook(layer), keep("z")),
            (post_attention_scale_hook(layer), keep("scale")),
            (attention_output_hook(layer), mask),
        ]

    def _apply(self, chunk: SenderChunk, x: torch.Tensor) -> torch.Tensor:
        """A chunk's output [k, n, pos, s, e] under the node mask (and ``mix``), recording
        its difference from the patch value in this pass's buffer."""
        engine = self.engine
        hook = sender_output_hook(chunk)
        clean, patch = engine.clean_cache[hook], engine.patch_cache[hook]
        if not chunk.heads:
            clean, patch = clean.unsqueeze(-2), patch.unsqueeze(-2)
        if self.mix is not None and chunk.first == 0:
            x = (patch + self.mix * (clean - patch)).to(x.dtype).expand_as(x)
        delta = (clean - patch).to(x.dtype) if self.frozen else x - patch.to(x.dtype)
        if self.node_mask is not None:
            keep = self.node_mask[:, chunk.first : chunk.first + chunk.count].to(x.dtype)
            keep = keep.view(self.k, 1, 1, -1, 1)
            x = x - (1.0 - keep) * delta
            delta = keep * delta
        columns = self.live_column[chunk.first : chunk.first + chunk.count]
        if bool((columns >= 0).any()):
            wanted = (columns >= 0).nonzero().flatten()
            delta = delta[..., wanted.to(delta.device), :].float()
            if chunk.heads:
                w_o = engine.w_o[chunk.layer][wanted.to(delta.device)]
                delta = torch.einsum("knpse,sed->knpds", delta, w_o)
            else:
                delta = delta.transpose(-1, -2)
            self.live[:, :, columns[wanted]] = delta.reshape(self.k, -1, len(wanted))
        return x

    def _correction(self, receivers: slice) -> torch.Tensor | None:
        """sum_s weight[s, r] * delta_s for the receivers in ``receivers``: [k, n, pos, r, d]."""
        readable = self.layout.readable(receivers.start)
        weight = self.edge_weight[:, :readable, receivers]  # [k, senders, r]
        k, r = self.k, weight.shape[-1]
        if weight.requires_grad:
            active = torch.arange(readable)
        else:
            active = weight.any(2).any(0).nonzero().flatten().cpu()
            if len(active) == 0:
                return None
        total = None
        fixed, live = active[active < self.first_live], active[active >= self.first_live]
        if len(fixed):
            deltas = _columns(self.engine.clean_deltas, fixed)
            w = _columns(weight.transpose(0, 1), fixed, dim=0).transpose(0, 1)
            w = w.permute(1, 0, 2).reshape(len(fixed), k * r)
            total = (deltas.to(w.dtype) @ w).view(-1, k, r).permute(1, 0, 2)  # [k, rows, r]
        if len(live):
            deltas = _columns(self.live, self.live_column[live])
            w = _columns(weight.transpose(0, 1), live, dim=0).transpose(0, 1)
            term = torch.bmm(deltas, w.to(deltas.dtype))
            total = term if total is None else total + term
        n, width, d = self.n, self.engine.data.clean.shape[1], self.engine.model.d_model
        return total.reshape(k, n, width, d, r).transpose(-1, -2)

    def _heads_in(self, layer: int, head_input: str) -> Callable:
        """Subtract the patched edges' differences from each head's q, k or v input."""
        first = self.layout.head_receiver(layer, head_input)
        return self._single_in(first, self.layout.n_heads)

    def _single_in(self, receiver: int, count: int = 1) -> Callable:
        """Subtract the patched edges' differences from the input of receivers
        ``receiver .. receiver + count - 1`` (the heads of a layer, an MLP, the logits)."""

        def hook(x: torch.Tensor) -> torch.Tensor:
            if self.edge_weight is not None:
                correction = self._correction(slice(receiver, receiver + count))
                if correction is not None:
                    x = x - correction.reshape(x.shape).to(x.dtype)
            if self.edge_grads is not None:
                x = x.view_as(x)  # its own node: the MLP's input is also the residual stream
                x.register_hook(self._store_grad(receiver, count))
            return x

        return hook

    def _store_grad(self, receiver: int, count: int) -> Callable:
        """A tensor hook writing the gradient at receivers' inputs, times every sender's
        clean difference, into ``edge_grads``."""

        def hook(grad: torch.Tensor) -> None:
            rows = (
                grad.movedim(2, 0) if grad.dim() == 4 else grad.unsqueeze(0)
            )  # [count, n, pos, d]
            deltas = self.engine.clean_deltas
            products = rows.reshape(count, -1).to(deltas.dtype) @ deltas
            self.edge_grads[receiver : receiver + count] = products

        return hook


def _columns(tensor: torch.Tensor, index: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``tensor``'s entries ``index`` (ascending) along ``dim``: a view when they are a run."""
    first, last = int(index[0]), int(index[-1])
    if last - first + 1 == len(index):
        return tensor.narrow(dim, first, len(index))
    return tensor.index_select(dim, index.to(tensor.device))


def effect_gap(clean: float, corrupted: float, metric: str) -> float:
    """clean - corrupted metric; an error when there is no effect to attribute."""
    gap = clean - corrupted
    if abs(gap) < 1e-9:
        raise CircuitxError(
            f"clean and corrupted prompts give the same {metric} ({clean:.3g}); "
            "there is no effect to attribute"
        )
    return gap


def ablate(
    corrupted: torch.Tensor, ablation: str, zero: torch.Tensor | None = None
) -> torch.Tensor:
    """The patch value of a sender output [n, pos, ...] under ``ablation``; ``zero`` is
    what "zero" leaves (the embeddings of a tracr model keep their anchor)."""
    if ablation == "mean":
        return corrupted.mean(0, keepdim=True)
    if ablation == "zero":
        empty = torch.zeros_like(corrupted[:1])
        return empty if zero is None else empty + zero.to(empty)
    return corrupted
