"""CD-T's decomposition: the whole activations it carries are the model's own, a source
that is everything carries everything, and on a model with no nonlinearity the source's
part is its exact linear contribution, computed here independently from the model's
hooks; carrying rel alone (irrel = whole - rel) gives what carrying both parts gives."""

import json

import pytest
import torch
from conftest import tiny_gpt2

from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_causal_lm, save_tl_legacy_attn_only, word_level_tokenizer
from circuitx.decomposition import Sources, Wholes, embed, propagate
from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.models import transformer_weights
from circuitx.tasks import task_vocabulary

# decomposition point -> the model's hook holding the whole activation
HOOKS = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "q": "blocks.{}.attn.hook_q",
    "k": "blocks.{}.attn.hook_k",
    "v": "blocks.{}.attn.hook_v",
    "pattern": "blocks.{}.attn.hook_pattern",
    "z": "blocks.{}.attn.hook_z",
    "attn_out": "blocks.{}.hook_attn_out",
    "mlp_pre": "blocks.{}.mlp.hook_pre",
    "mlp_post": "blocks.{}.mlp.hook_post",
    "mlp_out": "blocks.{}.hook_mlp_out",
    "resid_final": "ln_final.hook_in",
}
POST_SCALE = "blocks.{}.ln1_post.hook_scale"  # Gemma-2's norm on the summed head outputs


FAMILIES = ["llama", "qwen2", "mistral", "neox", "gemma2"]


@pytest.fixture(scope="module", params=["causal", "bidirectional", *FAMILIES, "attn-only"])
def model_3x4(tmp_path_factory, request):
    """3 layers x 4 heads, d_model 32, with weights large enough to make LayerNorm, the
    softmax and GELU work away from their linear ranges; causal, or attending both ways
    (as tracr models do); or Llama's, Qwen2's and Mistral's blocks (RMSNorm, rotary
    positions, gated MLPs, grouped keys ungrouped; Qwen2 with q, k and v biases, Mistral
    with a sliding window of 4), GPT-NeoX's (parallel attention and MLP, rotary positions
    over a quarter of each head), Gemma-2's (offset RMSNorm also after attention and MLP,
    soft-capped scores and logits, a sliding window of 4 on every other layer, scaled
    embeddings), or an attention-only model in the legacy TransformerLens format."""

    def bidirectional(model):
        model.config.is_causal = False

    directory = tmp_path_factory.mktemp("m3x4")
    tokenizer = word_level_tokenizer(task_vocabulary())
    if request.param in FAMILIES:
        save_causal_lm(directory, request.param, tokenizer, 3, 4, 32, 5, initializer_range=0.3)
        if request.param == "mistral":  # a window shorter than the test prompts
            config = json.loads((directory / "config.json").read_text())
            (directory / "config.json").write_text(json.dumps({**config, "sliding_window": 4}))
        return load_model(str(directory), device="cpu")
    if request.param == "attn-only":
        save_tl_legacy_attn_only(directory, tokenizer, 3, 4, 32, seed=5, scale=0.3)
        return load_model(str(directory), device="cpu")
    edit = bidirectional if request.param == "bidirectional" else None
    model = load_model(str(tiny_gpt2(directory, 3, 4, 32, seed=5, edit=edit)), device="cpu")
    assert model.causal == (request.param == "causal")
    return model


def hooks_of(model):
    """HOOKS, with q and k after the rotation on a rotary model, and a gated MLP's linear
    half."""
    if not model.has_mlp:
        return {point: hook for point, hook in HOOKS.items() if not point.startswith("mlp")}
    if model.bridge.cfg.positional_embedding_type != "rotary":
        return HOOKS
    hooks = {**HOOKS, "q": "blocks.{}.attn.hook_rot_q", "k": "blocks.{}.attn.hook_rot_k"}
    if model.parallel:  # GPT-NeoX's bridge fires no rotated q and k: the pattern, made
        del hooks["q"], hooks["k"]  # from them, is checked
    if model.bridge.cfg.gated_mlp:
        hooks["mlp_pre_linear"] = "blocks.{}.mlp.hook_pre_linear"
    return hooks


