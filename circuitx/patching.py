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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.layout import Layout, PositionLayout
from circuitx.masked_pass import MaskedPass
from circuitx.models import (
    EDGE_HOOK_FLAGS,
    EMBED_OUTPUT_HOOK,
    LOGITS_INPUT_HOOK,
    HeadReads,
    Model,
    attention_output_hook,
    attention_pattern_hook,
    head_output_hook,
    head_reads,
    mlp_output_hook,
    resid_pre_hook,
    sender_output_hook,
)
from circuitx.position_pass import Mix, PassMasks, PositionPass, position_weights
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, TaskData

ABLATIONS = ("corrupted", "mean", "zero")

# Tokens in one patched forward pass. On CPU larger passes fall out of cache and run
# slower (measured on GPT-2-small shape: 16384 tokens/pass took 2x the time of 2048).
TOKENS_PER_PASS = {"cpu": 2048, "cuda": 32768}


@dataclass(frozen=True)
class KeptHooks:
    """What a method reads from the cached runs besides the senders' outputs: hook points
    of the clean run and of the corrupted run (a part keeps them as ``clean_kept`` and
    ``corrupted_kept``), and the floats they take per token, as a count and as a count
    per position the token can see (attention patterns)."""

    clean: tuple[str, ...] = ()
    corrupted: tuple[str, ...] = ()
    floats_per_token: int = 0
    floats_per_key: int = 0


NO_KEPT_HOOKS = KeptHooks()


