"""A model's weights in the form CD-T's authors load GPT-2 in: TransformerLens with
``fold_ln=False`` (each LayerNorm keeps its weight and bias), the writing weights and the
unembedding centred, b_V folded into b_O, and ``refactor_factored_attn_matrices`` (W_Q
and W_K, W_V and W_O re-factored by an SVD; not possible with rotary positions), the
re-factoring computed here in float64.

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
    model's weights are used; otherwise the model is loaded a second time from its
    source, and that copy's weights are held while the caller holds the result."""
    folded = transformer_weights(model, llama=True)
    cfg = model.bridge.cfg
    layer_norm = getattr(cfg, "normalization_type", "LN") == "LN"
    refactor = folded.rotary is None
    if not (layer_norm or refactor):
        return UnfoldedForm(folded, None)
    bridge = reboot(model, fold_ln=False)
    unfolded = transformer_weights(dataclasses.replace(model, bridge=bridge), llama=True)
    if refactor:
        blocks = [_refactored(block) for block in unfolded.blocks]
        unfolded = dataclasses.replace(unfolded, blocks=blocks)
    maps = [
        _z_map(before, after, refactor) for before, after in zip(folded.blocks, unfolded.blocks)
    ]
    return UnfoldedForm(unfolded, maps)


def _refactored(block: BlockWeights) -> BlockWeights:
    """``block`` with TransformerLens's ``refactor_factored_attn_matrices``, computed in
    float64 (TransformerLens computes it in float32, which moves the planted models'
    saturated attention patterns by up to 0.14): W_Q and W_K, with their biases as one more
    input row, become U S^1/2 and V S^1/2 of the SVD of W_Q W_K^T; W_V and W_O become U S
    and V^T of the SVD of W_V W_O (b_V is folded into b_O already)."""
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
