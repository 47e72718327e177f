"""Hook point names: where circuitx reads and writes a model's activations, in
HookedTransformer's naming (the bridge's compatibility mode)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from circuitx.layout import SenderChunk

# Optional hook points: flag -> the config attribute that holds it.
HOOK_FLAGS = {
    "split_qkv": "use_split_qkv_input",
    "attn_result": "use_attn_result",
    "mlp_in": "use_hook_mlp_in",
}


UNEMBED_INPUT_HOOK = "unembed.hook_in"

HookFn = Callable[[torch.Tensor], "torch.Tensor | None"]


def head_output_hook(layer: int) -> str:
    """Hook on the per-head attention output ``z``: [batch, pos, head, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def attention_output_hook(layer: int) -> str:
    """Hook on what a layer's attention adds to the residual stream (after a
    post-attention norm, where there is one): [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_attn_out"


def post_attention_scale_hook(layer: int) -> str:
    """Hook on the scale of the norm on a layer's summed head outputs (Gemma-2): [batch,
    pos, 1]."""
    return f"blocks.{layer}.ln1_post.hook_scale"


def mlp_output_hook(layer: int) -> str:
    """Hook on the MLP output written to the residual stream: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_mlp_out"


def resid_pre_hook(layer: int) -> str:
    """Hook on the residual stream entering block ``layer``: [batch, pos, d_model]."""
    return f"blocks.{layer}.hook_resid_pre"


def head_input_hook(layer: int, head_input: str) -> str:
    """Hook on what each head reads for its ``q``, ``k`` or ``v``: [batch, pos, head, d_model]
    (needs the ``split_qkv`` flag)."""
    return f"blocks.{layer}.hook_{head_input}_input"


def head_vector_hook(layer: int, head_input: str) -> str:
    """Hook on each head's ``q``, ``k`` or ``v`` itself, before rotary positions:
    [batch, pos, head, d_head]."""
    return f"blocks.{layer}.attn.hook_{head_input}"


def mlp_input_hook(layer: int) -> str:
    """Hook on what the MLP reads, before its LayerNorm: [batch, pos, d_model] (``mlp_in`` flag)."""
    return f"blocks.{layer}.hook_mlp_in"


def mlp_normalized_input_hook(layer: int) -> str:
    """Hook on what the MLP reads after its LayerNorm's centring and scaling (the gain is
    folded into the MLP): [batch, pos, d_model]. Transcoders read here."""
    return f"blocks.{layer}.ln2.hook_normalized"


def attention_pattern_hook(layer: int) -> str:
    """Hook on the attention pattern: [batch, head, query, key]."""
    return f"blocks.{layer}.attn.hook_pattern"


def norm_scale_hook(layer: int | None, norm: str = "ln1") -> str:
    """Hook on a LayerNorm's scale [batch, pos, 1]: block ``layer``'s ``ln1`` or ``ln2``, or
    the final LayerNorm's (``layer`` None)."""
    return "ln_final.hook_scale" if layer is None else f"blocks.{layer}.{norm}.hook_scale"


# What the embeddings write (the ``input`` node) and what the unembedding reads (``logits``).
EMBED_OUTPUT_HOOK = resid_pre_hook(0)
LOGITS_INPUT_HOOK = "ln_final.hook_in"
EDGE_HOOK_FLAGS = ("split_qkv", "mlp_in")  # what edge-level patching needs


def sender_output_hook(chunk: SenderChunk) -> str:
    """The hook point holding a sender chunk's output: what the embeddings write, a
    layer's z, or an MLP's output."""
    if chunk.kind == "input":
        return EMBED_OUTPUT_HOOK
    return head_output_hook(chunk.layer) if chunk.heads else mlp_output_hook(chunk.layer)
