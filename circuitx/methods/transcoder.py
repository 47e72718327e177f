"""Transcoder circuits (Dunefsky, Chlenski & Nanda 2024; authors' code
jacobdunefsky/transcoder_circuits): attribution through transcoder features, the
attention heads' OV circuits and (beyond the paper) their queries and keys.

The target is the task's logit difference at END (``Task.logit_direction``: the answer's
logit minus the wrong tokens'; for greater-than the years above YY against the rest), the
quantity the paper traces. Every MLP is replaced by its transcoder, whose features are the
MLP's units. On the clean prompts the input-dependent quantities are frozen at their
values: attention patterns, LayerNorm scales, the features' ReLU gates, and the
transcoders' errors (MLP output minus reconstruction). The model is then linear from any
write to the residual stream to the target, and an attribution splits exactly into an
input-dependent factor times an input-invariant weight. From a feature f (layer l,
activation a_f) to a later feature g (layer l', position p):

    a_f(p) * [gate_g(p) dm/da_g(p) / s2(p)] * (W_dec[f] . C(w2 * W_enc[:, g]))

and through head h's OV circuit from position p to position q:

    a_f(p) * A_h(q, p) / s1(p) * (W_dec[f] C(w1 * W_V^h)) . (W_O^h dm/dresid(q))

(s: LayerNorm scales, C: centring, w: LayerNorm gains, A: attention pattern; RMSNorm has
no centring). The backward sweep carries dm/dresid down the layers with these frozen
factors. In a parallel block (GPT-NeoX) the MLP reads the block's input, as the heads do:
the gradient at the heads' output is the block output's, not the MLP input's.

Queries and keys (``--qk``). The paper freezes the patterns and traces OV paths only
(``off``: q and k edges score 0), which leaves every head that acts by moving where a
later head attends (IOI's S-inhibition and duplicate-token heads) with no score. ``linear``
lets the softmax live: dm/dA_h(q, k) = (v_h(k) W_O^h) . dm/dresid(q), through the softmax
to each head's queries and keys and back through W_Q, W_K (rotary included) and the frozen
norm, so that q and k receivers read C(w * W_Q^h dm/dq^h) / s1 like the v receivers, and
the sweep carries those gradients down too. The sums stay exact: a unit's outgoing edges
sum to its write times the replacement model's gradient. Through a saturated softmax that
gradient is near 0; ``fixed`` (the default) replaces each edge into a query or key by
AtP*'s QK fix, the head's pattern recomputed without the unit's write on that side,
``sum (A - A') . dm/dA`` (a feature-level MLP's rest unit takes the whole MLP's estimate
less its features').

Scores are summed over positions, averaged over prompts and divided by the clean logit
difference, so that they read as shares of it. A node's score is its write times the
metric's gradient at its write (the sum of its outgoing edge scores). With ``granularity
feature`` the graph also holds up to ``n_features`` features of each MLP with the largest
attributions (``m{L}.f{i}``, above the gradient resolution times the target) and one node
per MLP for the rest (``m{L}.rest``: its other features, output bias and transcoder
error); the head/MLP graph is their sum.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitx.attention import centred, frozen_norm, head_pattern, project_heads
from circuitx.builtin import BUILTIN_MODELS, FAMILIES
from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.methods.attribution import clean_attention, pattern_change_effects
from circuitx.methods.base import (
    FeatureScores,
    Method,
    MethodRun,
    Option,
    Scores,
    above_resolution,
    gradient_resolution,
    to_host,
)
from circuitx.models import (
    ATTN_ONLY_KEY,
    EMBED_OUTPUT_HOOK,
    MODEL_FAMILIES,
    BlockWeights,
    Model,
    TransformerWeights,
    attention_pattern_hook,
    head_output_hook,
    hub_config,
    is_tl_legacy_dir,
    looks_like_path,
    mlp_output_hook,
    norm_scale_hook,
    saved_config,
    transformer_weights,
)
from circuitx.names import head_node, mlp_node, parse_node
from circuitx.patching import KeptHooks, PatchingEngine, TokenMeans, ablate
from circuitx.transcoders import (
    NO_MLPS,
    Transcoders,
    fitted_elsewhere,
    input_hook,
    transcoders_for,
    transcoders_hub_names,
    transcoders_known,
)

GEMMA_2_REFUSAL = (
    "has norms after attention and MLP or soft-capping (Gemma-2): transcoder attribution "
    "does not take them"
)
GRANULARITIES = ("node", "feature")
QK_MODES = ("off", "linear", "fixed")
SEARCHES = ("threshold", "paths")
PATHS_SHOWN = 10  # the strongest paths the graph lists


@dataclass
class Units:
    """What a layer's senders write or its receivers read, per prompt and position:
    [n, pos, units, d_model], with a name per unit; ``side``: which input of its heads a
    block of head receivers reads (q, k or v)."""

    names: list[str]
    fields: torch.Tensor
    side: str | None = None


@dataclass
class Attribution:
    """The frozen-model attribution of one batch of prompts.

    ``senders[k]`` / ``receivers[k]`` are the units of block k in graph order (block 0 the
    input; then per layer its heads, then its MLP units; receivers: per layer the heads'
    v inputs, then its MLP units; last the logits). ``order`` gives each block's place in
    the forward pass, so that sender block s reaches receiver block r when
    ``order_s < order_r``. ``features[layer]`` is every feature's attribution [n_features].
    ``fixed[s, r]``: the QK-fixed scores [senders, receivers] of a q or k receiver block,
    in place of its fields' products.
    """

    senders: list[Units]
    sender_order: list[int]
    receivers: list[Units]
    receiver_order: list[int]
    features: dict[int, torch.Tensor]
    target: float  # the clean prompts' mean logit difference
    fixed: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def names_only(self) -> Attribution:
        """The blocks' unit names and order, without the per-prompt fields."""

        def strip(blocks: list[Units]) -> list[Units]:
            return [Units(units.names, torch.empty(0), units.side) for units in blocks]

        return Attribution(
            strip(self.senders),
            self.sender_order,
            strip(self.receivers),
            self.receiver_order,
            {},
            self.target,
        )

    def edge_blocks(self) -> dict[tuple[int, int], torch.Tensor]:
        """Edge scores per (sender block, receiver block) that can connect: summed over
        positions and prompts [senders, receivers]."""
        blocks = {}
        for r, receiver in enumerate(self.receivers):
            for s, sender in enumerate(self.senders):
                if (s, r) in self.fixed:
                    blocks[s, r] = self.fixed[s, r]
                elif self.sender_order[s] < self.receiver_order[r]:
                    blocks[s, r] = torch.einsum("npsd,nprd->sr", sender.fields, receiver.fields)
        return blocks


