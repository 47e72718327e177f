"""AtP* (Kramar, Lieberum, Shah and Nanda 2024): attribution patching with its two fixes,
shared by ``atp`` (nodes) and ``eap`` (edges, ``--qk-fix``, ``--grad-drop``).

Attribution patching estimates the effect of a patch by the gradient at the clean run
times the change: for an edge u -> r, ``(clean_u - patch_u) . d metric / d input_r``.

- **QK fix.** Where r is a head's query or key input, the change reaches the metric
  through the head's softmax, whose gradient vanishes where the pattern is saturated. The
  fix computes the patched pattern exactly, and only then takes the gradient: for the
  query side, the head's queries are recomputed from its input less u's difference (its
  norm included; keys clean), the pattern recomputed, and the estimate is
  ``sum (A - A') . d metric / d A`` over prompts, query and key positions; for the key
  side the same with the keys recomputed, at every position at once (the edge is patched
  at every position), so every query that sees a key sees its change. Batched over the
  senders into a layer and all its heads; the values keep the linear estimate.
- **GradDrop.** Effects that cancel (a direct effect against an indirect one through
  later layers) give a small gradient. The estimate is made L times, the l-th with what
  flows back through block l's writes to the residual stream set to zero, and each
  prompt's magnitudes are averaged, then the mean taken over the prompts, as Kramar et
  al.'s ``E_x[sum_l |c_l(x)|] / (L - 1)``. Dropping a node's (or a receiver's)
  own block zeroes its term, so each has L - 1 terms that count; the embeddings and the
  logits' edges, in no block, have L and are divided by L.

Cost: one forward pass and a backward pass (L with GradDrop, all from the one forward
pass); the QK fix, two single-layer attention computations per sender into each layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from circuitx.attention import head_pattern, normalised, project_heads
from circuitx.engine import Engine
from circuitx.layout import Layout
from circuitx.models import BlockWeights, TransformerWeights
from circuitx.patching import Attributions, PatchingEngine
from circuitx.progress import Advance, no_progress, scaled

QK_CHUNK_FLOATS = 2**25  # floats one batch of senders' recomputed queries and patterns hold


def drops_for(layout: Layout, grad_drop: bool) -> list[int | None]:
    """The backward passes: one per block with GradDrop, else the plain one."""
    return list(range(layout.n_layers)) if grad_drop else [None]


def qk_fixed_edges(
    part: PatchingEngine,
    weights: TransformerWeights,
    pattern_grads: Sequence[Sequence[torch.Tensor]],
    advance: Advance = no_progress,
    each: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor | None:
    """The QK-fixed estimate of every edge into a head's q or k input, once per backward
    pass (``pattern_grads[d][layer]``: the gradient at that layer's pattern [n, head,
    query, key]): [D, n_senders, n_receivers], zero at every other receiver. With
    ``each``, every prompt's own instead, a layer's q (then k) receivers at a time, given
    to ``each(first receiver, [D, n, senders it reads, heads * groups])`` as they are
    made, and None returned (the patterns are recomputed once for every pass).

    Over token positions a sender at a group moves the queries or keys at that group's
    tokens alone (its row of the engine's differences), and its effect on a receiver
    group is the pattern change at that group's queries (the gradient's other rows set
    to zero)."""
    layout, model = part.layout, part.model
    n, width = part.data.clean.shape
    heads, d_count = layout.n_heads, len(pattern_grads)
    groups = layout.n_groups
    per_prompt = each is not None
    prompts = (n,) if per_prompt else ()
    valid = layout.valid.to(part.clean_deltas.device)
    fixed = None
    if not per_prompt:
        fixed = torch.zeros(d_count, layout.n_senders, layout.n_receivers, dtype=model.work_dtype)
        fixed = fixed.to(part.clean_deltas.device)
    onehot = part.group_onehot
    rows = None if onehot is None else onehot.permute(2, 0, 1)  # [G, n, query]
    for layer in range(layout.n_layers):
        q_first = layout.head_receiver(layer, "q")
        k_first = layout.head_receiver(layer, "k")
        readable = layout.readable(q_first)
        deltas = part.clean_deltas[:readable].view(readable, n, width, model.d_model)
        grads = torch.stack([grad[layer] for grad in pattern_grads])  # [D, n, head, q, k]
        if rows is not None:  # [D * G, ...]: the gradient at each group's queries alone
            grads = (grads.unsqueeze(1) * rows[None, :, :, None, :, None]).flatten(0, 1)
        on_queries, on_keys = pattern_change_effects(
            part.clean_resid(layer).to(model.work_dtype),
            deltas,
            weights.blocks[layer],
            weights,
            grads,
            per_prompt=per_prompt,
        )
        for first, effects in ((q_first, on_queries), (k_first, on_keys)):
            # [D, G, (n,) senders, head] -> receivers head-major, then group
            effects = effects.view(d_count, groups, *prompts, readable, heads)
            effects = effects.movedim(1, -1).flatten(-2)
            span = slice(first, first + heads * groups)
            if each is not None:
                each(first, effects * valid[:readable, span])
            else:
                fixed[..., :readable, span] = effects
        advance(1)
    return None if fixed is None else fixed * valid


def clean_attention(
    x: torch.Tensor, block: BlockWeights, weights: TransformerWeights
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's queries, keys and pattern from its input ``x`` [n, pos, d_model]."""
    normed = normalised(x, block.ln1, weights)
    query = project_heads(normed, block.W_Q, block.b_Q, weights)
    key = project_heads(normed, block.W_K, block.b_K, weights)
    return query, key, head_pattern(query, key, block, weights)


