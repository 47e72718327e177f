"""CD-T: circuit discovery by contextual decomposition (Hsu et al., ICLR 2025).

Each sender (the embeddings, every head, every MLP) is a source in turn: its output on
the clean prompts is split into ``output - patch`` (rel) and its patch value (irrel), and
:mod:`circuitx.decomposition` carries the split through the rest of the model. One
decomposed pass per source (sources batched, all prompts at once) gives its relevance to
every later receiver:

- to the logits: ``(m(rel + irrel) - m(irrel)) / (m_clean - m_corrupted)``, m the task
  metric at END: read like activation patching's normalised effect;
- to a head's q, k or v input: how the head's z changes when the source's part of that
  input (what the head reads, before its own bias) is taken out, the rest of the head
  clean, as the share ``<change, D> / <D, D>`` of the head's own clean - patch change D
  of z (summed over prompts and positions). This is the activation rule
  ``f(rel + irrel) - f(irrel)`` with f the head, so a source that moves an input the head
  does not use, or only at positions it does not attend, gets little;
- to an MLP's input: the same share of its pre-activation's clean - patch change.

D is the rel part when every sender is a source. Discovery then follows the paper:
relevance to the output first; the heads and MLPs whose relevance reaches the threshold
are found; then every source's relevance to the found nodes' inputs, weighted by the
found node's own score; iterated until the scores stop changing. A node's score is its
strongest chain of relevances to the output; an edge's is its relevance times its
receiver's node score (1 for the logits).

The rules act on the model's weights as every method sees them (``--weight-form
folded``: TransformerLens's LayerNorm folded into the weights after it), or on the form the
authors load GPT-2 in (``authors``: :mod:`circuitx.models.unfolded`), where the heads'
patch values are mapped into that form's z.

Over token positions (``--positions``) a source is a sender's output at one position
group's tokens, and relevance to a receiver is taken over the receiver group's tokens
(for a head's k or v input, the change of its z at its query group's tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuitx.attention import attention_pattern
from circuitx.decomposition import Observer, Sources, Wholes, propagate
from circuitx.engine import Engine
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores, above_resolution, to_host
from circuitx.models import (
    Model,
    UnfoldedForm,
    sender_output_hook,
    transformer_weights,
    unfolded_form,
)
from circuitx.patching import PatchingEngine
from circuitx.progress import Advance, scaled

WEIGHT_FORMS = ("folded", "authors")  # the model's own weights, or the authors' form of them


class CDT(Method):
    name = "cdt"
    title = "CD-T: contextual decomposition of every source's relevance to the output and heads"
    granularity = "node"
    scores_edges = True
    default_threshold = 0.02
    scores_positions = True
    reported_facts = (("cdt_total_relevance", "relevance of every source together"),)
    options = (
        Option(
            "weight_form",
            "str",
            "folded",
            "the weights the rules act on: the model's as every method sees them "
            "(folded: LayerNorm folded into the weights after it), or as the authors load "
            "GPT-2 (authors: LayerNorm unfolded, QK and OV re-factored; loads the model a "
            "second time)",
            choices=WEIGHT_FORMS,
        ),
    )

    def steps(self, layout: Layout, run: MethodRun) -> int:
        """Layers decomposed: the whole run's, then each sender's from its own layer on
        (a sender of layer 0 costs every layer, one of the last layer one)."""
        layers = layout.n_layers
        return layers + sum(len(s) * (layers - i) for i, s in enumerate(senders_by_layer(layout)))

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        # every layer's whole activations (decomposition.Wholes: some 16 of d_model's
        # width and 3 of the MLP's, 7 where gated), the changes of z and of the MLP's
        # input, and the live rel parts of one decomposition
        gated = bool(getattr(model.bridge.cfg, "gated_mlp", False))
        return model.n_layers * (20 * model.d_model + (9 if gated else 5) * model.d_mlp)

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        relevance, total = relevance_matrix(engine, run.advance, run.options["weight_form"])
        node_scores, receiver_weights = discover_nodes(engine.layout, relevance, run.threshold)
        facts = {"cdt_total_relevance": total}
        # a relevance that is zero in exact arithmetic comes out of float32 as rounding,
        # up to 1.5e-5 of the largest (planted colored-objects, against float64), which
        # then differs with the prompts' parts (--max-memory) and ranked would decide the
        # AUC: cut as the gradient methods' scores are
        edges = above_resolution(relevance * receiver_weights, engine.model)
        return Scores.of_edges(edges, above_resolution(node_scores, engine.model), facts=facts)


def relevance_matrix(
    engine: Engine, advance: Advance, weight_form: str = "folded"
) -> tuple[torch.Tensor, float]:
    """Relevance [n_senders, n_receivers] of every sender to every receiver it can reach,
    and the relevance to the output of all senders together, over all of the engine's
    prompts: the relevance to the logits is a mean over prompts; to a head's or MLP's
    input a ratio of sums over prompts, summed over the parts before it is taken. The
    rules act on the model's weights in ``weight_form`` (:data:`WEIGHT_FORMS`)."""
    layout, full = engine.layout, engine.model.work_dtype
    if weight_form == "authors":
        form = unfolded_form(engine.model)
    else:
        form = UnfoldedForm(transformer_weights(engine.model, llama=True), None)
    logits = torch.zeros(layout.n_senders, dtype=full)
    dots = torch.zeros(layout.n_senders, layout.n_receivers, dtype=full)
    norms = torch.zeros(layout.n_receivers, dtype=full)
    total = 0.0
    for part, weight in engine.parts():
        part_sums = _part_relevance(part, form, scaled(advance, weight))
        logits += weight * part_sums.logits
        dots += part_sums.dots
        norms += part_sums.norms
        total += weight * part_sums.total
    relevance = _share(dots, norms.expand_as(dots))
    # every source's relevance to the output, on its edges into the logits (over
    # positions: the logits at each readout group)
    relevance[:, layout.logits_receiver :] = logits.unsqueeze(1)
    return relevance * layout.valid, total