def replacement_hooks(model: Model) -> KeptHooks:
    """What :func:`attribute` reads from an engine's cached runs (its ``kept``): the
    frozen replacement model's inputs, the clean run's norm scales, attention patterns
    and MLP inputs (the transcoders' inputs), and the corrupted run's MLP inputs (the
    features' patch values)."""
    clean, mlps = [norm_scale_hook(None)], model.has_mlp
    for layer in range(model.n_layers):
        clean += [norm_scale_hook(layer, "ln1"), attention_pattern_hook(layer)]
        clean += [norm_scale_hook(layer, "ln2"), input_hook(layer)] if mlps else []
    corrupted = [input_hook(layer) for layer in range(model.n_layers)] if mlps else []
    scales = 1 + model.n_layers * (2 if mlps else 1)
    inputs = model.d_model * len(corrupted)  # the MLPs' inputs in one run
    return KeptHooks(
        tuple(clean),
        tuple(corrupted),
        floats_per_token=scales + 2 * inputs,
        floats_per_key=model.n_layers * model.n_heads,
    )


def attribute(
    engine: PatchingEngine,
    transcoders: Transcoders,
    top: int | dict[int, torch.Tensor] = 0,
    baselines: dict[int, torch.Tensor] | None = None,
    qk: str = "off",
) -> Attribution:
    """Backward sweep of the target's gradient through the frozen replacement model on one
    batch, an engine whose runs keep :func:`replacement_hooks`. ``top``: how many of each
    MLP's strongest features (in this batch) become units of their own, or which (by
    layer); ``baselines``: each MLP's features' patch values (default: from this batch's
    corrupted run by the engine's ablation); ``qk``: attention patterns frozen (off),
    live (linear: the gradient through each head's softmax), or live with the edges into
    queries and keys QK-fixed (fixed)."""
    model, data, readout = engine.model, engine.data, engine.readout
    weights = check_attributable(model)
    n_layers, has_mlp = model.n_layers, model.has_mlp
    wanted, kept = replacement_hooks(model), engine.kept
    if not (set(wanted.clean) <= set(kept.clean) and set(wanted.corrupted) <= set(kept.corrupted)):
        raise CircuitxError(
            "transcoder attribution reads hook points this engine's runs did not keep: "
            "build it with kept=replacement_hooks(model) (a method's kept_hooks)"
        )
    frozen, corrupted = engine.clean_kept, engine.corrupted_kept
    changes = {  # what each sender writes, minus its patch value: the attribution baseline
        name: value - engine.patch_cache[name]
        for name, value in engine.clean_cache.items()
        if name in engine.patch_cache
    }
    n, width = data.clean.shape
    rows = torch.arange(n, device=model.device).unsqueeze(1)
    at = readout.to(model.device)

    # dm/dresid at the final LayerNorm's input: only the readout positions matter
    grad = torch.zeros(n, width, model.d_model, device=model.device, dtype=model.work_dtype)
    final = engine.clean_resid_final[rows, at].detach().requires_grad_(True)  # [n, P, d]
    scale_final = frozen[norm_scale_hook(None)][rows, at]
    direction = engine.task.logit_direction(data, model.d_vocab).to(grad)
    direction = direction.view(*at.shape, -1)  # [n, P, vocab]
    with torch.enable_grad():
        normed = frozen_norm(final, scale_final, weights.ln_final, weights.rms)
        logits = normed @ weights.W_U + weights.b_U
        target = (logits * direction).sum(-1).mean()
        (readout_grad,) = torch.autograd.grad(target, final)
    grad[rows, at] = readout_grad
    # a feature's least attribution to be a unit of its own
    floor = gradient_resolution(model) * abs(float(target.detach()))
    receivers = [Units(["logits"], grad.unsqueeze(2))]
    receiver_order = [2 * n_layers]
    senders, sender_order, features, pattern_grads = [], [], {}, {}
    for layer in reversed(range(n_layers)):
        block = weights.blocks[layer]
        # the gradient at the heads' output: past the MLP, or (parallel) the block's output
        grad_heads = grad
        if has_mlp:
            transcoder = transcoders[layer]
            if baselines is None:
                baseline = ablate(
                    transcoder.features(corrupted[input_hook(layer)]),
                    engine.ablation,
                    real=data.real_tokens,
                )
            else:
                baseline = baselines[layer]
            mlp_senders, mlp_receivers, features[layer], through = _mlp_units(
                layer,
                transcoder,
                block,
                frozen,
                baseline,
                changes[mlp_output_hook(layer)],
                grad,
                top if isinstance(top, int) else top[layer],
                weights.rms,
                floor,
            )
            senders.append(mlp_senders)
            # a parallel block's MLP neither reads nor is read by its own layer's heads
            order = 2 * layer + (0 if weights.parallel else 1)
            sender_order.append(order)
            receivers.append(mlp_receivers)
            receiver_order.append(order)
            grad_heads = grad if weights.parallel else grad + through
            grad = grad + through
        x = engine.clean_resid(layer).to(engine.model.work_dtype)
        head_senders, head_receivers, through, pattern_grads[layer] = _head_units(
            layer, block, weights, frozen, changes, x, grad_heads, qk
        )
        senders.append(head_senders)
        sender_order.append(2 * layer)
        receivers += head_receivers
        receiver_order += [2 * layer] * len(head_receivers)
        grad = grad + through
    senders.append(Units(["input"], changes[EMBED_OUTPUT_HOOK].unsqueeze(2)))
    sender_order.append(-1)
    target = float((engine.clean_final * direction.flatten(0, 1)).sum(-1).mean())
    result = Attribution(
        senders[::-1], sender_order[::-1], receivers[::-1], receiver_order[::-1], features, target
    )
    if qk == "fixed":
        result.fixed = _qk_fixed_blocks(engine, weights, result, pattern_grads)
    return result