def pattern_change_effects(
    x: torch.Tensor,
    deltas: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
    grads: torch.Tensor,
    clean: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    per_prompt: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The QK fix of one layer: for each of S writes ``deltas`` [S, n, pos, d_model] taken
    out of the layer's input ``x`` [n, pos, d_model] on the query side (keys clean), and
    then on the key side, ``sum (A - A') . grad`` for each gradient ``grads`` [D, n,
    head, query, key] at the pattern: [D, S, head] for queries, and for keys ([D, n, S,
    head] each ``per_prompt``, not summed over the prompts). ``clean``:
    :func:`clean_attention` of ``x``, where the caller has it (else made here)."""
    n, width, d_model = x.shape
    heads = block.W_Q.shape[0]
    query, key, pattern = clean or clean_attention(x, block, weights)
    per_sender = n * width * (2 * d_model + 2 * heads * (block.W_Q.shape[-1] + width))
    step = max(1, QK_CHUNK_FLOATS // per_sender)
    prompts = (n,) if per_prompt else ()
    effects = torch.zeros(
        2, len(grads), *prompts, len(deltas), heads, device=x.device, dtype=x.dtype
    )
    summed = "dnsh" if per_prompt else "dsh"
    for first in range(0, len(deltas), step):
        senders = slice(first, min(len(deltas), first + step))
        patched = normalised(x - deltas[senders], block.ln1, weights)
        moved_query = project_heads(patched, block.W_Q, block.b_Q, weights)
        moved_key = project_heads(patched, block.W_K, block.b_K, weights)
        for side, moved in enumerate(
            (
                head_pattern(moved_query, key, block, weights),
                head_pattern(query, moved_key, block, weights),
            )
        ):
            change = pattern - moved  # [senders, n, head, q, k]
            effects[side, ..., senders, :] = torch.einsum(f"snhqk,dnhqk->{summed}", change, grads)
    return effects[0], effects[1]


def attributions(
    engine: Engine,
    drops: Sequence[int | None],
    weights: TransformerWeights | None,
    advance: Advance = no_progress,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Node [D, n_senders] and edge [D, n_senders, n_receivers] estimates of every
    backward pass in ``drops``, means over prompts (not yet divided by the gap); with
    ``weights``, the QK fix on the edges into queries and keys and on the nodes (a node's
    estimate takes its q and k edges' fixed estimates in place of their linear ones).
    With GradDrop (more than one pass) the means over prompts of each prompt's magnitude,
    as Kramar et al. define it: E_x[sum_l |c_l(x)|] / (L - 1) (:func:`combined` divides)."""
    layout, device = engine.layout, engine.model.device
    # the queries' and keys' inputs
    qk = torch.tensor([head_input in ("q", "k") for _, head_input in layout.receivers])
    qk, own = qk.to(device), _own_block(layout, drops, sender=True).to(device)
    if len(drops) > 1:
        return _prompt_magnitudes(engine, drops, weights, qk, own, advance)
    nodes = edges = None
    for part, share in engine.parts():
        step = scaled(advance, share)
        found = part.dropped_gradients(drops, patterns=weights is not None, advance=step)
        part_nodes, part_edges = found.nodes.to(device), found.edges  # the mask's: host
        if weights is not None:
            fixed = qk_fixed_edges(part, weights, found.patterns, step)
            change = torch.where(qk, fixed - part_edges, 0.0).sum(-1)  # [D, n_senders]
            part_nodes = part_nodes + torch.where(own, 0.0, change)
            part_edges = torch.where(qk, fixed, part_edges)
        nodes = share * part_nodes if nodes is None else nodes + share * part_nodes
        edges = share * part_edges if edges is None else edges + share * part_edges
    return nodes, edges


def _prompt_magnitudes(
    engine: Engine,
    drops: Sequence[int | None],
    weights: TransformerWeights | None,
    qk: torch.Tensor,
    own: torch.Tensor,
    advance: Advance,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`attributions` of GradDrop's passes: each pass's estimates per prompt (the QK
    fix's too), their magnitudes, and the mean of those over the prompts. A pass's
    per-prompt edge estimates are summed into magnitudes as it ends, but for the q and k
    receivers, whose fixed estimates come after every pass, each layer's for all passes
    at once (its patterns recomputed once); the nodes' per-prompt estimates wait for them
    ([D, n, n_senders], with the sums of their linear q and k edges, to be replaced)."""
    layout = engine.layout
    count = len(drops)
    work = {"dtype": engine.model.work_dtype, "device": engine.model.device}
    nodes = torch.zeros(count, layout.n_senders, **work)
    edges = torch.zeros(count, layout.n_senders, layout.n_receivers, **work)
    for part, share in engine.parts():
        step = scaled(advance, share)
        n = part.data.n_prompts
        weight = share / n  # a prompt's share of the mean
        prompt_nodes = torch.zeros(count, n, layout.n_senders, **work)
        linear_qk = torch.zeros_like(prompt_nodes)  # the q and k edges' linear estimates
        fixed_qk = torch.zeros_like(prompt_nodes)  # and their fixed ones, summed
        patterns: list[list[torch.Tensor]] = []

        def take(index: int, found: Attributions) -> None:
            prompt_nodes[index] = found.nodes.to(nodes.device)  # the node mask's: host
            passed = found.edges  # [n, S, R]
            if weights is not None:
                linear_qk[index] = torch.where(qk, passed, 0.0).sum(-1)
                passed = torch.where(qk, 0.0, passed)  # fixed below
                patterns.append(found.patterns[0])
            edges[index] += weight * passed.abs().sum(0)

        part.dropped_gradients(drops, patterns=weights is not None, advance=step, per_prompt=take)
        if weights is not None:

            def fixed(first: int, effects: torch.Tensor) -> None:  # [D, n, S', h * G]
                readable, span = effects.shape[2], slice(first, first + effects.shape[3])
                edges[:, :readable, span] += weight * effects.abs().sum(1)
                fixed_qk[:, :, :readable] += effects.sum(-1)

            qk_fixed_edges(part, weights, patterns, step, each=fixed)
            change = torch.where(own.unsqueeze(1), 0.0, fixed_qk - linear_qk)
            prompt_nodes = prompt_nodes + change
        nodes += weight * prompt_nodes.abs().sum(1)
    return nodes, edges


def _own_block(layout: Layout, drops: Sequence[int | None], sender: bool) -> torch.Tensor:
    """[D, n_senders] (or [D, n_receivers]): where the pass drops the entry's own block."""
    if sender:
        inputs = layout.inputs  # the embeddings (at every position): in no block
        blocks = [-1] * inputs + [layout.sender_layer(s) for s in range(inputs, layout.n_senders)]
    else:
        blocks = [layout.receiver_layer(r) for r in range(layout.n_receivers)]
    blocks_t = torch.tensor(blocks)
    dropped = torch.tensor([-2 if d is None else d for d in drops])
    return dropped.unsqueeze(1) == blocks_t.unsqueeze(0)


def combined(
    layout: Layout, drops: Sequence[int | None], nodes: torch.Tensor, edges: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimates of the passes as one: the plain pass's own, or with GradDrop the mean
    magnitude over the passes that do not drop the entry's own block."""
    if drops == [None]:
        return nodes[0], edges[0]
    own_nodes = _own_block(layout, drops, sender=True).to(nodes.device)
    own_edges = _own_block(layout, drops, sender=False).to(edges.device)
    node_count = (~own_nodes).sum(0).clamp(min=1)
    edge_count = (~own_edges).sum(0).clamp(min=1)
    return nodes.abs().sum(0) / node_count, edges.abs().sum(0) / edge_count