def decompose(model, tokens, chosen, patches, layer=0, wholes=None):
    """(rel, whole) at every observed point, and of the logits at the last position."""
    weights = transformer_weights(model, llama=True)
    seen = {}

    def observe(point, at, rel, whole):
        seen[point, at] = rel, whole

    layout = Layout(model.n_layers, model.n_heads, model.has_mlp)
    end = torch.full((tokens.shape[0], 1), tokens.shape[1] - 1)
    start = embed(weights, tokens)
    sources = Sources(layout, chosen, patches)
    logits = propagate(weights, start, layer, sources, end, observe, wholes)
    return seen, logits


def random_patches(model, n, width, seed=0):
    """A random patch value for every sender chunk of the layout."""
    generator = torch.Generator().manual_seed(seed)
    layout = Layout(model.n_layers, model.n_heads, model.has_mlp)
    patches = {}
    for chunk in layout.chunks:
        shape = (
            (n, width, model.n_heads, model.d_head) if chunk.heads else (n, width, model.d_model)
        )
        patches[chunk.first] = torch.randn(*shape, generator=generator)
    return layout, patches


def four_sources(layout):
    """The embeddings; one head; one MLP; five senders at random."""
    chosen = torch.zeros(4, layout.n_senders, dtype=torch.bool)
    chosen[0, 0] = True
    chosen[1, layout.head_sender(0, 2)] = True
    chosen[2, layout.mlp_sender(1)] = True
    chosen[3, torch.randperm(layout.n_senders, generator=torch.Generator().manual_seed(2))[:5]] = (
        True
    )
    return chosen


def test_the_whole_activations_are_the_models_everywhere(model_3x4):
    model = model_3x4
    tokens = torch.randint(1, model.d_vocab, (3, 9), generator=torch.Generator().manual_seed(1))
    layout, patches = random_patches(model, 3, 9)
    seen, (logits, whole_logits) = decompose(model, tokens, four_sources(layout), patches)
    hooks = hooks_of(model)
    names = [*hooks.values(), *([POST_SCALE] if model.post_attention_norm else [])]
    full, cache = model.run_with_cache(tokens, [h.format(i) for h in names for i in range(3)])
    assert {point for point, _ in seen} >= set(hooks)  # every hook is checked
    for (point, layer), (_, whole) in seen.items():
        if point not in hooks:
            continue
        expected = cache[hooks[point].format(layer)]
        if point == "z" and model.post_attention_norm:  # z over the norm's scale
            expected = expected / cache[POST_SCALE.format(layer)].unsqueeze(-2)
        size_of = seen["q", layer][1] if point == "pattern" else expected  # scores from q, k
        tolerance = 1e-4 + 1e-6 * float(size_of.abs().max())
        assert torch.allclose(whole, expected, atol=tolerance), (point, layer)
    assert torch.allclose(whole_logits, full[:, -1], atol=1e-4 + 1e-6 * float(full.abs().max()))
    # the sources really were split: each has a rel part, and it differs between them
    assert all(logits[s].abs().max() > 1e-3 for s in range(4))
    assert not torch.allclose(logits[0], logits[1], atol=1e-3)


def test_each_source_gets_its_own_part_side_by_side_or_alone_from_any_layer(model_3x4):
    """Sources decomposed side by side get what each gets alone; a record of the whole
    activations shared between decompositions (from layer 0, then from layer 1) gives
    what a fresh one gives."""
    model = model_3x4
    tokens = torch.randint(1, model.d_vocab, (2, 7), generator=torch.Generator().manual_seed(9))
    layout, patches = random_patches(model, 2, 7)
    chosen = four_sources(layout)
    shared = Wholes()
    _, (together, _) = decompose(model, tokens, chosen, patches, wholes=shared)
    for source in range(4):
        _, (alone, _) = decompose(model, tokens, chosen[source : source + 1], patches)
        size = 1 + float(alone.abs().max())  # random patches make some parts large
        assert torch.allclose(together[source], alone[0], atol=1e-5 * size), source
    later = torch.zeros(1, layout.n_senders, dtype=torch.bool)
    later[0, layout.head_sender(1, 3)] = True
    weights = transformer_weights(model, llama=True)
    _, cache = model.run_with_cache(tokens, ["blocks.1.hook_resid_pre"])
    end = torch.full((2, 1), 6)
    results = [
        propagate(
            weights,
            cache["blocks.1.hook_resid_pre"],
            1,
            Sources(layout, later, patches),
            end,
            wholes=record,
        )
        for record in (shared, Wholes())
    ]
    assert results[0][0].abs().max() > 1e-3
    for mine, fresh in zip(*results):
        assert torch.allclose(mine, fresh, atol=1e-5 * (1 + float(fresh.abs().max())))


