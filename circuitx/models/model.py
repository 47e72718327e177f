"""A loaded model (:class:`Model`): its bridge, tokenizer and shape, and passes with
hooks."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

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
# Texts whose token ids a model keeps (a task file's prompts are encoded by several checks)
ENCODE_CACHE = 1 << 20


@dataclass(eq=False)  # one model is itself: compared, and cached by, identity
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
    _encoded: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    @property
    def work_dtype(self) -> torch.dtype:
        """The dtype of caches, logits and every method's sums: float64 for a float64
        model, float32 otherwise (half precision's sums are taken at float32)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

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
        """The token put before every prompt; None where the tokenizer has none: the
        bridge names ``<|endoftext|>`` as BOS and EOS for a tokenizer with neither, which a
        vocabulary without it reads as its unknown token (a trial's word-level tokenizer
        had its [UNK] put first, silently)."""
        tok = self.tokenizer
        bos = tok.bos_token_id
        if bos is not None and bos == tok.unk_token_id and tok.bos_token != tok.unk_token:
            return None
        return bos

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
        """:meth:`encode` of each text: each distinct text not encoded before (the model
        keeps ``ENCODE_CACHE`` texts' ids), in one call to the tokenizer per
        ``ENCODE_CHUNK`` texts (a call cannot be interrupted: Ctrl-C waits for it)."""
        texts = list(texts)
        new = [text for text in dict.fromkeys(texts) if text not in self._encoded]
        for start in range(0, len(new), ENCODE_CHUNK):
            chunk = new[start : start + ENCODE_CHUNK]
            ids = self.tokenizer(
                chunk,
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            self._encoded.update(zip(chunk, map(tuple, ids)))
        encoded = [list(self._encoded[text]) for text in texts]
        if len(self._encoded) > ENCODE_CACHE:
            self._encoded.clear()
        return encoded

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` its tokenizer cannot read: those it encodes with its
        unknown token (a word-level tokenizer's fallback), unless they write it."""
        unknown, unknown_id = self.tokenizer.unk_token, self.tokenizer.unk_token_id
        if unknown_id is None or unknown_id not in self.encode(text):
            return []
        return [w for w in self._pieces(text) if unknown not in w and unknown_id in self.encode(w)]

    def _pieces(self, text: str) -> list[str]:
        """``text`` split where its tokenizer splits it before looking words up (a planted
        model's reads "store," as "store" and ","), else at whitespace."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        splitter = getattr(backend, "pre_tokenizer", None)
        if splitter is None:
            return text.split()
        return [text[start:end] for _, (start, end) in splitter.pre_tokenize_str(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def hooked_points(self) -> list[str]:
        """Where the bridge holds a caller's hooks (circuitx's own are gone after each
        pass): its hook points with any hook, each by all its names (``blocks.0.hook_in =
        blocks.0.hook_resid_pre``), and its other modules with a torch hook that is not
        the libraries' own (TransformerLens wires some into its blocks)."""
        names: dict[int, list[str]] = {}
        for name, point in self.bridge.hook_dict.items():
            names.setdefault(id(point), []).append(name)
        found = []
        for name, module in self.bridge.named_modules():
            if id(module) in names:
                if _hooks_of(module):
                    found.append(" = ".join(sorted(names[id(module)])))
            elif any(not _libraries(hook) for hook in _hooks_of(module)):
                found.append(name)
        return sorted(found)

    def enable_hooks(self, flags: Iterable[str]) -> None:
        """Turn on the optional hook points a method needs (see ``HOOK_FLAGS``)."""
        for flag in flags:
            self._set_flag(flag, True)

    @contextlib.contextmanager
    def hooks_enabled(self, flags: Iterable[str], only: bool = False) -> Iterator[None]:
        """Turn on optional hook points for the passes inside the block (with ``only``,
        turn the others off), then restore them.

        The split q/k/v path computes LayerNorm per head: equal in exact arithmetic, it
        differs in float rounding, so passes that do not need it run without it.
        """
        flags = tuple(flags)
        changed = HOOK_FLAGS if only else flags
        before = {flag: bool(getattr(self.bridge.cfg, HOOK_FLAGS[flag], False)) for flag in changed}
        for flag in changed:
            self._set_flag(flag, flag in flags)
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
        themselves never need gradients). Logits are in :attr:`work_dtype` (float32 for a
        half-precision model): metrics and their sums are taken at full precision.
        """
        tokens = tokens.to(self.device)
        hooks = list(hooks)
        if positions is not None:
            hooks.append((UNEMBED_INPUT_HOOK, lambda resid: _at(resid, positions, keep=True)))
        with torch.set_grad_enabled(grad):
            wrapped = [(name, _adapt_hook(fn)) for name, fn in hooks]
            logits = self.bridge.run_with_hooks(tokens, fwd_hooks=wrapped).to(self.work_dtype)
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
            x = bridge.unembed(x if positions is None else _at(x, positions))
            return x.to(self.work_dtype)

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
        gradients), in :attr:`work_dtype`."""
        cache: dict[str, torch.Tensor] = {}

        def store(name: str) -> HookFn:
            def hook(tensor: torch.Tensor) -> None:
                cache[name] = tensor.detach().to(self.work_dtype, copy=True)

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
            per_head = written.norm(dim=-1).unbind(2)  # [batch, pos] each
            norms.update({head_node(layer, h): norm for h, norm in enumerate(per_head)})
            if self.has_mlp:
                norms[mlp_node(layer)] = cache[mlp_output_hook(layer)].norm(dim=-1)
        return norms


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


def _hooks_of(module: torch.nn.Module) -> list[Callable[..., Any]]:
    """The forward and backward hooks registered on ``module``."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [hook for kind in kinds for hook in (getattr(module, kind, None) or {}).values()]


def _libraries(hook: Callable[..., Any]) -> bool:
    """Whether ``hook`` is a library's own (TransformerLens's, torch's, circuitx's)."""
    module = getattr(hook, "__module__", None) or getattr(
        getattr(hook, "func", None), "__module__", ""
    )
    return str(module).startswith(("transformer_lens", "torch", "transformers", "circuitx"))