def _qk_fixed_blocks(
    engine: PatchingEngine,
    weights: TransformerWeights,
    result: Attribution,
    pattern_grads: dict[int, torch.Tensor],
) -> dict[tuple[int, int], torch.Tensor]:
    """AtP*'s QK fix of every (sender block, q or k receiver block) pair: each sender unit's
    write taken out of a later layer's query (key) input, its pattern recomputed, times
    the target's gradient at the pattern. A feature-level MLP block's rest unit takes the
    whole MLP's estimate less its features' (the parts' estimates need not add up)."""
    blocks = {}
    receiver_at = {
        (order, units.side): r
        for r, (units, order) in enumerate(zip(result.receivers, result.receiver_order))
    }
    for layer, grads in pattern_grads.items():
        x, block = engine.clean_resid(layer).to(engine.model.work_dtype), weights.blocks[layer]
        clean = clean_attention(x, block, weights)  # the same for every sender block
        q_block, k_block = receiver_at[2 * layer, "q"], receiver_at[2 * layer, "k"]
        for s, sender in enumerate(result.senders):
            if result.sender_order[s] >= 2 * layer:
                continue
            deltas = sender.fields.permute(2, 0, 1, 3)  # [units, n, pos, d_model]
            split = len(sender.names) > 1 and sender.names[-1].endswith(".rest")
            if split:  # the features, then the whole MLP
                deltas = torch.cat([deltas[:-1], deltas.sum(0, keepdim=True)])
            on_queries, on_keys = pattern_change_effects(
                x, deltas, block, weights, grads.unsqueeze(0), clean
            )
            for r, effects in ((q_block, on_queries[0]), (k_block, on_keys[0])):
                if split:
                    effects = torch.cat([effects[:-1], effects[-1:] - effects[:-1].sum(0)])
                blocks[s, r] = effects
    return blocks