def check_finite_outputs(model: Model, metric: str, clean: float, corrupted: float) -> None:
    """Fail in one line, before any attribution, where the clean or ``corrupted`` run's
    ``metric`` is not a finite number: every score and faithfulness would be NaN."""
    for which, value in (("clean", clean), ("corrupted", corrupted)):
        if not math.isfinite(value):
            raise CircuitxError(
                f"the model's {metric} on the {which} prompts is {value}: its outputs are not "
                f"finite numbers (weights holding NaN or infinity, or activations past what "
                f"{str(model.dtype).removeprefix('torch.')} holds)"
            )


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
        reference: tuple[float, float, float] | None = None,
        patch_values: dict[str, torch.Tensor] | None = None,
        first_prompt: int = 0,
        held: torch.Tensor | None = None,
        layout: Layout | None = None,
        measure_ablated: bool = True,
        kept: KeptHooks = NO_KEPT_HOOKS,
    ) -> None:
        """``reference``: the clean, corrupted and ablated metrics (every sender at its
        patch value) effects are measured against (default: this batch's);
        ``patch_values``: every sender output's patch value (default: from this batch's
        corrupted run by ``ablation``). A part of a larger
        batch takes both from the whole (:class:`circuitx.engine.Engine`), and
        ``first_prompt`` is the index of its first prompt there. ``held`` [n_senders]
        (bool): senders that carry their patch values in every run, the clean one
        included (a circuit found, so that what backs it up shows; see :meth:`_hold`):
        effects are then measured from the held clean run's metric, in units of the
        unheld clean - ablated gap (without a ``reference``). ``measure_ablated`` False
        leaves the ablated metric NaN for the caller to set: a mean ablation in parts
        measures it once the mean over all prompts is known. ``kept``: more hook points
        the runs cache for the method (held senders' runs included)."""
        if ablation not in ABLATIONS:
            raise CircuitxError(
                f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}"
            )
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.full = model.work_dtype  # caches, differences and sums: Model.work_dtype
        self.ablation, self.first_prompt = ablation, first_prompt
        self.layout = layout or model.layout
        if isinstance(self.layout, PositionLayout):  # a circuit over token positions
            if held is not None and bool(held[self.layout.inputs :].any()):
                raise CircuitxError("--backup-rounds works on circuits without positions")
            self.position_weights = position_weights(model)
            self.group_index = data.group_index(self.layout.positions).to(model.device)
        self.end = data.positions["END"]
        self.readout = data.readout_positions  # [n, P]: the metric's rows are n * P
        self.tokens_per_pass = tokens_per_pass or TOKENS_PER_PASS.get(model.device.type, 2048)
        outputs = [EMBED_OUTPUT_HOOK, *model.output_hooks(), *model.scale_hooks()]
        resids = [resid_pre_hook(layer) for layer in range(1, model.n_layers)]
        self.kept = kept
        cached = [*outputs, *resids, LOGITS_INPUT_HOOK]
        clean_final, self.clean_cache = model.run_with_cache(
            data.clean, _union(cached, kept.clean), self.readout
        )
        self.clean_kept = _taken(self.clean_cache, kept.clean, cached)
        self.clean_final = clean_final.flatten(0, 1)  # [n * P, vocab]
        self.clean_resid_final = self.clean_cache.pop(LOGITS_INPUT_HOOK)
        corrupted_final, self.corrupted_cache = model.run_with_cache(
            data.corrupted, _union(outputs, kept.corrupted), self.readout
        )
        self.corrupted_kept = _taken(self.corrupted_cache, kept.corrupted, outputs)
        self.corrupted_final = corrupted_final.flatten(0, 1)
        # a head's output is its z over the post-attention norm's scale, where there is
        # one: then it times head_write_weights is what the head writes (see MaskedPass)
        for cache in (self.clean_cache, self.corrupted_cache):
            for layer in range(model.n_layers):
                cache[head_output_hook(layer)] = model.head_outputs(cache, layer)
            for name in model.scale_hooks():
                del cache[name]
        real = data.real_tokens
        self.patch_cache = patch_values or {
            name: ablate(
                value, ablation, model.zero_embedding if name == EMBED_OUTPUT_HOOK else None, real
            )
            for name, value in self.corrupted_cache.items()
        }
        # in the work dtype, as the caches (Model.run_with_cache)
        self.w_o = [
            model.head_write_weights(layer).to(self.full) for layer in range(model.n_layers)
        ]
        self.held_senders: torch.Tensor | None = None  # [n_senders] bool, on the host
        measured = reference is None  # this batch's own, not a whole's given to a part
        if measured:
            clean = float(self.metric(self.clean_final).mean())
            corrupted = float(self.metric(self.corrupted_final).mean())
            check_finite_outputs(model, metric, clean, corrupted)
            ablated = math.nan
            if ablation == "corrupted":
                ablated = corrupted
            elif measure_ablated:
                ablated = self.measure_ablated_metric()
            reference = (clean, corrupted, ablated)
        self.clean_metric, self.corrupted_metric, self.ablated_metric = reference
        if held is not None and bool(held[self.layout.inputs :].any()):
            self._hold(held, cached)
            if measured:  # effects from the held clean run, in the gap's units
                before = self.clean_metric
                self.clean_metric = float(self.metric(self.clean_final).mean())
                self.corrupted_metric += self.clean_metric - before
                self.ablated_metric += self.clean_metric - before

    def measure_ablated_metric(self) -> float:
        """The mean metric with every sender, the embeddings included, at its patch value,
        from a pass that patches them all (under corrupted ablation: the corrupted run's)."""
        with torch.no_grad():
            final = self.run(node_mask=torch.zeros(1, self.layout.n_senders, dtype=self.full))
        return float(self.metric(final).mean())

    def _hold(self, held: torch.Tensor, names: Sequence[str]) -> None:
        """Make the clean run the one with the ``held`` senders at their patch values: the
        cache is re-read from a pass that masks them (kept as it was before the first
        held layer), their own outputs are their patch values, and every later pass
        writes their patch values, frozen or live (:class:`PassMasks`' ``held``: a pass
        from the embeddings computes them afresh, and a gradient pass must be the held
        model's; their clean - patch differences are now 0)."""
        keep = (~held.cpu()).to(self.full)
        keep[0] = 1.0  # the embeddings are never held
        seen: dict[str, torch.Tensor] = {}

        def record(name: str) -> Callable:
            def hook(x: torch.Tensor) -> torch.Tensor:
                seen[name] = x.detach().to(self.full, copy=True)
                return x

            return hook

        with torch.no_grad():
            recorded = _union(names, self.kept.clean)
            final = self.run(keep.unsqueeze(0), extra_hooks=[(n, record(n)) for n in recorded])
        self.clean_kept = _taken(seen, self.kept.clean, names)
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
        self.held_senders = keep == 0
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
            "clean_kept",
            "corrupted_kept",
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
        """clean - ablated metric (every sender at its patch value: under the default
        ablation, the corrupted run); an error when there is no effect to attribute."""
        return effect_gap(self.clean_metric, self.ablated_metric, self.metric_name, self.ablation)

    def normalised_effect(self, patched_metric: torch.Tensor) -> torch.Tensor:
        """(clean - patched) / (clean - ablated): 1 where a patch removes the whole effect;
        raw, rounding and all (the certificate reports it so; the methods take the
        :class:`~circuitx.engine.Engine`'s, which counts rounding as no change)."""
        return (self.clean_metric - patched_metric) / self.gap

    # ------------------------------------------------------------------ batched patches

    def patch_each_node(self, nodes: Sequence[str], advance: Advance = no_progress) -> torch.Tensor:
        """Mean metric [len(nodes)] when each node alone carries its patch value."""
        layout = self.layout
        senders = [layout.sender(node) for node in nodes]

        def masks(chunk: Sequence[int]) -> tuple[torch.Tensor, None]:
            mask = torch.ones(len(chunk), layout.n_senders, dtype=self.full)
            mask[torch.arange(len(chunk)), torch.tensor(chunk)] = 0.0
            return mask, None

        return self.mean_metrics(senders, masks, layout.sender_layer, advance)

    def patch_together(self, nodes: Sequence[str]) -> float:
        """Mean metric when all of ``nodes`` carry their patch values at once."""
        mask = torch.ones(1, self.layout.n_senders, dtype=self.full)
        mask[0, [self.layout.sender(node) for node in nodes]] = 0.0
        return float(self.metric(self.run(node_mask=mask)).mean())

    def patch_each_edge(
        self, groups: Sequence[Sequence[tuple[int, int]]], advance: Advance = no_progress
    ) -> torch.Tensor:
        """Mean metric [len(groups)] when the ``(sender, receiver)`` edges of each group are
        patched together, every other edge clean."""
        layout = self.layout

        def masks(chunk: Sequence[Sequence[tuple[int, int]]]) -> tuple[None, torch.Tensor]:
            mask = torch.ones(len(chunk), layout.n_senders, layout.n_receivers, dtype=self.full)
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
        results = torch.empty(len(items), device=self.model.device, dtype=self.full)  # read once
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
        node_mask = torch.ones(1, self.layout.n_senders, dtype=self.full, requires_grad=True)
        deltas = self.clean_deltas
        sums = torch.zeros(
            self.layout.n_receivers, deltas.shape[1], device=deltas.device, dtype=deltas.dtype
        )

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
        per_prompt: Callable[[int, Attributions], None] | None = None,
    ) -> Attributions:
        """EAP's gradients (:meth:`mask_gradients` at the clean run) once per entry of
        ``drops``, from one forward pass and a backward pass each: None the plain gradient,
        a layer l the gradient with what flows back through block l's writes to the
        residual stream (its heads' and its MLP's outputs) set to zero, AtP*'s GradDrop.
        Then a node of block l, and a receiver of block l, get a zero gradient; a later
        one loses the paths through block l. With ``patterns`` also the gradient at every
        layer's attention pattern. ``mix``: the pass's interpolation, as in
        :meth:`mask_gradients`. With ``per_prompt``, each prompt's own gradients instead
        (of its own metric; nodes [n, n_senders], edges [n, n_senders, n_receivers], the
        patterns as before), given to ``per_prompt(index, pass's)`` as each backward pass
        ends and not kept (the Attributions returned are empty)."""
        layout = self.layout
        deltas = self.clean_deltas
        n = self.data.n_prompts if per_prompt is not None else None
        shape = (1, layout.n_senders) if n is None else (1, n, layout.n_senders)
        node_mask = torch.ones(*shape, dtype=self.full, requires_grad=True)
        products = _ReceiverProducts(layout, deltas, n)
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
            at_patterns[layer] = grad.to(self.full)

        final = self.run(
            node_mask, grad=True, mix=mix, record_grads=products.record, extra_hooks=extra,
            pattern_grads=keep_pattern if patterns else None,
        )  # fmt: skip
        # a prompt's gradient is its own metric's where each is wanted, else the mean's
        metrics = self.metric(final)
        rows = self.data.rows_per_prompt  # a prompt's metric: the mean of its rows
        metric = metrics.sum() / rows if per_prompt is not None else metrics.mean()
        valid = layout.valid.to(deltas.device)
        nodes, edges, pattern_grads = [], [], []
        for index, layer in enumerate(drops):
            dropped[0] = layer
            node_mask.grad = None
            at_patterns.clear()
            metric.backward(retain_graph=index + 1 < len(drops))
            grads = None
            if patterns:
                rows, width = self.data.clean.shape
                empty = torch.zeros(
                    rows, layout.n_heads, width, width, device=deltas.device, dtype=deltas.dtype
                )
                grads = [at_patterns.get(at, empty) for at in range(layout.n_layers)]
            if per_prompt is not None:  # [n, n_senders], [n, n_senders, n_receivers]
                pass_edges = products.take().transpose(1, 2) * valid
                per_prompt(index, Attributions(node_mask.grad[0], pass_edges, [grads or []]))
            else:
                nodes.append(node_mask.grad[0])
                edges.append(products.take().T * valid)
                if grads is not None:
                    pattern_grads.append(grads)
            advance(1)
        if per_prompt is not None:
            return Attributions(torch.empty(0), torch.empty(0))
        return Attributions(torch.stack(nodes), torch.stack(edges), pattern_grads or None)

    def gate_gradients(self) -> torch.Tensor:
        """Each prompt's metric's gradient with respect to each sender's gate at 1 (a node
        mask entry of that prompt alone: 1 its clean output, 0 its patch value),
        [n_prompts, n_senders]: one forward and one backward pass of the clean run."""
        gates = torch.ones(
            1, self.data.n_prompts, self.layout.n_senders, dtype=self.full, requires_grad=True
        )
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
        reads = self.head_reads if record_grads is not None and edge_mask is None else None
        masks = PassMasks(
            k, layer, node_mask, edge_mask, host_edges, mix, frozen, record_grads, self.held_senders
        )
        if isinstance(self.layout, PositionLayout):
            reads = None
            pass_: MaskedPass | PositionPass = PositionPass(self, masks, pattern_grads)
        else:
            pass_ = MaskedPass(self, masks, complement, reads)
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
        :func:`circuitx.models.head_reads`); a test sets it None for the split pass."""
        return head_reads(self.model)

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
        weights = real.to(self.full) / real.sum(1, keepdim=True)
        writes = torch.empty(
            n, self.layout.n_senders, self.model.d_model, device=self.model.device, dtype=self.full
        )
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
        writes = torch.empty(shape, device=self.model.device, dtype=self.full)
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
        return torch.nn.functional.one_hot(self.group_index, self.layout.n_groups).to(self.full)

    @cached_property
    def sender_deltas(self) -> torch.Tensor:
        """clean - patch output of every model sender in the residual basis: [senders, n,
        pos, d_model]."""
        n, width = self.data.clean.shape
        layout = self.layout.base
        shape = (layout.n_senders, n, width, self.model.d_model)
        matrix = torch.empty(shape, device=self.model.device, dtype=self.full)
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
    the gradients are never all held at once, and the buffer is reused). With
    ``prompts`` (the count), each prompt's products apart: [prompts, n_receivers,
    n_senders] (the differences and gradients are prompt-major)."""

    def __init__(self, layout: Layout, deltas: torch.Tensor, prompts: int | None = None) -> None:
        self.layout, self.deltas, device = layout, deltas, deltas.device
        self.prompts = prompts
        self.by_receiver = torch.zeros(
            *(() if prompts is None else (prompts,)),
            layout.n_receivers, layout.n_senders, device=device, dtype=deltas.dtype,
        )  # fmt: skip
        width = layout.receivers_per_layer
        self.buffer = torch.empty(width, deltas.shape[1], device=device, dtype=deltas.dtype)
        self.pending: list[tuple[int, int]] = []  # (first receiver, how many)

    def _filled(self) -> int:
        return sum(count for _, count in self.pending)

    def _flush(self) -> None:
        # the senders the pending receivers can read: a prefix of the sender axis
        readable = max(self.layout.readable(first + count - 1) for first, count in self.pending)
        rows = self.buffer[: self._filled()]
        if self.prompts is None:
            products = rows @ self.deltas[:readable].T
        else:  # [prompts, rows, readable]: each prompt's stretch of the token axis alone
            n = self.prompts
            products = torch.bmm(
                rows.view(len(rows), n, -1).transpose(0, 1),
                self.deltas[:readable].view(readable, n, -1).permute(1, 2, 0),
            )
        at = 0
        for first, count in self.pending:
            self.by_receiver[..., first : first + count, :readable] = products[
                ..., at : at + count, :
            ]
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