@dataclass
class _Sums:
    """One part's relevance: to the logits (its prompts' mean, [n_senders]), and the sums
    over its prompts of <change, D> [n_senders, n_receivers] and <D, D> [n_receivers]."""

    logits: torch.Tensor
    dots: torch.Tensor
    norms: torch.Tensor
    total: float


def _part_relevance(engine: PatchingEngine, form: UnfoldedForm, advance: Advance) -> _Sums:
    model, layout = engine.model, engine.layout
    # over token positions: sources and receivers per group, the model's senders in base
    base, g, onehot = layout.base, layout.n_groups, engine.group_onehot
    groups = None if onehot is None else engine.group_index

    def grouped(x: torch.Tensor) -> torch.Tensor:
        """[S, n, pos, ...] summed over each group's tokens: [S, G, ...]."""
        if onehot is None:
            return x.sum((1, 2)).unsqueeze(1)
        return torch.einsum("snp...,npg->sg...", x, onehot)

    weights = form.weights
    patches = {}  # in the weights' form: a head's z maps into it
    for chunk in base.chunks:
        patch = engine.patch_cache[sender_output_hook(chunk)]
        patches[chunk.first] = form.map_z(chunk.layer, patch) if chunk.heads else patch
    n, width = engine.data.clean.shape
    # the sums stay on the device until the part is done
    on_device = {"device": model.device, "dtype": model.work_dtype}
    sums = _Sums(
        torch.zeros(layout.n_senders, **on_device),
        torch.zeros(layout.n_senders, layout.n_receivers, **on_device),
        torch.zeros(layout.n_receivers, **on_device),
        0.0,
    )

    wholes = Wholes()  # the clean run's activations, shared by every decomposition
    held = engine.held_senders  # a held-out circuit

    def run(layer: int, chosen: torch.Tensor, observe) -> torch.Tensor:
        sources = Sources(base, chosen, patches, held, groups, g)
        rel, whole = propagate(
            weights, engine.clean_resid(layer), layer, sources, engine.readout, observe, wholes
        )
        irrel = engine.metric(whole - rel)
        return (engine.metric(whole) - irrel).mean(-1) / engine.gap

    # Every sender a source: the clean - patch change D of every head's z and every MLP's
    # input, and the clean q, k, v, pattern and z the head inputs' effects are taken at.
    changes: dict[tuple[str, int], torch.Tensor] = {}
    clean: dict[tuple[str, int], torch.Tensor] = {}

    def keep(point: str, layer: int, rel: torch.Tensor | None, whole: torch.Tensor) -> None:
        if point in ("q", "k", "v", "post_scale"):
            clean[point, layer] = whole
        elif point == "pattern":  # seen after v
            clean[point, layer] = whole
            clean["z", layer] = torch.einsum("nhqk,nkhe->nqhe", whole, clean["v", layer])
        elif point in ("z", "read_mlp") and rel is not None:
            changes[point, layer] = rel[0]

    sums.total = float(run(0, torch.ones(1, layout.n_senders, dtype=torch.bool), keep)[0])
    advance(model.n_layers)
    norms = {key: grouped(change.pow(2).unsqueeze(0))[0] for key, change in changes.items()}

    def project(rows: list[int]) -> Observer:
        def observe(point: str, layer: int, rel: torch.Tensor | None, _: torch.Tensor) -> None:
            if rel is None:
                return
            if point == "read_mlp":
                receiver = layout.mlp_receiver(layer)
                dots = grouped(rel * changes[point, layer]).sum(-1)  # [S, G]
                sums.dots[rows, receiver : receiver + g] = dots
                sums.norms[receiver : receiver + g] = norms[point, layer].sum(-1)
            elif point in ("read_q", "read_k", "read_v"):
                head_input = point.removeprefix("read_")
                block = weights.blocks[layer]
                moved = _z_change(
                    head_input,
                    rel,
                    clean,
                    layer,
                    lambda scores: attention_pattern(scores, block, weights),
                )
                if ("post_scale", layer) in clean:  # z over the norm's clean scale
                    moved = moved / clean["post_scale", layer].unsqueeze(-2)
                first = layout.head_receiver(layer, head_input)
                heads = slice(first, first + layout.n_heads * g)  # head-major, then group
                dots = grouped(moved * changes["z", layer]).sum(-1)  # [S, G, head]
                sums.dots[rows, heads] = dots.transpose(1, 2).reshape(len(rows), -1)
                sums.norms[heads] = norms["z", layer].sum(-1).T.reshape(-1)

        return observe

    per_pass = max(1, engine.tokens_per_pass // (n * width))
    for layer, senders in enumerate(senders_by_layer(layout)):
        wholes.forget_before(layer)
        for start in range(0, len(senders), per_pass):
            rows = senders[start : start + per_pass]
            chosen = torch.zeros(len(rows), layout.n_senders, dtype=torch.bool)
            chosen[torch.arange(len(rows)), rows] = True
            sums.logits[rows] = run(layer, chosen, project(rows))
            advance(len(rows) * (model.n_layers - layer))
    host = to_host({"logits": sums.logits, "dots": sums.dots, "norms": sums.norms})
    return _Sums(host["logits"], host["dots"], host["norms"], sums.total)


def senders_by_layer(layout: Layout) -> list[list[int]]:
    """Each layer's senders, which the decomposition starts from that layer: its heads
    and MLP, and with layer 0's the inputs."""
    layers = []
    for layer in range(layout.n_layers):
        senders = list(range(layout.head_sender(layer), layout.head_sender(layer + 1)))
        layers.append([*range(layout.inputs), *senders] if layer == 0 else senders)
    return layers


def _z_change(
    head_input: str,
    rel: torch.Tensor,
    clean: dict[tuple[str, int], torch.Tensor],
    layer: int,
    pattern_of: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """How every head's z [S, n, pos, head, d_head] changes when ``rel`` [S, n, pos, head,
    d_head] is taken out of its q, k or v input, the rest of the head clean: the
    activation rule's ``f(rel + irrel) - f(irrel)`` with f the head. ``pattern_of`` makes
    the pattern from raw scores q.k."""
    q, k, v, pattern, z = (clean[name, layer] for name in ("q", "k", "v", "pattern", "z"))
    if head_input == "v":
        return torch.einsum("nhqk,snkhe->snqhe", pattern, rel)
    if head_input == "q":
        scores = torch.einsum("snqhe,nkhe->snhqk", q - rel, k)
    else:
        scores = torch.einsum("nqhe,snkhe->snhqk", q, k - rel)
    return z - torch.einsum("snhqk,nkhe->snqhe", pattern_of(scores), v)


def _share(dots: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """``dots / norm``, 0 where the difference itself is (numerically) zero."""
    return torch.where(norm > 1e-12, dots / norm.clamp_min(1e-12), torch.zeros_like(dots))


def discover_nodes(
    layout: Layout, relevance: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Node scores [n_senders] by the paper's iteration, and the receiver weights
    [n_receivers] (each receiver's owner's score; 1 for the logits).

    A node's score starts as its relevance to the output; nodes at or above ``threshold``
    are found; every node then also scores its relevance to a found node's input times
    that node's score; repeated until the scores stop changing.
    """
    size = relevance.abs()
    owner = layout.receiver_owner  # sender index owning each receiver (-1: logits)
    into_logits = owner < 0

    def receiver_weights(scores: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        """Each receiver's owner's score where the owner is ``found``, else 0; logits 1."""
        weights = torch.where(found, scores, 0.0)[owner.clamp_min(0)]
        return weights.masked_fill(into_logits, 1.0)

    # relevance to the output: on the edges into the logits (over positions, a source
    # acting elsewhere than a readout position reaches them through later nodes alone)
    scores = size[:, layout.logits_receiver :].amax(1)
    for _ in range(layout.n_layers + 2):
        updated = (size * receiver_weights(scores, scores >= threshold)).amax(1)
        if torch.equal(updated, scores):
            break
        scores = updated
    weights = receiver_weights(scores, torch.ones_like(scores, dtype=torch.bool))
    scores[: layout.inputs] = 0.0  # the embeddings are not a circuit node
    return scores, weights
