"""A model's parameters read out in HookedTransformer's layout, for the methods that
compute the forward pass themselves (CD-T, AtP*'s QK fix, transcoders, the position
pass) and for the engine's head-input gradients."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.models.model import Model


@dataclass(frozen=True)
class BlockWeights:
    """One block's parameters in HookedTransformer's layout (per-head q/k/v/o matrices)."""

    ln1: tuple[torch.Tensor, torch.Tensor]  # LayerNorm weight, bias [d_model]
    W_Q: torch.Tensor  # [head, d_model, d_head]
    b_Q: torch.Tensor  # [head, d_head]
    W_K: torch.Tensor
    b_K: torch.Tensor
    W_V: torch.Tensor
    b_V: torch.Tensor
    W_O: torch.Tensor  # [head, d_head, d_model]
    b_O: torch.Tensor  # [d_model]
    ln2: tuple[torch.Tensor, torch.Tensor] | None  # None: no MLP
    W_in: torch.Tensor | None  # [d_model, d_mlp]
    b_in: torch.Tensor | None
    W_out: torch.Tensor | None  # [d_mlp, d_model]
    b_out: torch.Tensor | None
    W_gate: torch.Tensor | None = None  # [d_model, d_mlp]: a gated MLP, act(x W_gate) * (x W_in)
    # Gemma-2: RMSNorm gains on the summed head outputs and on the MLP's output
    ln1_post: torch.Tensor | None = None
    ln2_post: torch.Tensor | None = None
    window: int | None = None  # sliding-window attention: a query sees the last ``window`` keys
    # the layer's own divisor of its scores, on top of attn_scale (GPT-2's
    # scale_attn_by_inverse_layer_idx: layer index + 1, as the Stanford CRFM models have)
    score_divisor: float = 1.0


@dataclass(frozen=True)
class TransformerWeights:
    """A GPT-2-style model's parameters, for methods that compute the forward pass
    themselves (CD-T): learned positions, LayerNorm, attention then MLP; or, where the
    method allows it, Llama's: rotary positions, RMSNorm and gated MLPs (and Gemma-2's
    norms after attention and MLP, soft-capping and sliding windows). Absent biases are
    zeros; an offset RMSNorm's gain is 1 + w."""

    W_E: torch.Tensor  # [vocab, d_model]
    W_pos: torch.Tensor | None  # [n_ctx, d_model]; None with rotary positions
    blocks: list[BlockWeights]
    ln_final: tuple[torch.Tensor, torch.Tensor]
    W_U: torch.Tensor  # [d_model, vocab]
    b_U: torch.Tensor  # [vocab]
    eps: float  # LayerNorm epsilon
    attn_scale: float  # attention scores are q.k / attn_scale
    act_fn: Callable[[torch.Tensor], torch.Tensor]
    causal: bool  # False: every position attends to every other
    rms: bool = False  # RMSNorm (no centring, no bias) in place of LayerNorm
    # rotary positions: cos and sin [n_ctx, rotary dims] of the rotate-half convention,
    # over the first rotary dims of each head (all of them, or Pythia's first quarter)
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None
    parallel: bool = False  # the MLP reads the block's input, as the heads do (GPT-NeoX)
    embed_scale: float = 1.0  # the embeddings' output is W_E[token] times this (Gemma)
    attn_softcap: float | None = None  # scores become cap * tanh(scores / cap) (Gemma-2)
    logit_softcap: float | None = None  # the same on the logits


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "gelu": torch.nn.functional.gelu,
    "relu": torch.relu,
    "silu": torch.nn.functional.silu,
}


