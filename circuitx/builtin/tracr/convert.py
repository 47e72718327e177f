"""A tracr-compiled model as an ordinary Hugging Face GPT-2 model.

tracr's transformer has no LayerNorm; GPT-2 has one before every attention, MLP and the
unembedding. The conversion makes each LayerNorm an exact constant scale:

- tracr's residual features go onto orthonormal directions (Helmert contrasts) of
  coordinates 2.. that are orthogonal to the all-ones vector, so LayerNorm's mean
  subtraction removes nothing;
- every token's embedding also carries a constant anchor, +C on coordinate 0 and -C on
  coordinate 1 (C = 8192, exact in any float format), far larger than the features, so
  LayerNorm divides by (almost exactly) the constant ``sqrt(2 C^2 / D)``; that constant is
  folded into every weight that reads the residual stream.

GPT-2's head size is ``D / n_head``: tracr's smaller key size is padded inside each head
and the query rescaled so the attention scale stays tracr's ``1 / sqrt(key_size)``.
Attention is bidirectional, as tracr's (``is_causal: false`` in the config). The
unembedding reads tracr's output space: one token per categorical output value, or one
token whose logit is a numerical output; a ``<balance>`` token's logit is minus the sum of
the others, so the mean logit is zero and TransformerLens's centring of the unembedding
changes nothing. "Zero" for the embeddings is the anchor alone: the config's
``circuitx_zero_embedding``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from circuitx.builtin.tracr.programs import tracr_modules
from circuitx.errors import CircuitxError
from circuitx.models import ZERO_EMBEDDING_KEY
from circuitx.tasks.tracr import TracrProgram

ANCHOR = 8192.0  # a power of two: +C and -C cancel exactly in any sum
LAYER_NORM_EPS = 1e-5
BALANCE_TOKEN = "<balance>"
NUMERIC_TOKEN = "<value>"


@dataclass(frozen=True)
class Converted:
    model: Any  # GPT2LMHeadModel
    tokens: list[str]  # the vocabulary, by token id
    program: TracrProgram
    output_dims: list[int]  # tracr's residual dimensions the unembedding reads, by output token


def residual_basis(d_tracr: int, d_model: int) -> np.ndarray:
    """[d_model, d_tracr] orthonormal columns on coordinates 2.., orthogonal to all-ones:
    column j is the (j+1)-th Helmert contrast of those coordinates."""
    basis = np.zeros((d_model, d_tracr))
    for j in range(d_tracr):
        k = j + 1
        basis[2 : 2 + k, j] = 1.0
        basis[2 + k, j] = -float(k)
        basis[:, j] /= math.sqrt(k * (k + 1))
    return basis


def model_width(d_tracr: int, n_heads: int, key_size: int) -> int:
    """GPT-2's d_model: room for the features, the two anchor coordinates and a direction
    for the all-ones vector, and a head size of at least ``key_size``."""
    return n_heads * max(key_size, math.ceil((d_tracr + 3) / n_heads))


def convert(
    assembled: Any, rasp_program: Any, name: str, inputs: str, length: int | None = None
) -> Converted:
    """Convert tracr's ``AssembledTransformerModel`` of ``rasp_program`` to GPT-2. The task
    draws ``inputs`` of ``length`` tokens (default: the vocabulary's size, at most the
    maximum length)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    _, _, rasp = tracr_modules()
    params = {
        key: {p: np.asarray(v, dtype=np.float64) for p, v in group.items()}
        for key, group in assembled.params.items()
    }
    config = assembled.model_config
    labels = list(assembled.residual_labels)
    d_tracr, n_heads, key_size = len(labels), config.num_heads, config.key_size
    n_layers, d_mlp = config.num_layers, max(config.mlp_hidden_size, 1)
    width = model_width(d_tracr, n_heads, key_size)
    d_head = width // n_heads
    basis = residual_basis(d_tracr, width)
    anchor = np.zeros(width)
    anchor[0], anchor[1] = ANCHOR, -ANCHOR
    norm_scale = math.sqrt(2 * ANCHOR**2 / width + LAYER_NORM_EPS)  # LayerNorm divides by it

    encoder = assembled.input_encoder
    bos, pad = encoder.bos_token, encoder.pad_token
    tokens = [None] * len(encoder.encoding_map)
    for value, index in encoder.encoding_map.items():
        tokens[index] = value
    vocab = [v for v in tokens if v not in (bos, pad)]
    names = [str(v) for v in tokens]

    numerical = rasp.is_numerical(rasp_program)
    label = rasp_program.label
    if numerical:
        output_values: list[Any] = []
        output_dims = [labels.index(label)]
        names.append(NUMERIC_TOKEN)
        output_tokens = [len(names) - 1]
    else:
        encoding = assembled.output_encoder.encoding_map  # output value -> output index
        output_values = sorted(encoding, key=encoding.__getitem__)
        output_dims = [labels.index(f"{label}:{value}") for value in output_values]
        output_tokens = []
        for value in output_values:
            if str(value) not in names:
                names.append(str(value))
            output_tokens.append(names.index(str(value)))
    names.append(BALANCE_TOKEN)
    if len(set(names)) != len(names):  # a vocab word named as circuitx's own tokens
        twice = sorted({name for name in names if names.count(name) > 1})
        raise CircuitxError(
            f"the vocab's {', '.join(map(repr, twice))} "
            f"{'collide' if len(twice) > 1 else 'collides'} with the token names circuitx "
            f"gives the model ({BALANCE_TOKEN!r} and, for a numerical output, "
            f"{NUMERIC_TOKEN!r}): rename {'them' if len(twice) > 1 else 'it'}"
        )

    def reading(w: np.ndarray) -> np.ndarray:  # tracr [d_tracr, out] -> GPT-2 [width, out]
        return basis @ w * norm_scale

    def writing(w: np.ndarray) -> np.ndarray:  # tracr [in, d_tracr] -> GPT-2 [in, width]
        return w @ basis.T

    hf_config = GPT2Config(
        vocab_size=len(names),
        n_positions=max(params["pos_embed"]["embeddings"].shape[0], 2),
        n_embd=width,
        n_layer=n_layers,
        n_head=n_heads,
        n_inner=d_mlp,
        activation_function="relu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=LAYER_NORM_EPS,
        bos_token_id=names.index(str(bos)),
        eos_token_id=names.index(str(bos)),
        pad_token_id=names.index(str(pad)),
        tie_word_embeddings=False,
        is_causal=False,
        **{ZERO_EMBEDDING_KEY: anchor.tolist()},
    )
    model = GPT2LMHeadModel(hf_config)
    state: dict[str, Any] = dict(model.state_dict())  # buffers kept; every weight set below
    state.update({key: torch.zeros_like(value) for key, value in model.named_parameters()})

    token_embed = params["token_embed"]["embeddings"]
    wte = np.tile(anchor, (len(names), 1))
    wte[: len(tokens)] += writing(token_embed)
    state["transformer.wte.weight"] = wte
    state["transformer.wpe.weight"] = writing(params["pos_embed"]["embeddings"])
    query_scale = math.sqrt(d_head) / math.sqrt(key_size)
    heads_to_gpt2 = np.zeros((n_heads * key_size, width))  # tracr head columns -> GPT-2's
    for head in range(n_heads):
        for j in range(key_size):
            heads_to_gpt2[head * key_size + j, head * d_head + j] = 1.0
    for layer in range(n_layers):
        attn, mlp = f"transformer/layer_{layer}/attn", f"transformer/layer_{layer}/mlp"
        prefix = f"transformer.h.{layer}"
        qkv = [
            reading(params[f"{attn}/{part}"]["w"]) @ heads_to_gpt2 * scale
            for part, scale in (("query", query_scale), ("key", 1.0), ("value", 1.0))
        ]
        qkv_bias = [
            params[f"{attn}/{part}"]["b"] @ heads_to_gpt2 * scale
            for part, scale in (("query", query_scale), ("key", 1.0), ("value", 1.0))
        ]
        state[f"{prefix}.attn.c_attn.weight"] = np.concatenate(qkv, axis=1)
        state[f"{prefix}.attn.c_attn.bias"] = np.concatenate(qkv_bias)
        state[f"{prefix}.attn.c_proj.weight"] = heads_to_gpt2.T @ writing(
            params[f"{attn}/linear"]["w"]
        )
        state[f"{prefix}.attn.c_proj.bias"] = writing(params[f"{attn}/linear"]["b"][None])[0]
        hidden = params[f"{mlp}/linear_1"]["w"].shape[1]
        c_fc = np.zeros((width, d_mlp))
        c_fc[:, :hidden] = reading(params[f"{mlp}/linear_1"]["w"])
        fc_bias = np.zeros(d_mlp)
        fc_bias[:hidden] = params[f"{mlp}/linear_1"]["b"]
        c_out = np.zeros((d_mlp, width))
        c_out[:hidden] = writing(params[f"{mlp}/linear_2"]["w"])
        state[f"{prefix}.mlp.c_fc.weight"], state[f"{prefix}.mlp.c_fc.bias"] = c_fc, fc_bias
        state[f"{prefix}.mlp.c_proj.weight"] = c_out
        state[f"{prefix}.mlp.c_proj.bias"] = writing(params[f"{mlp}/linear_2"]["b"][None])[0]
        for norm in ("ln_1", "ln_2"):
            state[f"{prefix}.{norm}.weight"] = np.ones(width)
    state["transformer.ln_f.weight"] = np.ones(width)
    unembed = np.zeros((len(names), width))
    for token, dim in zip(output_tokens, output_dims):
        unembed[token] = basis[:, dim] * norm_scale
    unembed[names.index(BALANCE_TOKEN)] = -unembed.sum(0)
    state["lm_head.weight"] = unembed
    model.load_state_dict(
        {
            key: torch.as_tensor(np.asarray(value), dtype=torch.float32)
            for key, value in state.items()
        }
    )
    max_seq_len = params["pos_embed"]["embeddings"].shape[0] - 1
    program = TracrProgram(
        name=name,
        vocab=vocab,
        max_seq_len=max_seq_len,
        length=min(len(vocab), max_seq_len) if length is None else length,
        bos=str(bos),
        pad=str(pad),
        numerical=numerical,
        output_values=output_values,
        output_tokens=output_tokens,
        inputs=inputs,
    )
    return Converted(model, names, program, output_dims)
