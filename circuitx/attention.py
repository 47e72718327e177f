"""A layer's attention computed from its weights (:class:`circuitx.models.TransformerWeights`):
the norm, the heads' q, k and v with rotary positions, the pattern, and the heads' outputs
when each group of queries reads keys and values of its own (a circuit over token
positions, :class:`circuitx.layout.PositionLayout`). CD-T's decomposition, the methods'
QK fix and the patching engine's position pass share them."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from circuitx.models import BlockWeights, TransformerWeights


def norm_scale(whole: torch.Tensor, weights: TransformerWeights) -> torch.Tensor:
    """What the model's norm divides by: the standard deviation (LayerNorm) or the root
    mean square (RMSNorm) of the whole activation, eps inside, as an axis of 1."""
    if weights.rms:
        return rms(whole, weights.eps)
    return (whole.var(-1, unbiased=False, keepdim=True) + weights.eps).sqrt()


def rms(whole: torch.Tensor, eps: float) -> torch.Tensor:
    """Root mean square over the last axis (with ``eps`` inside), kept as an axis of 1."""
    return (whole.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def centred(x: torch.Tensor) -> torch.Tensor:
    """``x`` less its mean over the last axis (what a LayerNorm divides)."""
    return x - x.mean(-1, keepdim=True)


def frozen_norm(
    x: torch.Tensor, scale: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], rms: bool
) -> torch.Tensor:
    """The norm ``norm`` (weight, bias: zeros for RMSNorm) of ``x`` with the scale it
    divides by given: LayerNorm centres ``x`` first, RMSNorm does not."""
    return (x if rms else centred(x)) / scale * norm[0] + norm[1]


def normalise_whole(
    whole: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], weights: TransformerWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's norm of ``whole``, and the scale it divides by."""
    scale = norm_scale(whole, weights)
    return frozen_norm(whole, scale, norm, weights.rms), scale


def normalised(
    whole: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], weights: TransformerWeights
) -> torch.Tensor:
    """The model's norm of ``whole`` (:func:`normalise_whole` without the scale), in one
    fused op: on a head's inputs over token groups, [G, b, pos, head, d_model], the
    mean, variance and division as separate ops took 40% of a position pass."""
    shape = whole.shape[-1:]
    if weights.rms:
        return F.rms_norm(whole, shape, norm[0].to(whole.dtype), weights.eps)
    return F.layer_norm(whole, shape, norm[0].to(whole.dtype), norm[1].to(whole.dtype), weights.eps)


def rotate(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary positions on [..., pos, head, d_head]: ``x cos + rot(x) sin`` over the first
    r dims of each head, rot the rotate-half map (-x2, x1); cos and sin [n_ctx, r]."""
    width, dims = x.shape[-3], tables[0].shape[-1]
    cos, sin = (table[:width, None, :].to(x) for table in tables)
    turned, kept = x[..., :dims], x[..., dims:]
    first, second = turned.chunk(2, dim=-1)
    return torch.cat((turned * cos + torch.cat((-second, first), -1) * sin, kept), -1)


def attention_pattern(
    scores: torch.Tensor, block: BlockWeights, weights: TransformerWeights
) -> torch.Tensor:
    """Attention pattern from raw scores q.k [..., query, key]: scaled, soft-capped where
    the model caps them, then each query sees itself and earlier keys (within the block's
    sliding window), or (a model that is not causal) every key."""
    scores = scores / (weights.attn_scale * block.score_divisor)
    if weights.attn_softcap is not None:
        scores = weights.attn_softcap * torch.tanh(scores / weights.attn_softcap)
    if not weights.causal:
        return scores.softmax(-1)
    width = scores.shape[-1]
    future = torch.ones(width, width, dtype=torch.bool, device=scores.device).triu(1)
    if block.window is not None:  # keys at least ``window`` back are out of sight too
        future |= torch.ones_like(future).tril(-block.window)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def project_heads(
    normed: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weights: TransformerWeights,
    per_head: bool = False,
) -> torch.Tensor:
    """q or k [..., pos, head, d_head] of a normed input [..., pos, d_model] (``per_head``:
    one input per head, [..., pos, head, d_model]), rotated where the model has rotary
    positions."""
    equation = "...phd,hde->...phe" if per_head else "...pd,hde->...phe"
    mapped = torch.einsum(equation, normed, weight) + bias
    return mapped if weights.rotary is None else rotate(mapped, weights.rotary)


def head_pattern(
    query: torch.Tensor, key: torch.Tensor, block: BlockWeights, weights: TransformerWeights
) -> torch.Tensor:
    """The attention pattern [..., head, query, key] of queries and keys [..., pos, head,
    d_head]."""
    scores = torch.einsum("...qhe,...khe->...hqk", query, key)
    return attention_pattern(scores, block, weights)


def grouped_heads_output(
    q_in: torch.Tensor,
    k_in: torch.Tensor,
    v_in: torch.Tensor,
    query_group: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
    on_pattern: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Every head's z [b, pos, head, d_head] when each query reads keys and values of its
    own group: ``q_in`` [b, pos, head, d_model] each head's query input, ``k_in`` and
    ``v_in`` [G, b, pos, head, d_model] the key and value inputs group g's queries read,
    ``query_group`` [b, pos] each query's group. ``on_pattern`` sees the patterns [G, b,
    head, query, key] (and gives back what is used: a view with a hook, say)."""
    normed_q = normalised(q_in, block.ln1, weights)
    normed_k = normalised(k_in, block.ln1, weights)
    normed_v = normalised(v_in, block.ln1, weights)
    query = project_heads(normed_q, block.W_Q, block.b_Q, weights, per_head=True)
    key = project_heads(normed_k, block.W_K, block.b_K, weights, per_head=True)
    value = torch.einsum("...phd,hde->...phe", normed_v, block.W_V) + block.b_V
    pattern = head_pattern(query.unsqueeze(0), key, block, weights)  # [G, b, head, q, k]
    if on_pattern is not None:
        pattern = on_pattern(pattern)
    z = torch.einsum("gbhqk,gbkhe->gbqhe", pattern, value)
    index = query_group.view(1, *query_group.shape, 1, 1).expand(1, *z.shape[1:])
    return z.gather(0, index.to(z.device)).squeeze(0)