def transformer_weights(model: Model, llama: bool = False) -> TransformerWeights:
    """``model``'s parameters, or a one-line error for an architecture other than GPT-2's
    (rotary or other positions, RMSNorm, parallel attention and MLP, gated MLPs, norms
    after attention, grouped keys); with ``llama``, also rotary positions (rotate-half),
    RMSNorm, gated MLPs, parallel attention and MLP, and Gemma-2's offset norms, norms
    after attention and MLP, soft-capping and sliding windows."""
    cfg = model.bridge.cfg
    positions = getattr(cfg, "positional_embedding_type", "standard")
    normalisation = getattr(cfg, "normalization_type", "LN")
    rotary = positions == "rotary" and llama
    unsupported = {
        "positions": positions != "standard" and not rotary,
        "paired rotary": rotary and bool(getattr(cfg, "rotary_adjacent_pairs", False)),
        "normalisation": normalisation not in ("LN", "LNPre", *(("RMS",) if llama else ())),
        "norm offset": bool(getattr(cfg, "rmsnorm_uses_offset", False)) and not llama,
        "parallel attention and MLP": model.parallel and not llama,
        "norm after attention": model.post_attention_norm and not llama,
        "gated MLP": bool(getattr(cfg, "gated_mlp", False)) and not llama,
        "grouped keys": getattr(cfg, "n_key_value_heads", None) not in (None, model.n_heads),
        "activation": getattr(cfg, "act_fn", None) not in ACTIVATIONS and model.has_mlp,
        "score or logit capping": not llama
        and bool(
            getattr(cfg, "attn_scores_soft_cap", -1) > 0
            or getattr(cfg, "output_logits_soft_cap", -1) > 0
        ),
    }
    if any(unsupported.values()):
        what = ", ".join(name for name, bad in unsupported.items() if bad)
        style = "GPT-2- or Llama-style" if llama else "GPT-2-style"
        raise CircuitxError(
            f"model {model.name!r} is not {style} (unsupported: {what}); "
            "this method computes the forward pass itself"
        )
    bridge = model.bridge
    # the model's work dtype (float32 for half precision): the methods that read these sum
    # at full precision
    full = model.work_dtype
    zeros = functools.partial(torch.zeros, device=model.device, dtype=full)

    def tensor(module: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = getattr(module, name, None)
        return zeros(shape) if value is None else value.detach().to(full)

    offset = 1.0 if getattr(cfg, "rmsnorm_uses_offset", False) else 0.0  # Gemma: 1 + w

    def norm(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if normalisation == "LNPre":
            return zeros(model.d_model) + 1.0, zeros(model.d_model)
        return module.w.detach().to(full) + offset, tensor(module, "b", (model.d_model,))

    hf_config = getattr(bridge.original_model, "config", None)
    # sliding windows: on the layers the config types as sliding (Gemma-2), or on every
    # layer of a config that has a window and no layer types (Mistral)
    layer_types = getattr(hf_config, "layer_types", None)
    window = getattr(hf_config, "sliding_window", None)
    by_layer = getattr(hf_config, "scale_attn_by_inverse_layer_idx", False)

    blocks = []
    for block in bridge.blocks:
        attn = block.attn
        mlp = dict(ln2=None, W_in=None, b_in=None, W_out=None, b_out=None)
        if model.has_mlp:
            d_mlp = block.mlp.W_in.shape[1]
            gate = getattr(block.mlp, "W_gate", None)  # gated MLPs pass only with llama
            mlp = dict(
                ln2=norm(block.ln2),
                W_in=block.mlp.W_in.detach().to(full),
                b_in=tensor(block.mlp, "b_in", (d_mlp,)),
                W_out=block.mlp.W_out.detach().to(full),
                b_out=tensor(block.mlp, "b_out", (model.d_model,)),
                W_gate=None if gate is None else gate.detach().to(full),
            )
        head_shape = {"b_Q": (model.n_heads, model.d_head), "b_O": (model.d_model,)}
        head_shape["b_K"] = head_shape["b_V"] = head_shape["b_Q"]
        weights = {
            name: tensor(attn, name, head_shape.get(name, ())) for name in _ATTENTION_WEIGHTS
        }
        post = {}
        if model.post_attention_norm:
            post = dict(ln1_post=norm(block.ln1_post)[0], ln2_post=norm(block.ln2_post)[0])
        index = len(blocks)
        sliding = layer_types[index] == "sliding_attention" if layer_types else True
        blocks.append(
            BlockWeights(
                ln1=norm(block.ln1),
                **weights,
                **mlp,
                **post,
                window=window if sliding else None,
                score_divisor=float(index + 1) if by_layer else 1.0,
            )
        )
    tables = None
    if rotary:
        probe = zeros(1, model.n_ctx, model.d_model)
        cos, sin = bridge.rotary_emb(probe, torch.arange(model.n_ctx, device=model.device)[None])
        tables = (cos[0].detach().to(full), sin[0].detach().to(full))
    return TransformerWeights(
        W_E=bridge.W_E.detach().to(full),
        W_pos=None if rotary else bridge.W_pos.detach().to(full),
        blocks=blocks,
        ln_final=norm(bridge.ln_final),
        W_U=bridge.W_U.detach().to(full),
        b_U=tensor(bridge, "b_U", (model.d_vocab,)),
        eps=float(cfg.eps),
        attn_scale=_attention_scale(model, hf_config),
        act_fn=ACTIVATIONS.get(getattr(cfg, "act_fn", None), torch.relu),
        causal=model.causal,
        rms=normalisation == "RMS",
        rotary=tables,
        parallel=model.parallel,
        # Gemma scales the embeddings by sqrt(d_model) inside its forward pass
        embed_scale=model.d_model**0.5 if config_model_type(hf_config).startswith("gemma") else 1.0,
        attn_softcap=_cap(getattr(cfg, "attn_scores_soft_cap", -1)),
        logit_softcap=_cap(getattr(cfg, "output_logits_soft_cap", -1)),
    )


@dataclass(frozen=True)
class HeadReads:
    """How each layer's heads read the residual stream: a norm (``rms`` or LayerNorm,
    ``eps``, its gain [d_model] per layer), then per-head matrices ``W_Q``, ``W_K``, ``W_V``
    [head, d_model, d_head] per layer. Enough to turn the gradient at a head's q, k or v
    into the gradient at its input."""

    gains: list[torch.Tensor]
    weights: dict[str, list[torch.Tensor]]  # "q", "k", "v" -> per layer
    rms: bool
    eps: float


_HEAD_READS: weakref.WeakKeyDictionary[Model, HeadReads | None] = weakref.WeakKeyDictionary()


def head_reads(model: Model) -> HeadReads | None:
    """How ``model``'s heads read the residual stream (:class:`HeadReads`), or None where
    they read otherwise (grouped keys and values, other norms or positions:
    :func:`transformer_weights` says). Built once per model: every part of a batch and the
    memory plan ask."""
    if model not in _HEAD_READS:
        _HEAD_READS[model] = _head_reads(model)
    return _HEAD_READS[model]


def _head_reads(model: Model) -> HeadReads | None:
    try:
        weights = transformer_weights(model, llama=True)
    except CircuitxError:
        return None
    blocks = weights.blocks
    matrices = {"q": "W_Q", "k": "W_K", "v": "W_V"}
    return HeadReads(
        gains=[block.ln1[0] for block in blocks],
        weights={h: [getattr(block, name) for block in blocks] for h, name in matrices.items()},
        rms=weights.rms,
        eps=weights.eps,
    )


def _attention_scale(model: Model, hf_config: Any) -> float:
    """What attention scores are divided by: sqrt(d_head), or Gemma's
    sqrt(query_pre_attn_scalar)."""
    if not getattr(model.bridge.cfg, "use_attn_scale", True):
        return 1.0
    scalar = getattr(hf_config, "query_pre_attn_scalar", None)
    return float((scalar or model.d_head) ** 0.5)


def config_model_type(hf_config: Any) -> str:
    """A Hugging Face config's ``model_type`` ("" where it has none)."""
    return str(getattr(hf_config, "model_type", "") or "")


def _cap(value: float | None) -> float | None:
    return float(value) if value is not None and value > 0 else None


_ATTENTION_WEIGHTS = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")
