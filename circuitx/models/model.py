"""A loaded model (:class:`Model`: its bridge, tokenizer and shape, and passes with
hooks) and its parameters read out for the methods that compute the forward pass
themselves (:func:`transformer_weights`)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.models.hooks import (
    HOOK_FLAGS,
    LOGITS_INPUT_HOOK,
    UNEMBED_INPUT_HOOK,
    HookFn,
    head_output_hook,
    mlp_output_hook,
    post_attention_scale_hook,
    resid_pre_hook,
)
from circuitx.names import head_node, mlp_node

# Texts per tokenizer call: about 40 ms for short prompts, so Ctrl-C is not held up.
ENCODE_CHUNK = 2048


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


def config_model_type(hf_config: Any) -> str:
    """A Hugging Face config's ``model_type`` ("" where it has none)."""
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