def check_attributable(model: Model) -> TransformerWeights:
    """The weights of a GPT-2- or Llama-style model, or a one-line error (Gemma-2's norms
    after attention and MLP and its soft-capping are not in the frozen replacement model)."""
    weights = transformer_weights(model, llama=True)
    if model.post_attention_norm or weights.attn_softcap or weights.logit_softcap:
        raise CircuitxError(f"model {model.name!r} {GEMMA_2_REFUSAL}")
    return weights


def _norm_backward(
    y: torch.Tensor, scale: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor], rms: bool
) -> torch.Tensor:
    """The gradient at a LayerNorm's input from the gradient ``y`` at its output, with the
    scale frozen: C(w * y) / s (RMSNorm: w * y / s). ``scale`` broadcasts against ``y``
    from the left."""
    weighted = y * norm[0]
    return (weighted if rms else centred(weighted)) / scale


def _mlp_units(
    layer: int,
    transcoder: Any,
    block: Any,
    frozen: dict[str, torch.Tensor],
    baseline: torch.Tensor,
    mlp_change: torch.Tensor,
    grad: torch.Tensor,
    top: int | torch.Tensor,
    rms: bool,
    floor: float,
) -> tuple[Units, Units, torch.Tensor, torch.Tensor]:
    """An MLP's sender and receiver units, every feature's attribution, and the gradient
    that flows through it to the residual stream before it. ``baseline``: the features'
    patch values; ``mlp_change``: the MLP's output minus its patch value; ``top``: the
    features that become units (ascending), or how many of the strongest (of those whose
    |attribution| is above ``floor``: :func:`strongest`)."""
    x = frozen[input_hook(layer)]
    scale = frozen[norm_scale_hook(layer, "ln2")]  # [n, pos, 1]
    acts = transcoder.features(x)  # [n, pos, F]
    changes = acts - baseline
    dm_da = grad @ transcoder.W_dec.T  # [n, pos, F]
    attributions = (changes * dm_da).sum((0, 1))
    dm_dpre = dm_da * (acts > 0)
    through = _norm_backward(dm_dpre @ transcoder.W_enc.T, scale, block.ln2, rms)
    if isinstance(top, int):
        top = strongest(attributions, top, floor)
    names = [f"m{layer}.f{int(i)}" for i in top] + [f"m{layer}.rest"]
    writes = changes[..., top].unsqueeze(-1) * transcoder.W_dec[top]  # [n, pos, k, d]
    rest_write = mlp_change - writes.sum(2)
    reads = dm_dpre[..., top].unsqueeze(-1) * _norm_backward(
        transcoder.W_enc[:, top].T, scale.unsqueeze(-1), block.ln2, rms
    )
    rest_read = through - reads.sum(2)
    sender = Units(names, torch.cat([writes, rest_write.unsqueeze(2)], 2))
    receiver = Units(names, torch.cat([reads, rest_read.unsqueeze(2)], 2))
    return sender, receiver, attributions, through


def strongest(attributions: torch.Tensor, count: int, floor: float) -> torch.Tensor:
    """The ``count`` features [F] with the largest |attribution|, ascending, of those above
    ``floor``: the model's gradient resolution times the target, below which rounding
    ranks them, as it does the scores :func:`above_resolution` cuts (on planted
    docstring, whose MLPs do nothing, 8 of the 40 features chosen changed with the
    prompts' parts; a trial's 10th feature of m3, at 1.6e-9 of the target, was f270 or
    f180)."""
    ranked = attributions.abs().topk(min(count, len(attributions)))
    return ranked.indices[ranked.values > floor].sort().values


