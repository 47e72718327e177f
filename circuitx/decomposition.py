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

Three choices differ from the authors' code, all so that the parts sum exactly to the
model's activations: LayerNorm uses the model's epsilon (the code uses 1e-8); the sign
heuristic ``normalize_rel_irrel`` the code applies around the MLP is left out (it is not
linear, and the issue asks linear maps to be propagated exactly); and irrel takes the part
of a bias rel does not (the code gives each part ``b |part| / (|rel| + |irrel| + 1e-8)``,
so its parts miss a little of the bias).

Only rel is carried through the pass: irrel is the whole activation minus rel, and the
whole activation at every point is the clean run's, the same for every source. A
:class:`Wholes` record computes each whole activation (and its products) once per batch
of prompts, so a decomposition costs the products of its rel part alone, half those of
carrying both parts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from circuitx.attention import centred, head_pattern, normalise_whole, rms, rotate
from circuitx.layout import Layout
from circuitx.models import BlockWeights, TransformerWeights

SHARE_EPS = 1e-8  # keeps a bias share finite where both parts are zero

# observe(point, layer, rel, whole): rel [S, ...] is each source's part and whole [...] the
# whole activation (irrel is whole - rel) at "resid_pre", "q", "k", "v", "z", "attn_out",
# "mlp_pre", "mlp_post", "mlp_out" of each layer and "resid_final"; and at "read_q",
# "read_k", "read_v", "read_mlp": what the heads and the MLP read, before their own
# biases. The whole attention pattern [..., head, query, key] is seen at "pattern" (rel
# None). With a norm after attention, "z" is z over its scale, and the whole scale
# [..., pos, 1] is seen at "post_scale" (rel None).
Observer = Callable[[str, int, torch.Tensor | None, torch.Tensor], None]


class Wholes:
    """The whole activations of one batch of prompts by (point, layer), each computed the
    first time a decomposition needs it: they are the same for every source."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, point: str, layer: int, compute: Callable[[], torch.Tensor]):
        key = (point, layer)
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]

    def forget_before(self, layer: int) -> None:
        """Free the layers before ``layer``, which passes from ``layer`` on do not read."""
        self._values = {key: v for key, v in self._values.items() if key[1] >= layer}


def _rel_bias(bias: torch.Tensor, rel: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """rel's share of ``bias``: in proportion to ``|rel|`` against ``|whole - rel|``."""
    size = rel.abs()
    return bias * (size / (size + (whole - rel).abs() + SHARE_EPS))