def _pattern_grad_hook(layer: int, hear: Callable[[int, torch.Tensor], None]) -> Callable:
    """A hook on a layer's pattern that gives ``hear`` its gradient."""

    def hook(pattern: torch.Tensor) -> torch.Tensor:
        pattern = pattern.view_as(pattern)
        pattern.register_hook(lambda grad: hear(layer, grad))
        return pattern

    return hook


def _union(names: Sequence[str], more: Sequence[str]) -> list[str]:
    """``names`` and then those of ``more`` not among them."""
    return [*names, *(name for name in more if name not in names)]


def _taken(
    cache: dict[str, torch.Tensor], kept: Sequence[str], cached: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The ``kept`` hook points' values out of ``cache``: taken out of it where the engine
    does not cache them itself (``cached``), shared where it does."""
    return {name: cache[name] if name in cached else cache.pop(name) for name in kept}


def effect_gap(clean: float, ablated: float, metric: str, ablation: str = "corrupted") -> float:
    """clean - ablated metric; an error when there is no effect to attribute."""
    gap = clean - ablated
    if abs(gap) < 1e-9:
        hint = ""
        if ablation == "corrupted":
            what = "clean and corrupted prompts give"
            # e.g. tracr's make_length: every input of a length has one output
            hint = " (--ablation zero or mean measures what the nodes do without a corruption)"
        else:
            what = f"the clean run and the run with every node {ablation}-ablated give"
        raise CircuitxError(
            f"{what} the same {metric} ({clean:.3g}); there is no effect to attribute{hint}"
        )
    return gap


def ablate(
    corrupted: torch.Tensor,
    ablation: str,
    zero: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
) -> torch.Tensor:
    """The patch value of a sender output [n, pos, ...] under ``ablation``; ``zero`` is
    what "zero" leaves (the embeddings of a tracr model keep their anchor); ``real`` [n,
    pos] marks the prompts' tokens, which alone a mean takes (None: every row's all)."""
    if ablation == "mean":  # summed in float64: the same value whatever the parts' sizes
        return token_mean(*token_sum(corrupted, real), corrupted.dtype)
    if ablation == "zero":
        empty = torch.zeros_like(corrupted[:1])
        return empty if zero is None else empty + zero.to(empty)
    return corrupted


def token_sum(values: torch.Tensor, real: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sum over prompts [1, pos, ...] of ``values`` [n, pos, ...] at the prompts' own
    tokens (``real`` [n, pos]; None: all), in float64, and how many prompts [1, pos, 1, ...]
    have a token at each position: a mean at a position takes no padding (a pad token's
    activations changed it with the tokenizer's pad token)."""
    if real is None:
        real = torch.ones(values.shape[:2], dtype=torch.bool)
    weights = real.to(values.device, torch.float64)
    weights = weights.reshape(*weights.shape, *[1] * (values.dim() - 2))
    total = (values.to(torch.float64) * weights).sum(0, keepdim=True)
    return total, weights.sum(0, keepdim=True)


def token_mean(total: torch.Tensor, count: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mean :func:`token_sum`'s ``total`` and ``count`` make, in ``dtype``."""
    return (total / count.clamp(min=1)).to(dtype)


class TokenMeans:
    """Means at each position over the prompts' own tokens, of values keyed by name,
    summed part by part in float64 (so the same whatever the parts' sizes)."""

    def __init__(self) -> None:
        self._sums: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, key: Any, values: torch.Tensor, real: torch.Tensor | None) -> None:
        """Add one part's ``values`` [n, pos, ...] (``real``: see :func:`token_sum`)."""
        total, count = token_sum(values, real)
        if key in self._sums:
            total, count = total + self._sums[key][0], count + self._sums[key][1]
        self._sums[key] = (total, count)

    def means(self, dtype: torch.dtype) -> dict[Any, torch.Tensor]:
        """Each key's mean [1, pos, ...] over every part added, in ``dtype``."""
        return {key: token_mean(total, count, dtype) for key, (total, count) in self._sums.items()}
