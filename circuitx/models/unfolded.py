"""A model's weights in the form CD-T's authors load GPT-2 in: TransformerLens with
``fold_ln=False`` (each LayerNorm keeps its weight and bias), the writing weights and the
unembedding centred, b_V folded into b_O, and ``refactor_factored_attn_matrices`` (W_Q
and W_K, W_V and W_O re-factored by an SVD; not possible with rotary positions), the
re-factoring computed here in float64. The form is unfolded from the model's own weights
(LayerNorm's parameters from a second load), so that it computes exactly the model's
function.

The function is the model's, and so are the residual stream, the MLPs' outputs and the
embeddings; a head's z is not: in this form it is ``z R + c`` of the model's z (``R``
re-factors it, ``c`` is the LayerNorm bias read through W_V), which :class:`UnfoldedForm`
maps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from circuitx.models.loading import reboot
from circuitx.models.model import Model
from circuitx.models.weights import BlockWeights, TransformerWeights, transformer_weights


@dataclass(frozen=True)
class UnfoldedForm:
    """``weights`` in the authors' form, and per layer the map of the model's head z into
    that form's: ``z @ R + c`` with R [head, d_head, d_head] and c [head, d_head]; None
    where the forms' z agree."""

    weights: TransformerWeights
    z_maps: list[tuple[torch.Tensor, torch.Tensor]] | None

    def map_z(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """The model's z [..., head, d_head] of ``layer``'s heads in this form."""
        if self.z_maps is None:
            return z
        rotation, offset = self.z_maps[layer]
        return torch.einsum("...he,hef->...hf", z, rotation.to(z.device)) + offset.to(z.device)


def unfolded_form(model: Model) -> UnfoldedForm:
    """``model``'s weights as CD-T's authors load them (see the module's docstring). Where
    that form is the model's own (RMSNorm, or no norm weights, and rotary positions) the
    model's weights are used. LayerNorm's weight and bias are read from a second load of
    the model (``fold_ln=False``) and unfolded from the model's own weights, in float64, so
    that the form computes exactly the model the engine runs (the second load's reading
    weights are the raw ones, which TransformerLens's float32 folding rounds)."""
    folded = transformer_weights(model, llama=True)
    cfg = model.bridge.cfg
    layer_norm = getattr(cfg, "normalization_type", "LN") == "LN"
    refactor = folded.rotary is None
    if not (layer_norm or refactor):
        return UnfoldedForm(folded, None)
    unfolded = folded
    if layer_norm:
        bridge = reboot(model, fold_ln=False)
        raw = transformer_weights(dataclasses.replace(model, bridge=bridge), llama=True)
        unfolded = _unfold(folded, raw)
    if refactor:
        blocks = [_refactored(block) for block in unfolded.blocks]
        unfolded = dataclasses.replace(unfolded, blocks=blocks)
    maps = [
        _z_map(before, after, refactor) for before, after in zip(folded.blocks, unfolded.blocks)
    ]
    return UnfoldedForm(unfolded, maps)


def _unfold(folded: TransformerWeights, raw: TransformerWeights) -> TransformerWeights:
    """``folded``'s weights with each LayerNorm's weight and bias taken back out of the
    weights that read it, ``raw``'s LayerNorms restored: the same function as ``folded``
    (see :func:`_reader`). The heads' b_V stays ``raw``'s (0: folded into b_O), so a head's
    z gains the bias read through W_V, c, and b_O loses it."""
    blocks = []
    for block, source in zip(folded.blocks, raw.blocks):
        (_, bias), dtype = source.ln1, block.W_Q.dtype
        unfolded = {}
        for name in "QKV":
            weight = _reader(getattr(block, f"W_{name}"), getattr(source, f"W_{name}"), source.ln1)
            unfolded[f"W_{name}"] = weight
            unfolded[f"b_{name}"] = getattr(block, f"b_{name}") - _read(bias, weight)
        unfolded["b_V"] = source.b_V
        offset = _read(bias, unfolded["W_V"]) + source.b_V - block.b_V  # c [head, d_head]
        unfolded["b_O"] = block.b_O - torch.einsum("he,hed->d", offset.double(), block.W_O.double())
        if block.W_in is not None and source.ln2 is not None:
            w_in = _reader(block.W_in, source.W_in, source.ln2)
            unfolded.update(W_in=w_in, ln2=source.ln2, b_in=block.b_in - _read(source.ln2[1], w_in))
            if block.W_gate is not None and source.W_gate is not None:
                unfolded["W_gate"] = _reader(block.W_gate, source.W_gate, source.ln2)
        converted = {
            key: value.to(dtype) if isinstance(value, torch.Tensor) else value
            for key, value in unfolded.items()
        }
        blocks.append(dataclasses.replace(block, ln1=source.ln1, **converted))
    w_u = _reader(folded.W_U, raw.W_U, raw.ln_final)
    b_u = folded.b_U - _read(raw.ln_final[1], w_u)
    dtype = folded.W_U.dtype
    return dataclasses.replace(
        folded, blocks=blocks, ln_final=raw.ln_final, W_U=w_u.to(dtype), b_U=b_u.to(dtype)
    )


def _reader(
    folded: torch.Tensor, raw: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The weight [..., d_model, out] that reads LayerNorm's output x = x^ w + b (x^ of mean
    0) as ``folded`` reads x^: (folded + m) / w, m the mean over d_model of the raw weight
    times w, which folding centred away (x^ m = 0, so any m keeps the function; this one
    gives the raw weight up to rounding). Where w is 0 the raw row (it reads a constant).
    In float64; with the bias ``folded``'s less ``b`` read through it, x W + b' = x^ folded
    + b_folded."""
    weight = norm[0].double().unsqueeze(-1)
    centred_away = (raw.double() * weight).mean(-2, keepdim=True)
    safe = torch.where(weight == 0, 1.0, weight)
    return torch.where(weight == 0, raw.double(), (folded.double() + centred_away) / safe)


def _read(bias: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``bias`` [d_model] read through ``weight`` [..., d_model, out], in float64."""
    return torch.einsum("d,...do->...o", bias.double(), weight.double())


def _refactored(block: BlockWeights) -> BlockWeights:
    """``block`` with TransformerLens's ``refactor_factored_attn_matrices``, computed in
    float64 (TransformerLens computes it in float32, which moves the planted models'
    saturated attention: patterns by up to 0.14 in float32, z by 0.19 in a float64 model):
    W_Q and W_K, with their biases as one more input row, become U S^1/2 and V S^1/2 of
    the SVD of W_Q W_K^T; W_V and W_O become U S and V^T of the SVD of W_V W_O (b_V is
    folded into b_O already)."""
    dtype = block.W_Q.dtype
    query = torch.cat([block.W_Q, block.b_Q.unsqueeze(1)], 1).double()
    key = torch.cat([block.W_K, block.b_K.unsqueeze(1)], 1).double()
    left, right, singular = _svd_of_product(query, key)
    query, key = left * singular.sqrt().unsqueeze(1), right * singular.sqrt().unsqueeze(1)
    left, right, singular = _svd_of_product(block.W_V.double(), block.W_O.double().mT)
    return dataclasses.replace(
        block,
        W_Q=query[:, :-1].to(dtype),
        b_Q=query[:, -1].to(dtype),
        W_K=key[:, :-1].to(dtype),
        b_K=key[:, -1].to(dtype),
        W_V=(left * singular.unsqueeze(1)).to(dtype),
        W_O=right.mT.to(dtype),
    )


def _svd_of_product(
    a: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U [h, m, r], V [h, n, r] and S [h, r] with ``a b^T = U diag(S) V^T`` per head, for
    a [h, m, r] and b [h, n, r] with r <= m, n: through the QR factors, as
    TransformerLens's FactoredMatrix does."""
    q_a, r_a = torch.linalg.qr(a)
    q_b, r_b = torch.linalg.qr(b)
    u, s, vh = torch.linalg.svd(r_a @ r_b.mT)
    return q_a @ u, q_b @ vh.mT, s


def _z_map(
    folded: BlockWeights, unfolded: BlockWeights, refactored: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """R and c with ``z_unfolded = z_folded R + c`` for one layer's heads.

    Folded, z = x^ W_V' + b_V' with x^ the normalised input (mean 0) and W_V' = diag(w) W_V
    centred; unfolded, z = (x^ w + b) W_V R + b_V R with R the OV re-factoring, which makes
    W_O's rows orthonormal, so R = W_O W_O_unfolded^T (the identity without it). Rows of
    the pattern sum to 1, so the constant passes through attention."""
    n_heads, d_head = folded.b_V.shape
    if refactored:
        rotation = torch.einsum("hed,hfd->hef", folded.W_O, unfolded.W_O)
    else:
        rotation = torch.eye(d_head, dtype=folded.W_O.dtype, device=folded.W_O.device)
        rotation = rotation.expand(n_heads, d_head, d_head)
    bias = unfolded.ln1[1]
    offset = torch.einsum("d,hde->he", bias, unfolded.W_V) + unfolded.b_V
    offset = offset - torch.einsum("he,hef->hf", folded.b_V, rotation)
    return rotation, offset