def linear(
    rel: torch.Tensor,
    whole: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    wholes: Wholes,
    point: str,
    layer: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rel's part and the whole of ``x W + b`` by the linear rule: the bias split in
    proportion to ``|rel W|`` against ``|irrel W|``. The whole (``point`` at ``layer``)
    and its product with ``W`` are read from ``wholes``."""
    mapped_whole = wholes("map_" + point, layer, lambda: whole @ weight)
    mapped = rel @ weight
    rel_out = mapped + _rel_bias(bias, mapped, mapped_whole)
    return rel_out, wholes(point, layer, lambda: mapped_whole + bias)


def normalise(
    rel: torch.Tensor,
    whole: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    weights: TransformerWeights,
    scale: torch.Tensor,
) -> torch.Tensor:
    """rel's part of the model's norm of ``whole``, which divides by ``scale``: LayerNorm
    centres rel by its own mean and gives it the bias's share of ``|rel|``; RMSNorm
    divides it."""
    if weights.rms:
        return rel / scale * norm[0]
    return centred(rel) / scale * norm[0] + _rel_bias(norm[1], rel, whole)


def activation(
    rel: torch.Tensor, whole: torch.Tensor, act_fn: Callable, acted: torch.Tensor
) -> torch.Tensor:
    """rel's part of the nonlinearity ``acted = act_fn(whole)``: irrel keeps
    ``f(irrel)``, rel gets the rest."""
    return acted - act_fn(whole - rel)


def attention(
    rel: torch.Tensor,
    whole: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
    observe: Observer,
    layer: int,
    wholes: Wholes,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rel's part [S, ..., pos, head, d_head] of every head's z, and the whole z, from
    the normalised input (q and k rotated where the model has rotary positions). q, k and
    v take the linear rule; the whole pattern is ``softmax(q k / s)`` and rel's own
    ``softmax(q_rel k_rel / s)``; ``z_rel = P_rel v_rel``."""
    rels, full = {}, {}
    for point, weight, bias, tables in (
        ("q", block.W_Q, block.b_Q, weights.rotary),
        ("k", block.W_K, block.b_K, weights.rotary),
        ("v", block.W_V, block.b_V, None),
    ):
        mapped_whole = wholes(
            "map_" + point, layer, lambda w=weight: torch.einsum("...pd,hde->...phe", whole, w)
        )
        mapped = torch.einsum("...pd,hde->...phe", rel, weight)
        share = _rel_bias(bias, mapped, mapped_whole)
        read_whole = mapped_whole
        if tables is not None:
            mapped, share = rotate(mapped, tables), rotate(share, tables)
            read_whole = wholes("read_" + point, layer, lambda: rotate(mapped_whole, tables))
        observe("read_" + point, layer, mapped, read_whole)
        full[point] = wholes(
            point,
            layer,
            lambda: mapped_whole + bias if tables is None else rotate(mapped_whole + bias, tables),
        )
        rels[point] = mapped + share
        observe(point, layer, rels[point], full[point])

    whole_pattern = wholes(
        "pattern", layer, lambda: head_pattern(full["q"], full["k"], block, weights)
    )
    observe("pattern", layer, None, whole_pattern)
    rel_pattern = head_pattern(rels["q"], rels["k"], block, weights)
    z_rel = torch.einsum("...hqk,...khe->...qhe", rel_pattern, rels["v"])
    z_whole = wholes(
        "z_raw", layer, lambda: torch.einsum("...hqk,...khe->...qhe", whole_pattern, full["v"])
    )
    return z_rel, z_whole


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
    d_model] for the embeddings or an MLP); ``held`` [n_senders] (bool): senders whose
    output is their patch value in this pass (a circuit held out), wholly irrel.

    Over token positions (``groups`` [n, pos], each token's position group, of G),
    ``chosen`` is [S, n_senders * G]: sender i at group g is column ``i * G + g``, and a
    source is its sender's output at that group's tokens alone.
    """

    def __init__(
        self,
        layout: Layout,
        chosen: torch.Tensor,
        patches: dict[int, torch.Tensor],
        held: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
        n_groups: int = 1,
    ):
        self.layout, self.chosen, self.patches = layout, chosen, patches
        self.held, self.groups, self.n_groups = held, groups, n_groups

    def hold(
        self, rel: torch.Tensor, whole: torch.Tensor, first: int, count: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rel and the whole output of senders ``first .. first + count`` with the held ones
        at their patch value, none of it rel."""
        if self.held is None or not bool(self.held[first : first + count].any()):
            return rel, whole
        held = self.held[first : first + count].to(rel.device)
        where = held.view(-1, 1) if whole.dim() == 4 else held  # a layer's heads, or one output
        patch = self.patches[first].to(whole.device).expand_as(whole)
        return torch.where(where, 0.0, rel), torch.where(where, patch, whole)

    def split(self, rel: torch.Tensor, whole: torch.Tensor, first: int, count: int) -> torch.Tensor:
        """rel re-split where senders ``first .. first + count`` are sources: their output
        ``whole`` less its patch value (which is irrel). ``rel`` [S, n, pos, (count,) ...]."""
        g = self.n_groups
        chosen = self.chosen[:, first * g : (first + count) * g]
        if not bool(chosen.any()):  # asked of ``chosen`` where it was made (the host)
            return rel
        chosen = chosen.to(rel.device)
        if self.groups is not None:  # each token's own group: [S, n, pos, count]
            at = chosen.view(-1, count, g)[:, :, self.groups.to(rel.device)]
            where = at.permute(0, 2, 3, 1)
            where = where[..., 0] if rel.dim() == 4 else where
            where = where.unsqueeze(-1)
        elif rel.dim() == 4:  # a single sender's [S, n, pos, d] output
            where = chosen.view(-1, 1, 1, 1)
        else:
            where = chosen.view(chosen.shape[0], 1, 1, count, 1)
        return torch.where(where, whole - self.patches[first].to(rel.device), rel)


def propagate(
    weights: TransformerWeights,
    resid: torch.Tensor,
    layer: int,
    sources: Sources,
    readout: torch.Tensor,
    observe: Observer | None = None,
    wholes: Wholes | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decompose the pass from the residual stream entering block ``layer`` (``resid``
    [n, pos, d_model], all of it irrel except where the embeddings are a source) to the
    logits at positions ``readout`` [n, P]: returns rel's part of them [S, n * P, vocab]
    and the whole logits [n * P, vocab]. ``wholes`` (one record per batch of prompts,
    shared by its decompositions) holds the whole activations."""
    observe = observe or (lambda point, at, rel, whole: None)
    wholes = wholes if wholes is not None else Wholes()
    layout, eps = sources.layout, weights.eps
    whole = wholes("resid_pre", layer, lambda: resid)
    rel = torch.zeros(sources.chosen.shape[0], *resid.shape, device=resid.device, dtype=resid.dtype)
    if layer == 0:
        rel = sources.split(rel, whole, 0, 1)

    def normed(point: str, index: int, rel: torch.Tensor, whole: torch.Tensor, norm):
        whole_normed, scale = wholes(point, index, lambda: normalise_whole(whole, norm, weights))
        return normalise(rel, whole, norm, weights, scale), whole_normed

    for index in range(layer, len(weights.blocks)):
        block = weights.blocks[index]
        observe("resid_pre", index, rel, whole)
        z, z_whole = attention(
            *normed("ln1", index, rel, whole, block.ln1), block, weights, observe, index, wholes
        )
        w_o = block.W_O
        if block.ln1_post is not None:  # z over the norm's scale; its gain goes into W_O
            scale = wholes(
                "post_scale",
                index,
                lambda: rms(torch.einsum("...phe,hed->...pd", z_whole, w_o), eps),
            )
            observe("post_scale", index, None, scale)
            z, w_o = z / scale.unsqueeze(-2), w_o * block.ln1_post
            z_whole = wholes("z", index, lambda: z_whole / scale.unsqueeze(-2))
        z, z_whole = sources.hold(z, z_whole, layout.head_sender(index), layout.n_heads)
        z = sources.split(z, z_whole, layout.head_sender(index), layout.n_heads)
        observe("z", index, z, z_whole)
        mapped_whole = wholes(
            "map_attn_out", index, lambda: torch.einsum("...phe,hed->...pd", z_whole, w_o)
        )
        mapped = torch.einsum("...phe,hed->...pd", z, w_o)
        written = mapped + _rel_bias(block.b_O, mapped, mapped_whole)
        written_whole = wholes("attn_out", index, lambda: mapped_whole + block.b_O)
        observe("attn_out", index, written, written_whole)
        block_input = (rel, whole)
        rel = rel + written
        whole = wholes("resid_mid", index, lambda: block_input[1] + written_whole)
        if block.W_in is not None:
            # a parallel block's MLP reads the block's input, as the heads do
            read_from = block_input if weights.parallel else (rel, whole)
            out, out_whole = _mlp(
                *normed("ln2", index, *read_from, block.ln2), block, weights, observe, index, wholes
            )
            out, out_whole = sources.hold(out, out_whole, layout.mlp_sender(index), 1)
            out = sources.split(out, out_whole, layout.mlp_sender(index), 1)
            observe("mlp_out", index, out, out_whole)
            rel = rel + out
            whole = wholes("resid_pre", index + 1, lambda: whole + out_whole)
        else:
            whole = wholes("resid_pre", index + 1, lambda: whole)
    final = len(weights.blocks)
    observe("resid_final", final, rel, whole)
    rows = torch.arange(rel.shape[1], device=rel.device).unsqueeze(1)
    at = readout.to(rel.device)
    rel = rel[:, rows, at].flatten(1, 2)
    whole = wholes("readout", final, lambda: whole[rows, at].flatten(0, 1))
    rel, whole = normed("ln_final", final, rel, whole, weights.ln_final)
    logits, logits_whole = linear(rel, whole, weights.W_U, weights.b_U, wholes, "logits", final)
    if weights.logit_softcap is None:
        return logits, logits_whole
    cap = weights.logit_softcap

    def capped(x: torch.Tensor) -> torch.Tensor:
        return cap * torch.tanh(x / cap)

    acted = wholes("capped_logits", final, lambda: capped(logits_whole))
    return activation(logits, logits_whole, capped, acted), acted


def _mlp(
    rel: torch.Tensor,
    whole: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
    observe: Observer,
    index: int,
    wholes: Wholes,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rel's part of the MLP's output from its normalised input, and the whole output.
    A gated MLP ``f(gate) * up`` takes the activation rule for ``f(gate)``, splits ``up``
    linearly and multiplies out: irrel is the irrel parts' product, rel the rest."""
    read_whole = wholes("map_in", index, lambda: whole @ block.W_in)
    read = rel @ block.W_in
    pre = read + _rel_bias(block.b_in, read, read_whole)
    pre_whole = wholes("mlp_pre_linear", index, lambda: read_whole + block.b_in)
    if block.W_gate is None:
        observe("read_mlp", index, read, read_whole)
        observe("mlp_pre", index, pre, pre_whole)
        post_whole = wholes("mlp_post", index, lambda: weights.act_fn(pre_whole))
        post = activation(pre, pre_whole, weights.act_fn, post_whole)
    else:  # act(x W_gate) * (x W_in + b_in)
        gate_whole = wholes("mlp_pre", index, lambda: whole @ block.W_gate)
        gate = rel @ block.W_gate
        observe(
            "read_mlp",
            index,
            torch.cat((gate, read), -1),
            wholes("read_mlp", index, lambda: torch.cat((gate_whole, read_whole), -1)),
        )
        observe("mlp_pre", index, gate, gate_whole)
        observe("mlp_pre_linear", index, pre, pre_whole)
        acted_whole = wholes("mlp_act", index, lambda: weights.act_fn(gate_whole))
        acted = activation(gate, gate_whole, weights.act_fn, acted_whole)
        post_whole = wholes("mlp_post", index, lambda: acted_whole * pre_whole)
        post = post_whole - (acted_whole - acted) * (pre_whole - pre)
    observe("mlp_post", index, post, post_whole)
    out, out_whole = linear(post, post_whole, block.W_out, block.b_out, wholes, "mlp_write", index)
    if block.ln2_post is None:
        return out, out_whole
    scale = wholes("mlp_out_scale", index, lambda: rms(out_whole, weights.eps))
    return out / scale * block.ln2_post, wholes(
        "mlp_out", index, lambda: out_whole / scale * block.ln2_post
    )
