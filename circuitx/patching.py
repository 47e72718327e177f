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
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.layout import Layout, PositionLayout, SenderChunk
from circuitx.models import (
    EDGE_HOOK_FLAGS,
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    HeadReads,
    Model,
    attention_output_hook,
    attention_pattern_hook,
    head_input_hook,
    head_output_hook,
    head_vector_hook,
    mlp_input_hook,
    mlp_output_hook,
    post_attention_scale_hook,
    resid_pre_hook,
    sender_output_hook,
)
from circuitx.names import HEAD_INPUTS
from circuitx.position_pass import Mix, PositionPass, position_weights
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
        held: torch.Tensor | None = None,
        layout: Layout | None = None,
    ) -> None:
        """``reference``: the clean and corrupted metrics effects are measured against
        (default: this batch's); ``patch_values``: every sender output's patch value
        (default: from this batch's corrupted run by ``ablation``). A part of a larger
        batch takes both from the whole (:class:`circuitx.engine.Engine`), and
        ``first_prompt`` is the index of its first prompt there. ``held`` [n_senders]
        (bool): senders that carry their patch values in every run, the clean one
        included (a circuit found, so that what backs it up shows; see :meth:`_hold`):
        effects are then measured from the held clean run's metric, in units of the
        unheld clean - corrupted gap (without a ``reference``)."""
        if ablation not in ABLATIONS:
            raise CircuitxError(
                f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}"
            )
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.ablation, self.first_prompt = ablation, first_prompt
        self.layout = layout or model.layout
        if isinstance(self.layout, PositionLayout):  # a circuit over token positions
            if held is not None and bool(held[1:].any()):
                raise CircuitxError("--backup-rounds works on circuits without positions")
            self.position_weights = position_weights(model)
            self.group_index = data.group_index(self.layout.positions).to(model.device)
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
        self.held_mask: torch.Tensor | None = None  # 0 where a sender is held, else 1
        if held is not None and bool(held[1:].any()):
            self._hold(held, [*outputs, *resids, LOGITS_INPUT_HOOK])
            if reference is None:  # effects from the held clean run, in the gap's units
                gap = self.clean_metric - self.corrupted_metric
                self.clean_metric = float(self.metric(self.clean_final).mean())
                self.corrupted_metric = self.clean_metric - gap

    def _hold(self, held: torch.Tensor, names: Sequence[str]) -> None:
        """Make the clean run the one with the ``held`` senders at their patch values: the
        cache is re-read from a pass that masks them (kept as it was before the first
        held layer), their own outputs are their patch values, and every later pass with
        live differences masks them too (a frozen pass needs nothing: their clean -
        patch differences are now 0)."""
        keep = (~held.cpu()).float()
        keep[0] = 1.0  # the embeddings are never held
        seen: dict[str, torch.Tensor] = {}

        def record(name: str) -> Callable:
            def hook(x: torch.Tensor) -> torch.Tensor:
                seen[name] = x.detach().to(torch.float32, copy=True)
                return x

            return hook

        with torch.no_grad():
            final = self.run(keep.unsqueeze(0), extra_hooks=[(n, record(n)) for n in names])
        self.clean_final = final[0]
        self.clean_resid_final = seen.pop(LOGITS_INPUT_HOOK, self.clean_resid_final)
        for layer in range(self.model.n_layers):
            if head_output_hook(layer) in seen:
                seen[head_output_hook(layer)] = self.model.head_outputs(seen, layer)
        for name in self.model.scale_hooks():
            seen.pop(name, None)
        self.clean_cache.update(seen)
        for chunk in self.layout.chunks:  # the held senders' outputs: their patch values
            hook = sender_output_hook(chunk)
            held_here = (keep[chunk.first : chunk.first + chunk.count] == 0).to(self.model.device)
            if not bool(held_here.any()) or hook not in self.clean_cache:
                continue
            where = held_here.view(-1, 1) if chunk.heads else held_here.view(1)
            value, patch = self.clean_cache[hook], self.patch_cache[hook]
            self.clean_cache[hook] = torch.where(where, patch.expand_as(value), value)
        self.held_mask = keep.to(self.model.device)
        self.forget_deltas()  # made from the old cache

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
        ):
            self.__dict__.pop(name, None)
        self.forget_deltas()

    def forget_deltas(self) -> None:
        """Free the senders' differences in the residual basis (:attr:`sender_deltas`,
        :attr:`clean_deltas` and their totals), which are made again from the caches when
        next read."""
        for name in ("clean_deltas", "sender_deltas", "clean_delta_totals"):
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
        """(clean - patched) / (clean - corrupted): 1 where a patch removes the whole effect;
        raw, rounding and all (the certificate reports it so; the methods take the
        :class:`~circuitx.engine.Engine`'s, which counts rounding as no change)."""
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

    def edge_mask_metrics(self, masks: torch.Tensor, complement: bool = False) -> torch.Tensor:
        """Mean metric [k] under each of k edge masks [k, n_senders, n_receivers].

        With ``complement`` a receiver that keeps fewer of its edges than it patches reads
        the fully patched input plus the kept edges' differences: far cheaper for a small
        circuit, equal in exact arithmetic but not bit for bit (an edge whose removal
        changes nothing may then change the metric by a rounding error, which matters to
        a method that ranks such edges, so methods leave it off)."""
        return self.mean_metrics(
            list(range(len(masks))), lambda chunk: (None, masks[chunk]), complement=complement
        )

    def mean_metrics(
        self,
        items: Sequence,
        masks: Callable[[Sequence], tuple[torch.Tensor | None, torch.Tensor | None]],
        layer_of: Callable[[Any], int] | None = None,
        advance: Advance = no_progress,
        complement: bool = False,
    ) -> torch.Tensor:
        """Mean metric per item, ``masks(chunk)`` giving the node and edge masks of a chunk;
        as many items per forward pass as ``tokens_per_pass`` allows, grouped by the layer
        (``layer_of``) their passes start at."""
        n, width = self.data.clean.shape
        copies = max(1, self.tokens_per_pass // (n * width))
        order = list(range(len(items)))
        if layer_of is not None:
            order.sort(key=lambda i: layer_of(items[i]))
        results = torch.empty(len(items), device=self.model.device)  # read back once
        for start in range(0, len(items), copies):
            chunk = order[start : start + copies]
            node_mask, edge_mask = masks([items[i] for i in chunk])
            final = self.run(node_mask=node_mask, edge_mask=edge_mask, complement=complement)
            results[chunk] = self.metric(final).mean(-1).to(results.dtype)
            advance(len(chunk))
        return results.cpu()

    # ------------------------------------------------------------------ gradients

    def mask_gradients(
        self, mixes: Sequence[Mix | None] = (None,), advance: Advance = no_progress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of the mean metric with respect to the node mask [n_senders] and the edge
        mask [n_senders, n_receivers], both at all ones, summed over one backward pass
        per entry of ``mixes``.

        With ``None`` the pass is the clean run and the gradients are EAP's
        ``(out_s - patch_s) . d metric / d input_r``. With ``(first, a)`` the chunk whose
        first sender is ``first`` writes ``patch + a (clean - patch)``, a constant (no
        gradient reaches what it reads), and the differences stay the clean run's: the
        embeddings (``first`` 0) as in EAP-IG over the inputs, any chunk as in EAP-IG over
        the activations. The edge mask's gradient is the product of the senders'
        differences and the gradients at every receiver's input: for one pass, taken as
        the backward pass reaches a layer's worth of receivers (the gradients are never
        all held at once); for several, the gradients are summed over the passes first [n_receivers,
        n * pos * d_model] and multiplied once.
        """
        if len(mixes) == 1:
            found = self.dropped_gradients([None], mix=mixes[0], advance=advance)
            return found.nodes[0], found.edges[0]
        node_mask = torch.ones(1, self.layout.n_senders, requires_grad=True)
        deltas = self.clean_deltas
        sums = torch.zeros(self.layout.n_receivers, deltas.shape[1], device=deltas.device)

        def record(first: int, rows: torch.Tensor) -> None:
            sums[first : first + len(rows)] += rows.to(sums.dtype)

        for mix in mixes:
            final = self.run(node_mask, grad=True, mix=mix, record_grads=record)
            self.metric(final).mean().backward()
            advance(1)
        edge_grad = (sums @ deltas.T).T
        return node_mask.grad[0], edge_grad * self.layout.valid.to(edge_grad.device)

    def dropped_gradients(
        self,
        drops: Sequence[int | None],
        patterns: bool = False,
        mix: Mix | None = None,
        advance: Advance = no_progress,
    ) -> Attributions:
        """EAP's gradients (:meth:`mask_gradients` at the clean run) once per entry of
        ``drops``, from one forward pass and a backward pass each: None the plain gradient,
        a layer l the gradient with what flows back through block l's writes to the
        residual stream (its heads' and its MLP's outputs) set to zero, AtP*'s GradDrop.
        Then a node of block l, and a receiver of block l, get a zero gradient; a later
        one loses the paths through block l. With ``patterns`` also the gradient at every
        layer's attention pattern. ``mix``: the pass's interpolation, as in
        :meth:`mask_gradients`."""
        layout = self.layout
        deltas = self.clean_deltas
        node_mask = torch.ones(1, layout.n_senders, requires_grad=True)
        products = _ReceiverProducts(layout, deltas)
        dropped: list[int | None] = [None]
        at_patterns: dict[int, torch.Tensor] = {}

        def drop(layer: int) -> Callable:
            def hook(out: torch.Tensor) -> torch.Tensor:
                out = out.view_as(out)
                out.register_hook(lambda g: torch.zeros_like(g) if dropped[0] == layer else None)
                return out

            return hook

        extra = []
        for layer in sorted({d for d in drops if d is not None}):
            extra.append((attention_output_hook(layer), drop(layer)))
            if layout.has_mlp:
                extra.append((mlp_output_hook(layer), drop(layer)))

        def keep_pattern(layer: int, grad: torch.Tensor) -> None:
            at_patterns[layer] = grad.float()

        final = self.run(
            node_mask, grad=True, mix=mix, record_grads=products.record, extra_hooks=extra,
            pattern_grads=keep_pattern if patterns else None,
        )  # fmt: skip
        metric = self.metric(final).mean()
        valid = layout.valid.to(deltas.device)
        nodes, edges, pattern_grads = [], [], []
        for index, layer in enumerate(drops):
            dropped[0] = layer
            node_mask.grad = None
            at_patterns.clear()
            metric.backward(retain_graph=index + 1 < len(drops))
            nodes.append(node_mask.grad[0])
            edges.append(products.take().T * valid)
            if patterns:
                n, width = self.data.clean.shape
                empty = torch.zeros(n, layout.n_heads, width, width, device=deltas.device)
                pattern_grads.append([at_patterns.get(at, empty) for at in range(layout.n_layers)])
            advance(1)
        return Attributions(torch.stack(nodes), torch.stack(edges), pattern_grads or None)

    def gate_gradients(self) -> torch.Tensor:
        """Each prompt's metric's gradient with respect to each sender's gate at 1 (a node
        mask entry of that prompt alone: 1 its clean output, 0 its patch value),
        [n_prompts, n_senders]: one forward and one backward pass of the clean run."""
        gates = torch.ones(1, self.data.n_prompts, self.layout.n_senders, requires_grad=True)
        final = self.run(gates, grad=True)
        self.metric(final).sum().backward()
        return gates.grad[0]

    # ------------------------------------------------------------------ the masked pass

    def run(
        self,
        node_mask: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        grad: bool = False,
        mix: Mix | None = None,
        record_grads: Callable[[int, torch.Tensor], None] | None = None,
        complement: bool = False,
        train: bool = False,
        extra_hooks: Sequence[tuple[str, Callable]] = (),
        pattern_grads: Callable[[int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Readout logits [k, n * P, vocab] (END alone: P = 1) of the clean prompts under
        k node masks [k, n_senders] (or one per prompt, [k, n, n_senders]) and/or k edge
        masks [k, n_senders, n_receivers] (None: all ones).

        With ``record_grads`` (and ``grad``, k = 1), the backward pass calls it with the
        first of some receivers and the gradients at their inputs [count, n * pos * d].

        With ``grad`` (or ``mix``, see :meth:`mask_gradients`) the pass starts at the
        embeddings and the sender differences are frozen at the clean run's, which gives
        the exact gradients at all-ones masks; otherwise the differences are those of
        this pass, and the pass starts at the first layer a mask changes. With ``train``
        the pass starts at the embeddings, keeps the autograd graph and its differences
        are its own: the gradients at any masks, for masks that are learned. ``complement``:
        see :meth:`edge_mask_metrics`. ``extra_hooks`` run after the pass's own.
        ``pattern_grads(layer, grad)`` hears the gradient at each layer's attention
        pattern [n, head, query, key] in the backward pass.
        """
        given = node_mask if node_mask is not None else edge_mask
        k = 1 if given is None else given.shape[0]
        device = self.model.device
        # the pass is planned on the host, from the masks as given (read back once where
        # they were made on the device)
        host_nodes = None if node_mask is None else node_mask.detach().cpu()
        host_edges = None if edge_mask is None else edge_mask.detach().cpu()
        node_mask = None if node_mask is None else node_mask.to(device)
        edge_mask = None if edge_mask is None else edge_mask.to(device)
        frozen = (grad and not train) or mix is not None
        grad = grad or train
        layer = 0 if grad or frozen else self._first_changed_layer(host_nodes, host_edges)
        if self.held_mask is not None and not frozen:  # the held senders stay patched
            held = self.held_mask if node_mask is None else self.held_mask.to(node_mask.dtype)
            node_mask = held.expand(k, -1) if node_mask is None else node_mask * held
        reads = self.head_reads if record_grads is not None and edge_mask is None else None
        if isinstance(self.layout, PositionLayout):
            reads = None
            pass_: _MaskedPass | PositionPass = PositionPass(
                self, k, layer, node_mask, edge_mask, mix, frozen, record_grads, host_edges,
                pattern_grads,
            )  # fmt: skip
        else:
            pass_ = _MaskedPass(
                self, k, layer, node_mask, edge_mask, mix, frozen, record_grads, complement,
                reads, host_edges,
            )  # fmt: skip
        resid = pass_.start()
        tokens = self.data.clean.repeat(k, 1)
        flags = EDGE_HOOK_FLAGS if edge_mask is not None or record_grads is not None else ()
        if reads is not None:  # each head's input gradient from its q, k and v ones
            flags = tuple(flag for flag in flags if flag != "split_qkv")
        hooks = [*pass_.hooks(), *extra_hooks]
        if pattern_grads is not None and not isinstance(self.layout, PositionLayout):
            hooks += [(attention_pattern_hook(at), _pattern_grad_hook(at, pattern_grads))
                      for at in range(layer, self.layout.n_layers)]  # fmt: skip
        with self.model.hooks_enabled(flags):
            final = self.model.run_from(
                layer, resid, tokens, hooks, self.readout.repeat(k, 1), grad=grad
            )
        return final.view(k, self.clean_final.shape[0], -1)

    @cached_property
    def head_reads(self) -> HeadReads | None:
        """How the heads read the residual stream, where the model says (see
        :attr:`circuitx.models.Model.head_reads`); a test sets it None for the split pass."""
        return self.model.head_reads

    def _first_changed_layer(
        self, node_mask: torch.Tensor | None, edge_mask: torch.Tensor | None
    ) -> int:
        """The first layer whose blocks see anything but the clean run."""
        layout, first = self.layout, self.layout.n_layers
        if node_mask is not None:
            changed = (node_mask != 1).any(0).nonzero().flatten().tolist()
            first = min([first, *(layout.sender_layer(s) for s in changed)])
        if edge_mask is not None:
            changed = ((edge_mask != 1).any(0) & layout.valid).any(0)
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

    def writes_at(self, cache: dict[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
        """What each sender writes to the residual stream at each prompt's ``positions``
        [n, P], from a run's cached outputs: [n, n_senders, P, d_model]."""
        n, count = positions.shape
        shape = (n, self.layout.n_senders, count, self.model.d_model)
        writes = torch.empty(shape, device=self.model.device)
        rows = torch.arange(n, device=self.model.device).unsqueeze(1)
        at = positions.to(self.model.device)
        for chunk in self.layout.chunks:
            out = cache[sender_output_hook(chunk)][rows, at]  # [n, P, ...]
            if chunk.heads:
                out = torch.einsum("npse,sed->nspd", out, self.w_o[chunk.layer])
            else:
                out = out.unsqueeze(1)
            writes[:, chunk.first : chunk.first + chunk.count] = out
        return writes

    @cached_property
    def clean_deltas(self) -> torch.Tensor:
        """clean - patch output of every sender in the residual basis, one row per sender:
        [n_senders, n * pos * d_model]. Over positions, a sender at a group's row is its
        difference at that group's tokens (zero at the others)."""
        if self.group_onehot is None:
            return self.sender_deltas.flatten(1)
        rows = torch.einsum("snpd,npg->sgnpd", self.sender_deltas, self.group_onehot)
        return rows.reshape(self.layout.n_senders, -1)

    @cached_property
    def group_onehot(self) -> torch.Tensor | None:
        """[n, pos, G]: 1 at each token's position group (None: no positions)."""
        if not isinstance(self.layout, PositionLayout):
            return None
        return torch.nn.functional.one_hot(self.group_index, self.layout.n_groups).float()

    @cached_property
    def sender_deltas(self) -> torch.Tensor:
        """clean - patch output of every model sender in the residual basis: [senders, n,
        pos, d_model]."""
        n, width = self.data.clean.shape
        layout = self.layout.base
        shape = (layout.n_senders, n, width, self.model.d_model)
        matrix = torch.empty(shape, device=self.model.device)
        for chunk in layout.chunks:
            hook = sender_output_hook(chunk)
            delta = self.clean_cache[hook] - self.patch_cache[hook]
            if not chunk.heads:
                delta = delta.unsqueeze(-2)
            else:
                delta = torch.einsum("npse,sed->npsd", delta, self.w_o[chunk.layer])
            matrix[chunk.first : chunk.first + chunk.count] = delta.movedim(-2, 0)
        return matrix

    def fixed_total(self, senders: int) -> torch.Tensor:
        """The sum of the first ``senders`` rows of :attr:`clean_deltas` [n * pos * d_model]."""
        totals = self.__dict__.setdefault("clean_delta_totals", {})
        if senders not in totals:
            totals[senders] = self.clean_deltas[:senders].sum(0)
        return totals[senders]


@dataclass
class Attributions:
    """Gradients of one backward pass per GradDrop setting (see
    :meth:`PatchingEngine.dropped_gradients`): of the node mask [D, n_senders], of the
    edge mask [D, n_senders, n_receivers] and, where asked for, at each layer's attention
    pattern (per pass, a list over layers of [n, head, query, key])."""

    nodes: torch.Tensor
    edges: torch.Tensor
    patterns: list[list[torch.Tensor]] | None = None


class _ReceiverProducts:
    """The edge-mask gradient of one backward pass, [n_receivers, n_senders]: the
    gradients at a layer's worth of receivers' inputs are multiplied by the senders'
    differences as the backward pass reaches them (one read of the differences per layer;
    the gradients are never all held at once, and the buffer is reused)."""

    def __init__(self, layout: Layout, deltas: torch.Tensor) -> None:
        self.layout, self.deltas, device = layout, deltas, deltas.device
        self.by_receiver = torch.zeros(layout.n_receivers, layout.n_senders, device=device)
        width = layout.receivers_per_layer
        self.buffer = torch.empty(width, deltas.shape[1], device=device, dtype=deltas.dtype)
        self.pending: list[tuple[int, int]] = []  # (first receiver, how many)

    def _filled(self) -> int:
        return sum(count for _, count in self.pending)

    def _flush(self) -> None:
        # the senders the pending receivers can read: a prefix of the sender axis
        readable = max(self.layout.readable(first + count - 1) for first, count in self.pending)
        products = self.buffer[: self._filled()] @ self.deltas[:readable].T
        at = 0
        for first, count in self.pending:
            self.by_receiver[first : first + count, :readable] = products[at : at + count]
            at += count
        self.pending.clear()

    def record(self, first: int, rows: torch.Tensor) -> None:
        filled = self._filled()
        if filled + len(rows) > len(self.buffer):
            self._flush()
            filled = 0
        self.buffer[filled : filled + len(rows)] = rows
        self.pending.append((first, len(rows)))

    def take(self) -> torch.Tensor:
        """The products so far; the next backward pass starts from zeros."""
        if self.pending:
            self._flush()
        done = self.by_receiver
        self.by_receiver = torch.zeros_like(done)
        return done


class _MaskedPass:
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
    """

    def __init__(
        self,
        engine: PatchingEngine,
        k: int,
        layer: int,
        node_mask: torch.Tensor | None,
        edge_mask: torch.Tensor | None,
        mix: Mix | None,
        frozen: bool,
        record_grads: Callable[[int, torch.Tensor], None] | None = None,
        complement: bool = False,
        reads: HeadReads | None = None,
        host_edges: torch.Tensor | None = None,  # edge_mask's copy on the host
    ) -> None:
        self.reads, self.norms = reads, {}  # layer -> its heads' normed input and scale
        self.engine, self.k, self.layer, self.n = engine, k, layer, engine.data.n_prompts
        self.record_grads = record_grads
        self.layout = layout = engine.layout
        self.node_mask, self.mix, self.frozen = node_mask, mix, frozen
        self.first_live = layout.n_senders if frozen else layout.head_sender(layer)
        self.groups: dict[int, _Group] = {}  # by first receiver
        self.live_column = torch.full((layout.n_senders,), -1)
        self.live: torch.Tensor | None = None
        self.in_blocks = False  # the live differences kept as each chunk's block (_plan)
        self.blocks: list[tuple[int, torch.Tensor]] = []  # (first column, [k, c, rows])
        self.total: torch.Tensor | None = None  # [k, rows]: every live difference so far
        self.last_total: tuple[int, torch.Tensor] | None = None  # (first sender, its chunk's)
        if edge_mask is not None:
            self._plan(edge_mask, host_edges, complement)

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
            self.groups[first] = _Group(
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
                self.live = torch.empty(self.k, len(needed), rows, device=self.engine.model.device)
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
        if self.node_mask is None and not edges and self.mix is None:
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
            if self.node_mask is not None or (records and not self.frozen):
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
        its differences from the patch values that later receivers read."""
        engine = self.engine
        hook = sender_output_hook(chunk)
        clean, patch = engine.clean_cache[hook], engine.patch_cache[hook]
        if not chunk.heads:
            clean, patch = clean.unsqueeze(-2), patch.unsqueeze(-2)
        if self.mix is not None and chunk.first == self.mix[0]:
            x = (patch + self.mix[1] * (clean - patch)).to(x.dtype).expand_as(x)
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
                total = delta.float().flatten(-2) @ engine.w_o[chunk.layer].flatten(0, 1)
            else:
                total = delta.float().squeeze(-2)
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
                rows = delta[at].float().flatten(0, 1).transpose(0, 1)  # [s, n * pos, e]
                target = out[at].view(s, -1, d)
                if w_o is None:
                    target.copy_(rows)
                else:
                    torch.bmm(rows, w_o, out=target)
            return out
        if w_o is None:
            made = delta.float().movedim(-2, 1).reshape(k, s, -1)
        else:
            made = torch.einsum("knpse,sed->ksnpd", delta.float(), w_o).reshape(k, s, -1)
        return made if out is None else out.copy_(made)

    def _correction(self, group: _Group) -> torch.Tensor | None:
        """sum over the group's active senders s of weight[s, r] * delta_s: [k, r, rows]
        (None when it has none)."""
        k, count, rows = self.k, group.count, self.engine.clean_deltas.shape[1]
        active, weight = group.active, group.weight
        total = None
        fixed, live = active[active < self.first_live], active[active >= self.first_live]
        if len(fixed):
            fixed = _span(fixed)  # a few zero weights cost less than copying rows out
            w = _columns(weight, fixed, dim=1)  # [k, a, r]
            w = w.permute(0, 2, 1).reshape(k * count, len(fixed))
            deltas = _columns(self.engine.clean_deltas, fixed, dim=0)
            total = (w.to(deltas.dtype) @ deltas).view(k, count, rows)
        if len(live):
            for columns, deltas in self._live_deltas(_span(self.live_column[live])):
                w = _columns(weight, self.live_senders[columns], dim=1).transpose(1, 2)
                w = w.to(deltas.dtype)
                if total is None:
                    total = torch.bmm(w, deltas)
                elif torch.is_grad_enabled() and (w.requires_grad or deltas.requires_grad):
                    total = torch.baddbmm(total, w, deltas)  # in place, autograd copies it all
                else:
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

    def _corrected(self, group: _Group, receiver: int, count: int, x: torch.Tensor) -> torch.Tensor:
        """``x``, the input of receivers ``receiver ..`` of ``group`` [k * n, pos, (count,)
        d], less the group's correction (computed at its first hook, freed at its last)."""
        if group.correction is None and group.base is None:
            group.correction = self._correction(group)
            if group.form == "kept":
                group.base = self._readable_total(group.readable)
        k, n, width, d = self.k, self.n, x.shape[1], x.shape[-1]
        y = x.view(k, n, width, count, d)
        offset = receiver - group.first
        part = None
        if group.correction is not None:
            part = group.correction[:, offset : offset + count].view(k, count, n, width, d)
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
            read = x.detach().float()
            if not reads.rms:
                read = read - read.mean(-1, keepdim=True)
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
            upstream = torch.einsum("bphe,hde->hbpd", grad.float(), weight)
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
class _Group:
    """Receivers ``first .. first + count - 1`` that read the same ``readable`` senders,
    the senders whose differences their correction sums (``active``) and its weights
    [k, readable, count]: how much of each edge is patched (``off``) or kept (``kept``)."""

    first: int
    count: int
    readable: int
    form: str
    active: torch.Tensor
    weight: torch.Tensor
    correction: torch.Tensor | None = None  # [k, count, rows] while its hooks run
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


def _pattern_grad_hook(layer: int, hear: Callable[[int, torch.Tensor], None]) -> Callable:
    """A hook on a layer's pattern that gives ``hear`` its gradient."""

    def hook(pattern: torch.Tensor) -> torch.Tensor:
        pattern = pattern.view_as(pattern)
        pattern.register_hook(lambda grad: hear(layer, grad))
        return pattern

    return hook


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
    if ablation == "mean":  # summed in float64: the same value whatever the parts' sizes
        total = corrupted.sum(0, keepdim=True, dtype=torch.float64)
        return (total / len(corrupted)).to(corrupted.dtype)
    if ablation == "zero":
        empty = torch.zeros_like(corrupted[:1])
        return empty if zero is None else empty + zero.to(empty)
    return corrupted
