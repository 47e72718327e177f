"""Contextual decomposition for transformers (CD-T; Hsu et al., ICLR 2025).

Every activation is held as two parts stacked on a leading axis of size 2: ``rel``, the
part caused by a chosen source, and ``irrel``, the rest. They sum to the activation at
every point of the pass. The rules follow the authors' code (adelaidehsu/CD_Circuit):

- a linear map ``x W + b`` maps each part; the bias is split between the parts in
  proportion to ``|part W|``, so a part caused by nothing gets none of it;
- LayerNorm centres each part by its own mean and divides both by the whole
  activation's scale; its bias is split in proportion to the input parts' ``|part|``;
  RMSNorm (Llama) divides both parts by the whole activation's root mean square;
- rotary positions rotate each part of q and k (a linear map at each position);
- attention computes q, k and v by the linear rule. The whole pattern is
  ``softmax(q k / s)``, rel's own pattern ``softmax(q_rel k_rel / s)``;
  ``z_rel = P_rel v_rel`` and ``z_irrel = P v - z_rel``;
- the MLP's activation f: ``irrel' = f(irrel)``, ``rel' = f(rel + irrel) - f(irrel)``;
  a gated MLP's ``f(gate) * up`` takes that rule for ``f(gate)``, splits ``up`` linearly
  and multiplies out: ``irrel' = f(gate)_irrel up_irrel``, rel' the rest of the product
  (``f(gate)_rel up + f(gate)_irrel up_rel``);
- the residual stream adds parts; a parallel block (GPT-NeoX) adds its heads' and its
  MLP's parts to the block's input, both read from it;
- Gemma-2: soft-capping of the scores, ``cap tanh(s / cap)``, and a sliding window act on
  the patterns (computed from whole scores, or rel's own); the norm on the heads' summed
  output divides each head's z parts by the whole output's RMS, so that a head's parts are
  in the space of its patch value (z over that run's scale, as the patching engine keeps
  it) and its write is z W_O times the gain; the norm on the MLP's output is RMSNorm of
  its parts; the capped logits take the activation rule.

A source is a set of senders (the embeddings, heads, MLPs). Where a sender is a source
its output is split into ``output - patch`` (rel) and its patch value (irrel): the
corrupted run's output, its mean, or zero, as the patching engine's ablation says.

Two choices differ from the authors' code, both so that the parts sum exactly to the
model's activations: LayerNorm uses the model's epsilon (the code uses 1e-8), and the
sign heuristic ``normalize_rel_irrel`` the code applies around the MLP is left out (it
is not linear, and the issue asks linear maps to be propagated exactly).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from circuitx.layout import Layout
from circuitx.models import BlockWeights, TransformerWeights

SHARE_EPS = 1e-8  # keeps a bias share finite where both parts are zero

# observe(point, layer, parts): sees the parts at "resid_pre", "q", "k", "v", "z",
# "attn_out", "mlp_pre", "mlp_post", "mlp_out" of each layer and "resid_final"; and at
# "read_q", "read_k", "read_v", "read_mlp": what the heads and the MLP read, before their
# own biases; and the whole attention pattern [..., head, query, key] at "pattern". With a
# norm after attention, "z" is z over its scale, and the whole scale [..., pos, 1] is seen
# at "post_scale".
Observer = Callable[[str, int, torch.Tensor], None]


def _bias_parts(bias: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``bias`` split into two parts in proportion to ``|basis[0]|`` and ``|basis[1]|``."""
    size = basis.abs()
    rel = bias * (size[0] / (size[0] + size[1] + SHARE_EPS))
    return torch.stack((rel, bias - rel))