def _head_units(
    layer: int,
    block: BlockWeights,
    weights: TransformerWeights,
    frozen: dict[str, torch.Tensor],
    changes: dict[str, torch.Tensor],
    x: torch.Tensor,
    grad: torch.Tensor,
    qk: str,
) -> tuple[Units, list[Units], torch.Tensor, torch.Tensor | None]:
    """A layer's heads as senders (z W_O) and as receivers (their v inputs; and, with
    ``qk`` other than off, their q and k inputs through the live softmax), the gradient
    that flows through them to the residual stream ``x`` before them, and the gradient
    at their pattern [n, head, query, key] (None with ``qk`` off)."""
    pattern = frozen[attention_pattern_hook(layer)]  # [n, head, query, key]
    scale = frozen[norm_scale_hook(layer, "ln1")]  # [n, pos, 1]
    writes = torch.einsum("npse,sed->npsd", changes[head_output_hook(layer)], block.W_O)
    dm_dz = torch.einsum("nqd,hed->nqhe", grad, block.W_O)
    dm_dv = torch.einsum("nhqk,nqhe->nkhe", pattern, dm_dz)
    reads = _norm_backward(
        torch.einsum("nkhe,hde->nkhd", dm_dv, block.W_V),
        scale.unsqueeze(-1),
        block.ln1,
        weights.rms,
    )
    names = [head_node(layer, head) for head in range(writes.shape[2])]
    receivers, through, pattern_grad = [Units(names, reads, "v")], reads.sum(2), None
    if qk != "off":
        normed = frozen_norm(x, scale, block.ln1, weights.rms)
        values = torch.einsum("npd,hde->nphe", normed, block.W_V) + block.b_V
        pattern_grad = torch.einsum("nqhe,nkhe->nhqk", dm_dz, values)
        for side, read in zip("qk", _qk_reads(normed, scale, pattern_grad, block, weights)):
            receivers.append(Units(names, read, side))
            through = through + read.sum(2)
    return Units(names, writes), receivers, through, pattern_grad