def test_before_its_source_the_rel_part_is_zero(model_3x4):
    model = model_3x4
    tokens = torch.randint(1, model.d_vocab, (2, 6), generator=torch.Generator().manual_seed(3))
    layout, patches = random_patches(model, 2, 6)
    chosen = torch.zeros(1, layout.n_senders, dtype=torch.bool)
    chosen[0, layout.head_sender(2, 1)] = True
    seen, _ = decompose(model, tokens, chosen, patches)
    for layer in range(2):
        for point in ("resid_pre", "q", "z", *(("mlp_out",) if model.has_mlp else ())):
            assert seen[point, layer][0].abs().max() == 0, (point, layer)
    assert seen["z", 2][0][..., 1, :].abs().max() > 0
    assert seen["z", 2][0][..., 0, :].abs().max() == 0  # other heads of its layer: none


@pytest.mark.parametrize("everything", ["all senders", "the embeddings"])
def test_a_source_that_is_everything_carries_everything(model_3x4, everything):
    """With zero patch values, all senders (or the embeddings alone, from which all else
    flows) as the source: the rel part is the whole activation at every point."""
    model = model_3x4
    if not model.has_mlp and everything == "the embeddings":
        pytest.skip(
            "the attention-only model's random biases are large: a bias is split in "
            "proportion to |part| + 1e-8, so where rel is ~1e-8 irrel keeps a share of it, "
            "which grows through the layers (0.4% of the scale); the whole-activations "
            "test covers this model"
        )
    tokens = torch.randint(1, model.d_vocab, (2, 7), generator=torch.Generator().manual_seed(4))
    layout, patches = random_patches(model, 2, 7)
    patches = {first: torch.zeros_like(value) for first, value in patches.items()}
    chosen = torch.zeros(1, layout.n_senders, dtype=torch.bool)
    if everything == "all senders":
        chosen[:] = True
    else:
        chosen[0, 0] = True
    seen, logits = decompose(model, tokens, chosen, patches)
    for (point, layer), (rel, whole) in seen.items():
        if rel is None:  # whole only: the pattern, a norm's scale
            continue
        # irrel = whole - rel is float32 rounding at the whole's size, which takes its
        # share of a bias where rel is small (most on the attention-only model's large
        # random biases: 1.6e-5 of the scale)
        assert (whole - rel).abs().max() <= 1e-4 * whole.abs().max(), (point, layer)
    full = model.run(tokens)[:, -1]
    assert torch.allclose(logits[0][0], full, atol=1e-4)


def _linear_model(tmp_path):
    """One layer, no nonlinearity on the source's path: q = k = 0 (uniform attention),
    no biases, the MLP writes nothing."""

    def edit(gpt2):
        d = gpt2.config.n_embd
        block = gpt2.transformer.h[0]
        block.attn.c_attn.weight[:, : 2 * d] = 0.0  # W_Q, W_K
        for bias in (block.attn.c_attn.bias, block.attn.c_proj.bias, block.ln_1.bias):
            bias.zero_()
        block.mlp.c_proj.weight.zero_()
        block.mlp.c_proj.bias.zero_()
        gpt2.transformer.ln_f.bias.zero_()

    return load_model(str(tiny_gpt2(tmp_path, 1, 4, 32, seed=6, edit=edit)), device="cpu")