def linear(parts: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``x @ weight + bias`` of both parts [2, ..., d_in]."""
    mapped = parts @ weight
    return mapped + _bias_parts(bias, mapped)


def layer_norm(
    parts: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """LayerNorm of both parts [2, ..., d], scaled by the whole activation's scale."""
    whole = parts.sum(0)
    scale = (whole.var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    centred = parts - parts.mean(-1, keepdim=True)
    return centred / scale * weight + _bias_parts(bias, parts)


def rms_norm(parts: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of both parts [2, ..., d], each divided by the whole activation's RMS."""
    return parts / _rms(parts.sum(0), eps) * weight


def _rms(whole: torch.Tensor, eps: float) -> torch.Tensor:
    """Root mean square over the last axis (with ``eps`` inside), kept as an axis of 1."""
    return (whole.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def normalise(
    parts: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], weights: TransformerWeights
) -> torch.Tensor:
    """The model's norm (LayerNorm, or RMSNorm) of both parts."""
    if weights.rms:
        return rms_norm(parts, norm[0], weights.eps)
    return layer_norm(parts, *norm, weights.eps)


def rotate(parts: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary positions on both parts [2, ..., pos, head, d_head]: ``x cos + rot(x) sin``
    over the first r dims of each head, rot the rotate-half map (-x2, x1); cos and sin
    [n_ctx, r]."""
    width, dims = parts.shape[-3], tables[0].shape[-1]
    cos, sin = (table[:width, None, :].to(parts) for table in tables)
    turned, kept = parts[..., :dims], parts[..., dims:]
    first, second = turned.chunk(2, dim=-1)
    return torch.cat((turned * cos + torch.cat((-second, first), -1) * sin, kept), -1)


def product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Both parts of ``left * right``: irrel the irrel parts' product, rel the rest."""
    irrel = left[1] * right[1]
    return torch.stack((left.sum(0) * right.sum(0) - irrel, irrel))


def activation(parts: torch.Tensor, act_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The nonlinearity: irrel keeps ``f(irrel)``, rel gets the rest of ``f(rel + irrel)``."""
    irrel = act_fn(parts[1])
    return torch.stack((act_fn(parts.sum(0)) - irrel, irrel))


def heads_linear(
    parts: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    observe: Observer,
    point: str,
    layer: int,
    tables: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-head projection of both parts [2, ..., pos, d] by [head, d, d_head] -> [2, ..., pos,
    head, d_head], rotated where ``tables`` (rotary cos, sin) are given. ``observe`` sees
    it before the bias (``read_q`` etc.) and after."""
    mapped = torch.einsum("...pd,hde->...phe", parts, weight)
    bias_parts = _bias_parts(bias, mapped)
    if tables is not None:
        mapped, bias_parts = rotate(mapped, tables), rotate(bias_parts, tables)
    observe("read_" + point, layer, mapped)
    mapped = mapped + bias_parts
    observe(point, layer, mapped)
    return mapped


def attention(
    parts: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
    observe: Observer,
    layer: int,
) -> torch.Tensor:
    """Both parts of every head's z [2, ..., pos, head, d_head] from the normalised input
    (q and k rotated where the model has rotary positions)."""
    q, k, v = (
        heads_linear(parts, weight, bias, observe, point, layer, rotated)
        for point, weight, bias, rotated in (
            ("q", block.W_Q, block.b_Q, weights.rotary),
            ("k", block.W_K, block.b_K, weights.rotary),
            ("v", block.W_V, block.b_V, None),
        )
    )

    def pattern(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("...qhe,...khe->...hqk", query, key)
        return attention_pattern(scores, block, weights)

    whole_pattern = pattern(q.sum(0), k.sum(0))
    observe("pattern", layer, whole_pattern)
    z_rel = torch.einsum("...hqk,...khe->...qhe", pattern(q[0], k[0]), v[0])
    z_whole = torch.einsum("...hqk,...khe->...qhe", whole_pattern, v.sum(0))
    return torch.stack((z_rel, z_whole - z_rel))


def attention_pattern(
    scores: torch.Tensor, block: BlockWeights, weights: TransformerWeights
) -> torch.Tensor:
    """Attention pattern from raw scores q.k [..., query, key]: scaled, soft-capped where
    the model caps them, then each query sees itself and earlier keys (within the block's
    sliding window), or (a model that is not causal) every key."""
    scores = scores / weights.attn_scale
    if weights.attn_softcap is not None:
        scores = weights.attn_softcap * torch.tanh(scores / weights.attn_softcap)
    if not weights.causal:
        return scores.softmax(-1)
    width = scores.shape[-1]
    future = torch.ones(width, width, dtype=torch.bool, device=scores.device).triu(1)
    if block.window is not None:  # keys at least ``window`` back are out of sight too
        future |= torch.ones_like(future).tril(-block.window)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def embed(weights: TransformerWeights, tokens: torch.Tensor) -> torch.Tensor:
    """What the embeddings write: token plus position embeddings (none with rotary
    positions) [..., pos, d_model]."""
    written = weights.W_E[tokens] * weights.embed_scale
    if weights.W_pos is None:
        return written
    return written + weights.W_pos[: tokens.shape[-1]]


class Sources:
    """Which senders are sources in each of S decompositions run side by side, and the
    patch values they split against.

    ``chosen`` [S, n_senders] (bool); ``patches`` maps a sender chunk's first index to
    its patch value ([n or 1, pos, head, d_head] for a layer's heads, [n or 1, pos,
    d_model] for the embeddings or an MLP).
    """

    def __init__(self, layout: Layout, chosen: torch.Tensor, patches: dict[int, torch.Tensor]):
        self.layout, self.chosen, self.patches = layout, chosen, patches

    def split(self, parts: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """Re-split the outputs of senders ``first .. first + count`` where they are
        sources: rel = output - patch, irrel = patch. ``parts`` [2, S, n, pos, (count,) ...]."""
        chosen = self.chosen[:, first : first + count].to(parts.device)
        if not bool(chosen.any()):
            return parts
        whole, patch = parts.sum(0), self.patches[first].to(parts.device)
        if parts.dim() == 5:  # a single sender's [2, S, n, pos, d] output
            where = chosen.view(-1, 1, 1, 1)
        else:
            where = chosen.view(chosen.shape[0], 1, 1, count, 1)
        patch = patch.expand_as(whole)
        return torch.stack(
            (torch.where(where, whole - patch, parts[0]), torch.where(where, patch, parts[1]))
        )


def propagate(
    weights: TransformerWeights,
    resid: torch.Tensor,
    layer: int,
    sources: Sources,
    readout: torch.Tensor,
    observe: Observer | None = None,
) -> torch.Tensor:
    """Decompose the pass from the residual stream entering block ``layer`` (``resid``
    [n, pos, d_model], all of it irrel except where the embeddings are a source) to the
    logits at positions ``readout`` [n, P]: returns their parts [2, S, n * P, vocab]."""
    observe = observe or (lambda point, at, parts: None)
    layout = sources.layout
    count = sources.chosen.shape[0]
    whole = resid.unsqueeze(0).expand(count, *resid.shape)
    parts = torch.stack((torch.zeros_like(whole), whole))
    if layer == 0:
        parts = sources.split(parts, 0, 1)
    for index in range(layer, len(weights.blocks)):
        block = weights.blocks[index]
        observe("resid_pre", index, parts)
        normed = normalise(parts, block.ln1, weights)
        z = attention(normed, block, weights, observe, index)
        w_o = block.W_O
        if block.ln1_post is not None:  # z over the norm's scale; its gain goes into W_O
            scale = _rms(torch.einsum("...phe,hed->...pd", z.sum(0), w_o), weights.eps)
            observe("post_scale", index, scale)
            z, w_o = z / scale.unsqueeze(-2), w_o * block.ln1_post
        z = sources.split(z, layout.head_sender(index), layout.n_heads)
        observe("z", index, z)
        written = torch.einsum("...phe,hed->...pd", z, w_o)
        written = written + _bias_parts(block.b_O, written)
        observe("attn_out", index, written)
        block_input, parts = parts, parts + written
        if block.W_in is None:
            continue
        # a parallel block's MLP reads the block's input, as the heads do
        normed = normalise(block_input if weights.parallel else parts, block.ln2, weights)
        read = normed @ block.W_in
        if block.W_gate is None:
            observe("read_mlp", index, read)
            pre = read + _bias_parts(block.b_in, read)
            observe("mlp_pre", index, pre)
            post = activation(pre, weights.act_fn)
        else:  # act(x W_gate) * (x W_in + b_in)
            gate = normed @ block.W_gate
            observe("read_mlp", index, torch.cat((gate, read), -1))
            observe("mlp_pre", index, gate)
            up = read + _bias_parts(block.b_in, read)
            observe("mlp_pre_linear", index, up)
            post = product(activation(gate, weights.act_fn), up)
        observe("mlp_post", index, post)
        out = linear(post, block.W_out, block.b_out)
        if block.ln2_post is not None:
            out = rms_norm(out, block.ln2_post, weights.eps)
        out = sources.split(out, layout.mlp_sender(index), 1)
        observe("mlp_out", index, out)
        parts = parts + out
    observe("resid_final", len(weights.blocks), parts)
    rows = torch.arange(parts.shape[2], device=parts.device).unsqueeze(1)
    final = parts[:, :, rows, readout.to(parts.device)].flatten(2, 3)
    logits = linear(normalise(final, weights.ln_final, weights), weights.W_U, weights.b_U)
    if weights.logit_softcap is None:
        return logits
    cap = weights.logit_softcap
    return activation(logits, lambda x: cap * torch.tanh(x / cap))