def _qk_reads(
    normed: torch.Tensor,
    scale: torch.Tensor,
    pattern_grad: torch.Tensor,
    block: BlockWeights,
    weights: TransformerWeights,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's gradient at each head's query input and key input [n, pos, head,
    d_model] (before the frozen norm), from its gradient at the pattern through the
    softmax: one input per head, so that autograd keeps the heads apart."""
    heads = block.W_Q.shape[0]
    with torch.enable_grad():
        inputs = [
            normed.detach().unsqueeze(2).repeat(1, 1, heads, 1).requires_grad_(True) for _ in "qk"
        ]
        query = project_heads(inputs[0], block.W_Q, block.b_Q, weights, per_head=True)
        key = project_heads(inputs[1], block.W_K, block.b_K, weights, per_head=True)
        pattern = head_pattern(query, key, block, weights)
        grads = torch.autograd.grad(pattern, inputs, pattern_grad)
    return tuple(_norm_backward(g, scale.unsqueeze(-1), block.ln1, weights.rms) for g in grads)


class TranscoderMethod(Method):
    name = "transcoder"
    title = "Transcoder circuits: feature activation x input-invariant weights, OV and QK"
    granularity = "node"
    scores_edges = True
    default_threshold = 0.01
    holds_circuits = False  # its frozen replacement model runs outside the engine
    own_target = "attributes the task's logit difference whatever --metric is"
    own_target_metrics = ("logit-diff", "prob-diff")
    reported_facts = (
        ("transcoders_source", "transcoders"),
        ("transcoders_fitted_elsewhere", "transcoders fitted on"),
        ("paths", "strongest paths (share of the target)"),
    )
    options = (
        Option(
            "transcoders",
            "str",
            None,
            "directory or hub repo of transcoders for every MLP (default: "
            "pchlenski/gpt2-transcoders for gpt2; trained once and cached for built-in models)",
        ),
        Option(
            "granularity",
            "str",
            "node",
            "node writes the head/MLP graph; feature adds each MLP's strongest transcoder "
            "features as nodes m{L}.f{i} (the rest as m{L}.rest)",
            choices=GRANULARITIES,
        ),
        Option(
            "n_features",
            "int",
            10,
            "features kept per MLP with --granularity feature (at most: those whose attribution "
            "is above 1e-4 of the target, 1e-11 in float64)",
            low=1,
            only_with=("granularity", ("feature",)),
        ),
        Option(
            "qk",
            "str",
            "fixed",
            "attention through queries and keys: off freezes the patterns (the paper's OV "
            "paths only); linear takes the gradient through each softmax; fixed also "
            "recomputes each head's pattern without each earlier unit's write (AtP*'s QK fix)",
            choices=QK_MODES,
        ),
        Option(
            "search",
            "str",
            "threshold",
            "the circuit: the nodes scoring at least the threshold, or the union of the "
            "strongest paths from the logits back (a greedy path search after the paper's)",
            choices=SEARCHES,
        ),
        Option(
            "n_paths",
            "int",
            10,
            "paths kept at each step of --search paths",
            low=1,
            only_with=("search", ("paths",)),
        ),
        Option(
            "path_share",
            "float",
            0.001,
            "--search paths keeps only paths that carry at least this share of the target",
            low=0,
            high=1,
            only_with=("search", ("paths",)),
        ),
        Option(
            "path_length",
            "int",
            None,
            "steps back from the logits with --search paths (default: 2 x layers + 1, "
            "enough to reach the input)",
            low=1,
            only_with=("search", ("paths",)),
        ),
    )
    _loaded: tuple[tuple[str, str, str, str | None, str | None], tuple[Transcoders, str]] | None
    _loaded = None

    def warnings(self, facts: dict[str, Any]) -> list[str]:
        elsewhere = facts.get("transcoders_fitted_elsewhere")
        return [] if elsewhere is None else [f"transcoder: {elsewhere}"]

    def model_refusal(self, options: dict[str, Any], model: str) -> str | None:
        # a local directory's config.json, or a hub model's, says what the loaded model would
        # (check_attributable); a built-in model's or family's name is its own, whatever
        # directory has it here
        directory = os.path.expanduser(model)
        builtin = model in BUILTIN_MODELS or model in FAMILIES
        local = not builtin and os.path.isdir(directory)
        hub = not builtin and not local and not looks_like_path(model)
        config = saved_config(directory) if local else hub_config(model) if hub else None
        # TransformerLens's format (no model_type): a local one only with its .pth weights
        if local:
            legacy = is_tl_legacy_dir(directory)
        else:
            legacy = config is not None and "model_type" not in config
        loadable = legacy or (config is not None and config.get("model_type") in MODEL_FAMILIES)
        if local and not loadable:
            return None  # loading it says what is wrong (no config, an unknown kind)
        if loadable:
            if config.get("attn_only") is True or config.get(ATTN_ONLY_KEY) is True:
                return f"model {model!r} {NO_MLPS}"
            if config.get("model_type") == "gemma2":
                return f"model {model!r} {GEMMA_2_REFUSAL}"
        if options["transcoders"] is not None or transcoders_known(model):
            return None
        names = ", ".join(transcoders_hub_names())  # a misspelt hub name is seen among them
        known = "" if local else f" (known: the built-in models, {names})"
        return (  # discover and the leaderboard name the directory differently
            f"no transcoders known for model {model!r}{known}: name a directory of them "
            "(discover's --transcoders DIR, the leaderboard's --option "
            "transcoder.transcoders=DIR; train them with `circuitx train-transcoders`)"
        )

    def check(self, model: Model, run: MethodRun) -> None:
        check_attributable(model)
        self._transcoders(model, run)  # missing or mismatched: one line

    def _transcoders(self, model: Model, run: MethodRun) -> tuple[Transcoders, str]:
        """The model's transcoders, loaded (or, for a built-in model, trained) once."""
        source = run.options["transcoders"]
        key = (model.source, str(model.device), str(model.dtype), source, run.cache_dir)
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = (key, transcoders_for(model, source, run.cache_dir))
        return self._loaded[1]

    def _kept_features(self, model: Model, run: MethodRun) -> int:
        """Features each MLP keeps as nodes: none at node granularity, and at most the
        transcoders' width."""
        if run.options["granularity"] != "feature":
            return 0
        width = min(t.n_features for t in self._transcoders(model, run)[0].values())
        return min(run.options["n_features"], width)

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return 2

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        # every layer's sender and receiver units, and a pattern's worth of work
        units = model.n_heads + self._kept_features(model, run) + 1
        if run.options["qk"] != "off":  # q and k receivers, per-head inputs, pattern grads
            units += 4 * model.n_heads
        return model.n_layers * (2 * units * model.d_model + model.n_heads * model.n_ctx)

    def kept_hooks(self, model: Model, run: MethodRun) -> KeptHooks:
        return replacement_hooks(model)

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        model, options = engine.model, run.options
        transcoders, source = self._transcoders(model, run)
        run.advance(1)
        n_top = self._kept_features(model, run)
        baselines = None
        if engine.ablation == "mean" and engine.n_parts > 1:
            baselines = _mean_feature_baselines(engine, transcoders)
        chosen: int | dict[int, torch.Tensor] = n_top
        if n_top and engine.n_parts > 1:  # the strongest features over all prompts
            totals: dict[int, torch.Tensor] = {}
            whole = 0.0  # the target
            for part, weight in engine.parts():
                found = attribute(part, transcoders, 0, baselines, options["qk"])
                whole += weight * found.target
                for layer, values in found.features.items():
                    totals[layer] = totals.get(layer, 0.0) + weight * values
            floor = gradient_resolution(model) * abs(whole)
            chosen = {layer: strongest(values, n_top, floor) for layer, values in totals.items()}
        target, blocks = 0.0, {}
        for part, weight in engine.parts():
            result = attribute(part, transcoders, chosen, baselines, options["qk"])
            target += weight * result.target
            for key, value in result.edge_blocks().items():
                blocks[key] = blocks.get(key, 0.0) + weight * value
            named = result.names_only()  # every part names its units alike
            del result  # its tensors go before the next part's are made
        if abs(target) < 1e-9:
            raise CircuitxError("the clean prompts' logit difference is 0: nothing to attribute")
        blocks = to_host({key: value / target for key, value in blocks.items()})
        edges, nodes = _component_scores(engine, named, blocks)
        # as the gradient methods': scores below 1e-4 of the largest are rounding (on planted
        # greater-than, 61 edges under 3e-5 of it changed sign with the memory split)
        edges, nodes = above_resolution(edges, model), above_resolution(nodes, model)
        features = feature_level(named, blocks) if n_top else None
        run.advance(1)
        facts: dict[str, Any] = {"transcoders_source": source}
        elsewhere = fitted_elsewhere(source, model)
        if elsewhere is not None:
            facts["transcoders_fitted_elsewhere"] = elsewhere
        chosen = None
        if options["search"] == "paths":
            length = options["path_length"] or 2 * model.n_layers + 1
            chosen, paths = greedy_paths(
                engine.layout, edges, nodes, options["n_paths"], length, options["path_share"]
            )
            facts["paths"] = [
                " <- ".join(path.nodes) + f": {path.share:.4g}" for path in paths[:PATHS_SHOWN]
            ]
        return dataclasses.replace(
            Scores.of_edges(edges, nodes, facts=facts, features=features), chosen=chosen
        )


@dataclass
class Path:
    """A path from the logits back (``nodes[0]`` is the logits) and the share of the
    target's attribution that flows along it."""

    nodes: list[str]
    edges: list[tuple[int, int]]  # (sender, receiver), from the logits back
    share: float
    first: int  # the index among the layout's nodes of the node it now starts from


def greedy_paths(
    layout: Layout,
    edges: torch.Tensor,
    nodes: torch.Tensor,
    n_paths: int,
    length: int,
    min_share: float = 0.0,
) -> tuple[torch.Tensor, list[Path]]:
    """A greedy path search after the paper's, on the attribution graph: from the logits,
    extend every kept path by each edge into its first node u, scored by the path's share
    times |e| / max(sum of |e| into u, |score of u|): how u's attribution splits among its
    inputs (where its inputs together explain less than its own score, the rest is its
    own and goes nowhere); keep the ``n_paths`` strongest of at least ``min_share``,
    ``length`` times (a path that reaches the input stops). A path's nodes are named with
    the input they are entered by (``a3.h0<q>``). Returns the union of every path kept at
    any step as chosen edges [n_senders, n_receivers] (bool), and those paths, strongest
    first."""
    magnitude = (edges.abs() * layout.valid).double()
    owner = layout.receiver_owner
    logits = layout.n_senders  # the logits' index among the nodes
    into = {logits: torch.tensor([layout.logits_receiver])}
    for node in range(1, layout.n_senders):
        into[node] = (owner == node).nonzero().flatten()
    names = [name for name, *_ in layout.nodes]
    current, kept = [Path([names[logits]], [], 1.0, logits)], []
    for _ in range(length):
        candidates = []
        for path in current:
            if path.first == 0:  # the input: nothing enters it
                continue
            receivers = into[path.first]
            block = magnitude[:, receivers]
            total = float(block.sum())
            if path.first != logits:
                total = max(total, abs(float(nodes[path.first])))
            if total == 0.0:
                continue
            values, order = block.flatten().topk(min(n_paths, block.numel()))
            for value, index in zip(values.tolist(), order.tolist()):
                sender, column = divmod(index, len(receivers))
                share = path.share * value / total
                if share < min_share or value == 0.0:
                    break
                receiver = int(receivers[column])
                entered = layout.receivers[receiver][1]
                named = path.nodes[:-1] + [path.nodes[-1] + (f"<{entered}>" if entered else "")]
                candidates.append(
                    Path(named + [names[sender]], path.edges + [(sender, receiver)], share, sender)
                )
        if not candidates:
            break
        candidates.sort(key=lambda path: -path.share)
        current = candidates[:n_paths]
        kept += current
    chosen = torch.zeros(layout.n_senders, layout.n_receivers, dtype=torch.bool)
    for path in kept:
        for sender, receiver in path.edges:
            chosen[sender, receiver] = True
    return chosen, sorted(kept, key=lambda path: -path.share)


def _mean_feature_baselines(engine: Engine, transcoders: Transcoders) -> dict[int, torch.Tensor]:
    """Each MLP's features averaged over all corrupted prompts, [1, pos, F] by layer: their
    patch values under mean ablation."""
    model = engine.model
    sums = TokenMeans()
    if not model.has_mlp:
        return {}
    for part, _ in engine.parts():
        corrupted = part.corrupted_kept  # the MLPs' inputs (replacement_hooks)
        for layer in range(model.n_layers):
            features = transcoders[layer].features(corrupted[input_hook(layer)])
            sums.add(layer, features, part.data.real_tokens)
    return sums.means(features.dtype)


def _component_scores(
    engine: Engine, result: Attribution, blocks: dict[tuple[int, int], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge scores [n_senders, n_receivers] and node scores [n_senders] of the head/MLP
    graph: units summed into their component (q and k receivers stay 0 with ``qk`` off)."""
    layout = engine.layout

    def sender_of(unit: str) -> int:  # a feature unit belongs to its MLP
        kind, layer, _ = parse_node(unit)
        return layout.sender(mlp_node(layer) if kind == "feature" else unit)

    def receiver_of(unit: str, side: str | None) -> int:
        kind, layer, head = parse_node(unit)
        if kind == "logits":
            return layout.logits_receiver
        if kind == "head":
            return layout.head_receiver(layer, side or "v", head)
        return layout.mlp_receiver(layer)

    edges = torch.zeros(layout.n_senders, layout.n_receivers, dtype=engine.model.work_dtype)
    for (s, r), scores in blocks.items():
        rows = torch.tensor([sender_of(u) for u in result.senders[s].names])
        receivers = result.receivers[r]
        columns = torch.tensor([receiver_of(u, receivers.side) for u in receivers.names])
        summed = torch.zeros(layout.n_senders, len(columns), dtype=edges.dtype)
        summed.index_add_(0, rows, scores.to(edges.dtype))
        edges.index_add_(1, columns, summed)  # an MLP's units share its receiver
    return edges, edges.sum(1)  # a node's score: its write times the gradient there


def feature_level(
    result: Attribution, blocks: dict[tuple[int, int], torch.Tensor]
) -> FeatureScores:
    """The feature units' scores (top features and each MLP's rest) and every edge with a
    feature unit at one end, ``(sender, receiver, head input, score)``."""
    nodes: dict[str, float] = {}
    edges = []
    for (s, r), scores in blocks.items():
        senders, receivers = result.senders[s].names, result.receivers[r].names
        for i, sender in enumerate(senders):
            if _is_feature_unit(sender):
                nodes[sender] = nodes.get(sender, 0.0) + float(scores[i].sum())
        if not any(map(_is_feature_unit, senders + receivers)):
            continue
        head_input = result.receivers[r].side
        for i, sender in enumerate(senders):
            for j, receiver in enumerate(receivers):
                if _is_feature_unit(sender) or _is_feature_unit(receiver):
                    edges.append((sender, receiver, head_input, float(scores[i, j])))
    return FeatureScores(nodes, edges)


def _is_feature_unit(name: str) -> bool:
    return parse_node(name)[0] == "feature"