@pytest.mark.parametrize("source", ["a0.h2", "input"])
def test_with_no_nonlinearity_relevance_is_the_linear_contribution(tmp_path, source):
    model = _linear_model(tmp_path)
    generator = torch.Generator().manual_seed(7)
    tokens = torch.randint(1, model.d_vocab, (3, 8), generator=generator)
    other = torch.randint(1, model.d_vocab, (3, 8), generator=generator)
    hooks = [
        "blocks.0.hook_resid_pre",
        "blocks.0.ln1.hook_scale",
        "blocks.0.attn.hook_z",
        "ln_final.hook_scale",
    ]
    _, clean = model.run_with_cache(tokens, hooks)
    _, patch = model.run_with_cache(other, hooks)
    layout = Layout(1, 4, True)
    chunk = 0 if source == "input" else layout.head_sender(0)
    hook = "blocks.0.hook_resid_pre" if source == "input" else "blocks.0.attn.hook_z"
    chosen = torch.zeros(1, layout.n_senders, dtype=torch.bool)
    chosen[0, layout.sender(source)] = True
    _, logits = decompose(model, tokens, chosen, {chunk: patch[hook]})

    # Independently: the source's difference through the frozen LayerNorm scales, the
    # uniform attention's values and outputs, and the unembedding.
    bridge = model.bridge
    w_o, w_v = bridge.blocks[0].attn.W_O, bridge.blocks[0].attn.W_V

    def centred(x):
        return x - x.mean(-1, keepdim=True)

    if source == "input":
        diff = clean[hook] - patch[hook]
        normed = centred(diff) / clean["blocks.0.ln1.hook_scale"] * bridge.blocks[0].ln1.w
        values = torch.einsum("npd,hde->nphe", normed, w_v)
        width = tokens.shape[1]
        uniform = torch.ones(width, width).tril() / torch.arange(1, width + 1).unsqueeze(1)
        z = torch.einsum("qk,nkhe->nqhe", uniform, values)
        resid = diff + torch.einsum("nphe,hed->npd", z, w_o)
    else:
        head = 2
        diff = clean[hook][..., head, :] - patch[hook][..., head, :]
        resid = diff @ w_o[head]
    final = centred(resid[:, -1]) / clean["ln_final.hook_scale"][:, -1] * bridge.ln_final.w
    expected = final @ bridge.W_U
    assert expected.abs().max() > 1e-2
    assert torch.allclose(logits[0][0], expected, atol=1e-5)


def test_a_model_that_is_not_gpt2_style_is_a_one_line_error(tiny_model, monkeypatch):
    monkeypatch.setattr(tiny_model.bridge.cfg, "positional_embedding_type", "rotary")
    with pytest.raises(CircuitxError, match="not GPT-2-style .*positions"):
        transformer_weights(tiny_model)


def test_attention_gives_rel_its_own_pattern():
    """CD-T's softmax rule: rel's pattern is softmax(q_rel . k_rel), so a rel part only in
    the values (q_rel = k_rel = 0) is averaged uniformly over the causal prefix."""
    from circuitx.decomposition import Wholes, attention
    from circuitx.models import BlockWeights, TransformerWeights

    generator = torch.Generator().manual_seed(8)
    d, heads, d_head, width = 8, 2, 4, 5
    q_weight, v_weight = (torch.randn(heads, d, d_head, generator=generator) for _ in range(2))
    zeros = torch.zeros(heads, d_head)
    block = BlockWeights(
        ln1=(torch.ones(d), torch.zeros(d)),
        W_Q=q_weight,
        b_Q=zeros,
        W_K=q_weight,
        b_K=zeros,
        W_V=v_weight,
        b_V=zeros,
        W_O=torch.randn(heads, d_head, d),
        b_O=torch.zeros(d),
        ln2=None,
        W_in=None,
        b_in=None,
        W_out=None,
        b_out=None,
    )
    value_only = torch.randn(1, width, d, generator=generator)
    value_only[..., :] -= value_only @ q_weight[0] @ torch.linalg.pinv(q_weight[0])  # head 0: q=k=0
    parts = torch.stack((value_only, torch.randn(1, width, d, generator=generator)))
    weights = TransformerWeights(
        W_E=torch.zeros(1, d),
        W_pos=None,
        blocks=[block],
        ln_final=block.ln1,
        W_U=torch.zeros(d, 1),
        b_U=torch.zeros(1),
        eps=1e-5,
        attn_scale=2.0,
        act_fn=torch.relu,
        causal=True,
    )
    whole = parts.sum(0)
    z, z_whole = attention(value_only, whole, block, weights, lambda *args: None, 0, Wholes())
    v_rel = value_only @ v_weight[0]
    uniform = torch.ones(width, width).tril() / torch.arange(1, width + 1).unsqueeze(1)
    assert torch.allclose(z[0, :, 0], uniform @ v_rel[0], atol=1e-5)
    whole = whole[0]
    q = whole @ q_weight[0]
    future = torch.ones(width, width).triu(1).bool()
    pattern = (q @ q.T / 2.0).masked_fill(future, float("-inf")).softmax(-1)
    assert torch.allclose(z_whole[0, :, 0], pattern @ (whole @ v_weight[0]), atol=1e-5)
