"""Loading models and running them with hooks: the only module that imports TransformerLens.

A model is a local directory holding a Hugging Face model and its tokenizer, or a Hugging
Face hub name or alias (built-in model names are resolved to directories by
:mod:`circuitx.builtin`, above this module).
Everything is loaded through ``TransformerBridge`` in compatibility mode, so hook names
and weight conventions are HookedTransformer's.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitx.errors import CircuitxError, first_line, listed
from circuitx.layout import Layout, SenderChunk
from circuitx.names import head_node, mlp_node
from circuitx.progress import announce

HUB_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "attn-only-4l": "NeelNanda/Attn_Only_4L512W_C4_Code",
}
# Repos stored in the pre-Hugging-Face TransformerLens format (no ``model_type``, ``.pth`` weights).
TL_LEGACY_PREFIXES = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Optional hook points: flag -> the config attribute that holds it.
HOOK_FLAGS = {
    "split_qkv": "use_split_qkv_input",
    "attn_result": "use_attn_result",
    "mlp_in": "use_hook_mlp_in",
}

# The Hugging Face model families circuitx runs: each is tested end to end on a tiny
# random model (tests/discovery/test_architectures.py); any other is refused at load.
MODEL_FAMILIES = {
    "gpt2": "GPT-2",
    "llama": "Llama",
    "qwen2": "Qwen2",
    "mistral": "Mistral",
    "gemma2": "Gemma-2",
    "gpt_neox": "GPT-NeoX (Pythia)",
}
# A local model directory holds its tokenizer in one of these.
# Texts per tokenizer call: about 40 ms for short prompts, so Ctrl-C is not held up.
ENCODE_CHUNK = 2048
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")

UNEMBED_INPUT_HOOK = "unembed.hook_in"
# A model config's key for what zero ablation leaves of the embeddings (see Model).
ZERO_EMBEDDING_KEY = "circuitx_zero_embedding"

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


def canonical_model_name(name: str) -> str:
    """The hub id an alias stands for; other names are returned unchanged."""
    return HUB_ALIASES.get(name, name)


@dataclass
class Model:
    """A loaded model: the bridge, its tokenizer and the shape every graph is built from."""

    name: str
    source: str
    bridge: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    has_mlp: bool
    n_ctx: int
    d_vocab: int
    device: torch.device
    dtype: torch.dtype
    hub_id: str | None = None
    builtin: str | None = None  # set by the loader of built-in models: the built-in name
    causal: bool = True  # False: every position attends to every other (tracr models)
    parallel: bool = False  # attention and MLP read the same residual stream (GPT-NeoX)
    # What "zero" leaves of the embeddings' output (tracr models keep a constant anchor
    # direction there); None: zero itself. [d_model]
    zero_embedding: torch.Tensor | None = field(default=None, repr=False)

    @property
    def d_mlp(self) -> int:
        """Width of the MLPs' hidden layer (0 without MLPs)."""
        if not self.has_mlp:
            return 0
        return int(getattr(self.bridge.cfg, "d_mlp", None) or 4 * self.d_model)

    @property
    def post_attention_norm(self) -> bool:
        """Whether each layer normalises its heads' summed output before adding it to the
        residual stream (Gemma-2's sandwich norm): then no single head's write is a term
        of the residual stream, and an edge out of one head is not defined."""
        return hasattr(self.bridge.blocks[0], "ln1_post")

    @property
    def layout(self) -> Layout:
        """The model's node and edge universe."""
        return Layout(self.n_layers, self.n_heads, self.has_mlp, self.parallel)

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def pad_token_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id):
            if candidate is not None:
                return candidate
        return 0

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` of each text, in one call to the tokenizer per
        ``ENCODE_CHUNK`` texts (a call cannot be interrupted: Ctrl-C waits for it)."""
        texts = list(texts)
        return [
            list(ids)
            for start in range(0, len(texts), ENCODE_CHUNK)
            for ids in self.tokenizer(
                texts[start : start + ENCODE_CHUNK],
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        ]

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` its tokenizer cannot read: those it encodes with its
        unknown token (a word-level tokenizer's fallback), unless they write it."""
        unknown, unknown_id = self.tokenizer.unk_token, self.tokenizer.unk_token_id
        if unknown_id is None or unknown_id not in self.encode(text):
            return []
        return [w for w in text.split() if unknown not in w and unknown_id in self.encode(w)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def enable_hooks(self, flags: Iterable[str]) -> None:
        """Turn on the optional hook points a method needs (see ``HOOK_FLAGS``)."""
        for flag in flags:
            self._set_flag(flag, True)

    @contextlib.contextmanager
    def hooks_enabled(self, flags: Iterable[str]) -> Iterator[None]:
        """Turn on optional hook points for the passes inside the block, then restore them.

        The split q/k/v path computes LayerNorm per head: equal in exact arithmetic, it
        differs in float rounding, so passes that do not need it run without it.
        """
        before = {flag: bool(getattr(self.bridge.cfg, HOOK_FLAGS[flag], False)) for flag in flags}
        self.enable_hooks(flags)
        try:
            yield
        finally:
            for flag, value in before.items():
                self._set_flag(flag, value)

    def _set_flag(self, flag: str, value: bool) -> None:
        setters = {
            "split_qkv": self.bridge.set_use_split_qkv_input,
            "attn_result": self.bridge.set_use_attn_result,
            "mlp_in": self.bridge.set_use_hook_mlp_in,
        }
        setters[flag](value)

    def run(
        self,
        tokens: torch.Tensor,
        hooks: Sequence[tuple[str, HookFn]] = (),
        positions: torch.Tensor | None = None,
        grad: bool = False,
    ) -> torch.Tensor:
        """Logits of a forward pass of token ids [batch, pos] with ``hooks`` applied.

        With ``positions`` only those positions are unembedded: [batch] token indices give
        [batch, vocab], [batch, P] give [batch, P, vocab]; otherwise the result is
        [batch, pos, vocab]. With ``grad`` the pass is recorded for autograd (the weights
        themselves never need gradients). Logits are float32 whatever the model's dtype:
        metrics and their sums are taken at full precision.
        """
        tokens = tokens.to(self.device)
        hooks = list(hooks)
        if positions is not None:
            hooks.append((UNEMBED_INPUT_HOOK, lambda resid: _at(resid, positions, keep=True)))
        with torch.set_grad_enabled(grad):
            wrapped = [(name, _adapt_hook(fn)) for name, fn in hooks]
            logits = self.bridge.run_with_hooks(tokens, fwd_hooks=wrapped).float()
        return logits[:, 0] if positions is not None and positions.dim() == 1 else logits

    def run_from(
        self,
        layer: int,
        resid: torch.Tensor,
        tokens: torch.Tensor,
        hooks: Sequence[tuple[str, HookFn]] = (),
        positions: torch.Tensor | None = None,
        grad: bool = False,
    ) -> torch.Tensor:
        """Logits (as :meth:`run`) of a pass that starts from ``resid`` [batch, pos, d_model],
        the residual stream entering block ``layer`` (``n_layers``: the final one).

        Blocks before ``layer`` are not run where the model allows it; otherwise the whole
        pass runs from ``tokens`` with ``resid`` put in place at that block.
        """
        resid = resid.to(self.device, self.dtype)
        if not self.can_skip_layers:
            if layer == self.n_layers:
                inject = [(LOGITS_INPUT_HOOK, lambda _: resid)]
            else:
                inject = [(resid_pre_hook(layer), lambda _: resid)]
            return self.run(tokens, [*inject, *hooks], positions, grad)
        bridge = self.bridge
        wrapped = [(name, _adapt_hook(fn)) for name, fn in hooks]
        with torch.set_grad_enabled(grad), bridge.hooks(fwd_hooks=wrapped):
            x = bridge.ln_final(self._blocks_from(layer, resid))
            return bridge.unembed(x if positions is None else _at(x, positions)).float()

    def _blocks_from(self, layer: int, resid: torch.Tensor) -> torch.Tensor:
        """The residual stream after the blocks from ``layer`` on, called by themselves
        (with rotary positions, given the positions' cos and sin and the causal mask the
        model's own pass makes)."""
        extra: dict[str, Any] = {}
        if getattr(self.bridge.cfg, "positional_embedding_type", None) == "rotary":
            width = resid.shape[1]
            positions = torch.arange(width, device=resid.device).unsqueeze(0)
            extra["position_embeddings"] = self.bridge.rotary_emb(resid, positions)
            future = torch.full((width, width), float("-inf"), device=resid.device)
            extra["attention_mask"] = future.triu(1).to(resid.dtype)[None, None]
        for block in self.bridge.blocks[layer:]:
            out = block(resid, **extra)
            resid = out[0] if isinstance(out, tuple) else out
        return resid

    @functools.cached_property
    def head_reads(self) -> HeadReads | None:
        """How the heads read the residual stream (:class:`HeadReads`), or None where they
        read otherwise (grouped keys and values, other norms or positions:
        :func:`transformer_weights` says). Built once per model: every part of a batch
        and the memory plan ask."""
        return _head_reads(self)

    @functools.cached_property
    def can_skip_layers(self) -> bool:
        """Whether :meth:`run_from` can call the blocks from a layer on by themselves: true
        when doing so reproduces a full pass on a probe prompt."""
        length = max(1, min(5, self.n_ctx))  # a tracr model may take only 3 positions
        tokens = torch.arange(1, length + 1, device=self.device).unsqueeze(0) % self.d_vocab
        layer = min(1, self.n_layers - 1)
        full, cache = self.run_with_cache(tokens, [resid_pre_hook(layer)])
        try:  # a rotary block called alone warns that it has no positions: it then fails
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                x = self._blocks_from(layer, cache[resid_pre_hook(layer)])
                partial = self.bridge.unembed(self.bridge.ln_final(x))
        except Exception:  # an architecture whose blocks need arguments only the model passes
            return False
        return partial.shape == full.shape and bool(torch.allclose(partial, full, atol=1e-4))

    def run_with_cache(
        self, tokens: torch.Tensor, names: Sequence[str], positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (as :meth:`run`) and the activations at hook points ``names`` (no
        gradients), float32 whatever the model's dtype."""
        cache: dict[str, torch.Tensor] = {}

        def store(name: str) -> HookFn:
            def hook(tensor: torch.Tensor) -> None:
                cache[name] = tensor.detach().to(torch.float32, copy=True)

            return hook

        logits = self.run(tokens, [(name, store(name)) for name in names], positions)
        return logits, cache

    def output_hooks(self) -> list[str]:
        """The hook points of every head's output (z) and every MLP's output."""
        layers = range(self.n_layers)
        names = [head_output_hook(layer) for layer in layers]
        if self.has_mlp:
            names += [mlp_output_hook(layer) for layer in layers]
        return names

    def scale_hooks(self) -> list[str]:
        """The hook points of the post-attention norms' scales (none without them)."""
        if not self.post_attention_norm:
            return []
        return [post_attention_scale_hook(layer) for layer in range(self.n_layers)]

    def head_output_weights(self, layer: int) -> torch.Tensor:
        """W_O of every head in ``layer``: [head, d_head, d_model]; z @ W_O is what a head
        writes, unless a post-attention norm follows (see :meth:`head_write_weights`)."""
        return self.bridge.blocks[layer].attn.W_O.detach()

    def head_write_weights(self, layer: int) -> torch.Tensor:
        """[head, d_head, d_model]: what each head of ``layer`` writes to the residual
        stream is :meth:`head_outputs` @ this. W_O; with a post-attention norm (Gemma-2's
        RMSNorm on the summed outputs), W_O times the norm's gain, so that with the norm's
        scale taken from the run, the heads' writes sum to what the layer adds."""
        w_o = self.head_output_weights(layer)
        if not self.post_attention_norm:
            return w_o
        gain = self.bridge.blocks[layer].ln1_post.w.detach()
        if getattr(self.bridge.cfg, "rmsnorm_uses_offset", False):
            gain = gain + 1.0
        return w_o * gain

    def head_outputs(self, cache: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
        """Each head's output z from a run's cache (``output_hooks`` and ``scale_hooks``),
        divided by the post-attention norm's scale of that run where there is one:
        [batch, pos, head, d_head]."""
        z = cache[head_output_hook(layer)]
        if self.post_attention_norm:
            z = z / cache[post_attention_scale_hook(layer)].unsqueeze(-2)
        return z

    def output_norms(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Norm of what each head and MLP writes to the residual stream, [batch, pos] per
        node name (``a{L}.h{H}``, ``m{L}``)."""
        _, cache = self.run_with_cache(tokens, [*self.output_hooks(), *self.scale_hooks()])
        norms = {}
        for layer in range(self.n_layers):
            w_o = self.head_write_weights(layer)
            written = torch.einsum("bphd,hdm->bphm", self.head_outputs(cache, layer), w_o)
            for head in range(self.n_heads):
                norms[head_node(layer, head)] = written[:, :, head].norm(dim=-1)
            if self.has_mlp:
                norms[mlp_node(layer)] = cache[mlp_output_hook(layer)].norm(dim=-1)
        return norms


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
    # float32 whatever the model's dtype: the methods that read these sum at full precision
    zeros = functools.partial(torch.zeros, device=model.device, dtype=torch.float32)

    def tensor(module: Any, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = getattr(module, name, None)
        return zeros(shape) if value is None else value.detach().float()

    offset = 1.0 if getattr(cfg, "rmsnorm_uses_offset", False) else 0.0  # Gemma: 1 + w

    def norm(module: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if normalisation == "LNPre":
            return zeros(model.d_model) + 1.0, zeros(model.d_model)
        return module.w.detach().float() + offset, tensor(module, "b", (model.d_model,))

    hf_config = getattr(bridge.original_model, "config", None)
    # sliding windows: on the layers the config types as sliding (Gemma-2), or on every
    # layer of a config that has a window and no layer types (Mistral)
    layer_types = getattr(hf_config, "layer_types", None)
    window = getattr(hf_config, "sliding_window", None)

    blocks = []
    for block in bridge.blocks:
        attn = block.attn
        mlp = dict(ln2=None, W_in=None, b_in=None, W_out=None, b_out=None)
        if model.has_mlp:
            d_mlp = block.mlp.W_in.shape[1]
            gate = getattr(block.mlp, "W_gate", None)  # gated MLPs pass only with llama
            mlp = dict(
                ln2=norm(block.ln2),
                W_in=block.mlp.W_in.detach().float(),
                b_in=tensor(block.mlp, "b_in", (d_mlp,)),
                W_out=block.mlp.W_out.detach().float(),
                b_out=tensor(block.mlp, "b_out", (model.d_model,)),
                W_gate=None if gate is None else gate.detach().float(),
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
                ln1=norm(block.ln1), **weights, **mlp, **post, window=window if sliding else None
            )
        )
    tables = None
    if rotary:
        probe = zeros(1, model.n_ctx, model.d_model)
        cos, sin = bridge.rotary_emb(probe, torch.arange(model.n_ctx, device=model.device)[None])
        tables = (cos[0].detach().float(), sin[0].detach().float())
    return TransformerWeights(
        W_E=bridge.W_E.detach().float(),
        W_pos=None if rotary else bridge.W_pos.detach().float(),
        blocks=blocks,
        ln_final=norm(bridge.ln_final),
        W_U=bridge.W_U.detach().float(),
        b_U=tensor(bridge, "b_U", (model.d_vocab,)),
        eps=float(cfg.eps),
        attn_scale=_attention_scale(model, hf_config),
        act_fn=ACTIVATIONS.get(getattr(cfg, "act_fn", None), torch.relu),
        causal=model.causal,
        rms=normalisation == "RMS",
        rotary=tables,
        parallel=model.parallel,
        # Gemma scales the embeddings by sqrt(d_model) inside its forward pass
        embed_scale=model.d_model**0.5 if _model_type(hf_config).startswith("gemma") else 1.0,
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


def _head_reads(model: Model) -> HeadReads | None:
    """:attr:`Model.head_reads`, built."""
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


def _model_type(hf_config: Any) -> str:
    return str(getattr(hf_config, "model_type", "") or "")


def _cap(value: float | None) -> float | None:
    return float(value) if value is not None and value > 0 else None


_ATTENTION_WEIGHTS = ("W_Q", "b_Q", "W_K", "b_K", "W_V", "b_V", "W_O", "b_O")


def _at(x: torch.Tensor, positions: torch.Tensor, keep: bool = False) -> torch.Tensor:
    """Rows of ``x`` [batch, pos, ...] at ``positions``: [batch] -> [batch, ...] (with
    ``keep``: [batch, 1, ...]); [batch, P] -> [batch, P, ...]."""
    at = positions.to(x.device)
    rows = torch.arange(x.shape[0], device=x.device)
    if at.dim() == 2:
        return x[rows.unsqueeze(1), at]
    picked = x[rows, at]
    return picked.unsqueeze(1) if keep else picked


def _adapt_hook(fn: HookFn) -> Callable[..., Any]:
    def hook(tensor: torch.Tensor, hook: Any) -> Any:
        return fn(tensor)

    return hook


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise CircuitxError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CircuitxError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CircuitxError(f"device {name!r} requested but no CUDA device is available")
    return device


def load_model(name: str, device: str | None = None, dtype: str = "float32") -> Model:
    """Load a local model directory, or a hub model by name or alias."""
    torch_device, torch_dtype = parse_device(device), parse_dtype(dtype)
    if Path(name).expanduser().is_dir():
        # absolute: the bridge reads a bare name it knows ("neox", "gpt2") as a hub alias
        source = str(Path(name).expanduser().resolve())
        if not (Path(source) / "config.json").is_file():
            raise CircuitxError(f"not a model directory (no config.json): {name}")
        if not _looks_like_path(name):  # a hub name a directory here shadows
            announce(f"note: model {name!r} is the local directory {source}")
    elif _looks_like_path(name):
        raise CircuitxError(f"model directory not found: {name}")
    else:
        source = canonical_model_name(name)
        _check_hub_model(name, source)
    with quiet_loaders():
        try:
            bridge = _boot(source, torch_device, torch_dtype)
            bridge.enable_compatibility_mode(disable_warnings=True)
        except CircuitxError:
            raise
        except Exception as error:  # the loaders raise many types; report one line
            raise CircuitxError(f"cannot load model {name!r}: {first_line(error)}") from None
    tokens, rows = len(bridge.tokenizer), int(bridge.cfg.d_vocab)
    if tokens <= 1:  # e.g. a fast tokenizer built from vocab and merges files lost them
        raise CircuitxError(
            f"model {name!r}: its tokenizer has {tokens} token{'s' * (tokens != 1)}, so it "
            "reads no text; save the tokenizer the model was trained with beside it"
        )
    if tokens > rows:  # a token past the embedding would fail in the middle of a run
        raise CircuitxError(
            f"model {name!r}: its tokenizer has {tokens} tokens but its embedding only {rows} "
            "rows; save the model with the tokenizer it was trained with"
        )
    bridge.eval()
    bridge.requires_grad_(False)  # methods differentiate masks and inputs, never weights
    hf_config = getattr(bridge.original_model, "config", None)
    causal = bool(getattr(hf_config, "is_causal", True))
    if not causal:
        # The bridge masks attention itself and ignores the config; a plain assignment
        # would be forwarded to the wrapped Hugging Face module.
        for block in bridge.blocks:
            object.__setattr__(block.attn, "is_causal", False)
    zero = getattr(hf_config, ZERO_EMBEDDING_KEY, None)
    cfg = bridge.cfg
    return Model(
        name=name,
        source=source,
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        has_mlp=not (
            bool(getattr(cfg, "attn_only", False))
            or bool(getattr(hf_config, "circuitx_attn_only", False))
        ),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        device=torch_device,
        dtype=torch_dtype,
        hub_id=None if Path(source).is_dir() else source,
        causal=causal,
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        zero_embedding=None
        if zero is None
        else torch.tensor(zero, dtype=torch_dtype).to(torch_device),
    )


def local_model_hub_id(directory: str) -> str | None:
    """The hub id a local model directory says it was saved from, if its config records one."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    recorded = config.get("_name_or_path") or ""
    return canonical_model_name(recorded) if recorded else None


def _boot(source: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    legacy = source.startswith(TL_LEGACY_PREFIXES) and not Path(source).is_dir()
    if legacy or (Path(source).is_dir() and is_tl_legacy_dir(Path(source))):
        model, tokenizer = gpt2_from_tl_legacy(source, dtype)
    else:  # a tokenizer of None: the bridge loads it
        model = ungrouped_model(pretrained_model(source, dtype))
        tokenizer = saved_tokenizer(source)
    return TransformerBridge.boot_transformers(
        source,
        device=device,
        dtype=dtype,
        hf_model=fused_activations(model).to(device),
        tokenizer=tokenizer,
    )


def fused_activations(model: Any) -> Any:
    """``model`` with each ``NewGELUActivation`` (GPT-2's ``gelu_new``, four tensor ops
    in Python) replaced by ``GELUTanh``, the same tanh approximation in one fused op:
    transformers' own faster equivalent (equal up to float rounding: 2.4e-7 at most on
    unit-normal inputs). A forward pass of planted IOI on 400 prompts on the CPU spent 1.0
    of its 2.4 s in the Python version."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model


def pretrained_model(source: str, dtype: torch.dtype) -> Any:
    """The Hugging Face model at ``source`` (a directory or a hub name), with eager
    attention, as the bridge would load it; refused in one line when its family is not one
    of :data:`MODEL_FAMILIES`, when a directory holds no tokenizer, and when the checkpoint
    lacks weights the model has or holds them in other shapes (which transformers would
    fill in at random)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    family = _model_type(config)
    if family not in MODEL_FAMILIES:
        raise CircuitxError(
            f"{source}: circuitx does not run {family or 'this kind of'} models; it runs "
            f"{', '.join(MODEL_FAMILIES.values())}"
        )
    directory = Path(source)
    if directory.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CircuitxError(
            f"no tokenizer in {source}: save the model's beside it (tokenizer.save_pretrained)"
        )
    model, loading = AutoModelForCausalLM.from_pretrained(
        source,
        config=config,
        dtype=dtype,
        attn_implementation="eager",
        output_loading_info=True,
        ignore_mismatched_sizes=True,  # named below, not left random
    )
    mismatched = sorted(loading.get("mismatched_keys") or ())
    if mismatched:
        key, saved, wanted = mismatched[0]
        raise CircuitxError(
            f"{source}: {len(mismatched)} of the checkpoint's weights do not fit config.json "
            f"({key} is {tuple(saved)}, the config makes it {tuple(wanted)}); is config.json "
            "the checkpoint's own?"
        )
    missing = sorted(loading["missing_keys"])
    if missing:
        raise CircuitxError(
            f"{source}: the checkpoint lacks {len(missing)} of the model's weights "
            f"({listed(missing, 3)}), which would be random; is config.json the checkpoint's own?"
        )
    return model.eval()


def saved_tokenizer(source: str) -> Any | None:
    """A model directory's tokenizer as saved, where it names the generic fast class:
    ``AutoTokenizer`` would pick the architecture's own class instead (a word-level
    tokenizer saved beside a Qwen2 model loads as Qwen2's BPE and splits every word). It
    adds BOS, as the bridge makes every tokenizer do. None otherwise: the bridge loads it."""
    from transformers import PreTrainedTokenizerFast

    path = Path(source) / "tokenizer_config.json"
    if not path.is_file():
        return None
    saved_class = json.loads(path.read_text()).get("tokenizer_class")
    if saved_class not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return None
    return PreTrainedTokenizerFast.from_pretrained(source, add_bos_token=True)


def is_tl_legacy_dir(directory: Path) -> bool:
    """A model saved in the pre-Hugging-Face TransformerLens format: a config.json with
    no ``model_type`` and the weights as a ``*.pth`` state dict."""
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return "model_type" not in config and any(directory.glob("*.pth"))


def tl_legacy_files(source: str) -> tuple[dict[str, Any], Path, Any]:
    """A legacy TransformerLens model's config, final state dict file and tokenizer, from
    a local directory or a hub repo (``NeelNanda/*``)."""
    from transformers import AutoTokenizer

    if Path(source).is_dir():
        directory = Path(source)
        config = json.loads((directory / "config.json").read_text())
        weights = sorted(directory.glob("*final.pth")) or sorted(directory.glob("*.pth"))
        tokenizer = saved_tokenizer(source) or AutoTokenizer.from_pretrained(source)
        return config, weights[-1], tokenizer
    from huggingface_hub import HfApi, hf_hub_download

    config = json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    final = [f for f in HfApi().list_repo_files(source) if f.endswith("final.pth")]
    if not final:
        raise CircuitxError(f"no final weights (*final.pth) in {source}")
    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer_name"])
    return config, Path(hf_hub_download(source, final[0])), tokenizer


def gpt2_from_tl_legacy(source: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """A legacy TransformerLens model (``attn-only-4l``'s format) as a Hugging Face GPT-2
    computing the same function, and its tokenizer. TransformerLens boots such models as
    its native bridge, whose attention has no per-head q/k/v inputs; as GPT-2 they have
    them. Per-head weights become GPT-2's fused projections; an attention-only model gets
    MLPs that output exactly zero and ``circuitx_attn_only`` in its config (no MLP nodes);
    the unembedding keeps its bias."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config, weights, tokenizer = tl_legacy_files(source)
    normalization = config.get("normalization_type", config.get("normalization"))
    if normalization != "LN" or config.get("positional_embedding_type", "standard") != "standard":
        raise CircuitxError(
            f"legacy model {source} uses {normalization} normalisation and "
            f"{config.get('positional_embedding_type')} positions; circuitx reads LayerNorm "
            "and learned positions"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    n_heads, d_model, attn_only = config["n_heads"], config["d_model"], config["attn_only"]
    gpt2 = GPT2Config(
        vocab_size=config["d_vocab"], n_positions=config["n_ctx"], n_embd=d_model,
        n_layer=config["n_layers"], n_head=n_heads, layer_norm_epsilon=config.get("eps", 1e-5),
        n_inner=1 if attn_only else config["d_mlp"], activation_function=config["act_fn"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    gpt2.circuitx_attn_only = bool(attn_only)
    with torch.random.fork_rng(devices=[]):
        model = GPT2LMHeadModel(gpt2)
    with torch.no_grad():
        model.transformer.wte.weight.copy_(state["embed.W_E"])
        model.transformer.wpe.weight.copy_(state["pos_embed.W_pos"])
        for layer, block in enumerate(model.transformer.h):
            tl = f"blocks.{layer}."
            block.ln_1.weight.copy_(state[tl + "ln1.w"])
            block.ln_1.bias.copy_(state[tl + "ln1.b"])
            # [head, d_model, d_head] -> GPT-2's [d_model, head * d_head]
            qkv = [state[f"{tl}attn.W_{x}"].permute(1, 0, 2).flatten(1) for x in "QKV"]
            block.attn.c_attn.weight.copy_(torch.cat(qkv, 1))
            block.attn.c_attn.bias.copy_(
                torch.cat([state[f"{tl}attn.b_{x}"].flatten() for x in "QKV"])
            )
            block.attn.c_proj.weight.copy_(state[tl + "attn.W_O"].flatten(0, 1))
            block.attn.c_proj.bias.copy_(state[tl + "attn.b_O"])
            if attn_only:
                for parameter in block.mlp.parameters():
                    parameter.zero_()
            else:
                block.ln_2.weight.copy_(state[tl + "ln2.w"])
                block.ln_2.bias.copy_(state[tl + "ln2.b"])
                block.mlp.c_fc.weight.copy_(state[tl + "mlp.W_in"])
                block.mlp.c_fc.bias.copy_(state[tl + "mlp.b_in"])
                block.mlp.c_proj.weight.copy_(state[tl + "mlp.W_out"])
                block.mlp.c_proj.bias.copy_(state[tl + "mlp.b_out"])
        model.transformer.ln_f.weight.copy_(state["ln_final.w"])
        model.transformer.ln_f.bias.copy_(state["ln_final.b"])
        unembed = torch.nn.Linear(d_model, config["d_vocab"], bias=True)
        unembed.weight.copy_(state["unembed.W_U"].T)
        unembed.bias.copy_(state.get("unembed.b_U", torch.zeros(config["d_vocab"])))
        model.lm_head = unembed
    return model.to(dtype).eval(), tokenizer


def ungrouped_model(model: Any) -> Any:
    """For a model whose heads share keys and values (grouped- or multi-query attention),
    the same model with each query head given its own copy of its group's key and value
    projections: it computes the same function, and every head has its own q, k and v
    input, as EAP-IG's ``ungroup_grouped_query_attention`` gives. Other models as they
    are."""
    from transformers import AutoModelForCausalLM

    config = model.config
    text = getattr(config, "text_config", None) or config
    n_heads = getattr(text, "num_attention_heads", None)
    n_kv = getattr(text, "num_key_value_heads", None)
    if not n_heads or not n_kv or n_kv == n_heads:
        return model
    dtype = next(model.parameters()).dtype
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith(("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias")):
            per_group = tensor.unflatten(0, (n_kv, -1))
            state[name] = per_group.repeat_interleave(n_heads // n_kv, 0).flatten(0, 1)
    text.num_key_value_heads = n_heads
    with torch.device("meta"):
        ungrouped = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation="eager"
        )
    ungrouped.load_state_dict(state, assign=True, strict=False)
    for name, buffer in model.named_buffers():  # those the state leaves out (rotary tables)
        owner, _, attribute = name.rpartition(".")
        ungrouped.get_submodule(owner)._buffers[attribute] = buffer
    ungrouped.tie_weights()
    return ungrouped.eval()


def _check_hub_model(name: str, repo_id: str) -> None:
    """Fail fast, in one line, when a hub model is neither cached nor reachable."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a name that is not a valid repo id
        raise CircuitxError(
            f"unknown model {name!r}: not a built-in model, a local directory or a hub name"
        ) from None
    if isinstance(cached, str):
        return
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        raise CircuitxError(
            f"unknown model {name!r}: no such repository on the Hugging Face hub"
        ) from None
    except Exception:
        raise CircuitxError(
            f"cannot load {name!r}: it is not a built-in model (circuitx models lists them) "
            "or a local directory, and the Hugging Face hub is unreachable with the model not "
            "cached; pass a local model directory with --model DIR, or a built-in model "
            "such as --model planted"
        ) from None


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else with slashes is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


@contextlib.contextmanager
def quiet_loaders():
    """Silence the loaders' progress bars, warnings and log lines."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
