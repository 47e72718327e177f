"""CD-T's authors' weight form (LayerNorm unfolded, QK and OV re-factored): the model's
function, its own LayerNorm parameters, and the map of the model's head z into the
form's z, checked against the form's own forward pass on two inputs."""

import pytest
import torch
from conftest import random_norms, tiny_gpt2
from transformers import AutoModelForCausalLM

from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_causal_lm, word_level_tokenizer
from circuitx.decomposition import Sources, embed, propagate
from circuitx.models import transformer_weights, unfolded_form
from circuitx.tasks import get_task, task_vocabulary


@pytest.fixture(scope="module")
def gpt2_with_norms(tmp_path_factory):
    directory = tmp_path_factory.mktemp("norms")
    tiny_gpt2(directory, 2, 4, 32, seed=1, edit=random_norms, tokenizer="words")
    return load_model(str(directory), device="cpu")


def whole_run(weights, model, tokens):
    """The whole activations the form's weights compute, by point and layer, and the
    logits at the last position."""
    seen = {}
    layout = model.layout
    nothing = torch.zeros(1, layout.n_senders, dtype=torch.bool)
    end = torch.full((tokens.shape[0], 1), tokens.shape[1] - 1)

    def observe(point, layer, _, whole):
        seen[point, layer] = whole

    _, logits = propagate(
        weights, embed(weights, tokens), 0, Sources(layout, nothing, {}), end, observe
    )
    return seen, logits


def assert_maps_z(model, form):
    """The form's weights compute the model's logits, and map_z takes the model's z to the
    z they compute, on two inputs (the map is affine, not fitted to one)."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        tokens = torch.randint(1, model.d_vocab, (3, 7), generator=generator)
        hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.n_layers)]
        logits, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in hooks)
        seen, whole_logits = whole_run(form.weights, model, tokens)
        assert torch.allclose(whole_logits, logits[:, -1], atol=1e-4)
        for layer, hook in enumerate(hooks):
            mapped = form.map_z(layer, cache[hook])
            assert torch.allclose(mapped, seen["z", layer], atol=1e-4), layer
            assert not torch.allclose(cache[hook], seen["z", layer], atol=1e-2)


def test_the_form_keeps_the_models_norms_and_function_and_maps_its_z(gpt2_with_norms):
    model = gpt2_with_norms
    form = unfolded_form(model)
    folded = transformer_weights(model, llama=True)
    # the loaded copy folds its norms: weight 1, bias 0
    assert torch.equal(folded.blocks[0].ln1[0], torch.ones(model.d_model))
    weight, bias = form.weights.blocks[0].ln1
    assert (weight - 1).abs().max() > 0.1 and bias.abs().max() > 0.1
    for block in form.weights.blocks:  # W_O re-factored into orthonormal rows
        gram = torch.einsum("hed,hfd->hef", block.W_O, block.W_O)
        assert torch.allclose(gram, torch.eye(model.d_head).expand_as(gram), atol=1e-5)
    rotation, offset = form.z_maps[0]
    assert (rotation - torch.eye(model.d_head)).abs().max() > 0.1 and offset.abs().max() > 0.1
    assert_maps_z(model, form)


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_rotary_models_are_not_refactored(tmp_path, family):
    """Llama's RMSNorm folds exactly, so its form is the model's own, loaded once; GPT-2
    NeoX's LayerNorm unfolds, its rotary heads keep their factors."""
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(tmp_path, family, tokenizer, 2, 4, 32, 5, initializer_range=0.3)
    if family == "neox":
        saved = AutoModelForCausalLM.from_pretrained(tmp_path)
        random_norms(saved)
        saved.save_pretrained(tmp_path)
    model = load_model(str(tmp_path), device="cpu")
    form = unfolded_form(model)
    if family == "llama":
        assert form.z_maps is None
        return
    rotation, _ = form.z_maps[1]
    assert torch.equal(rotation, torch.eye(model.d_head).expand_as(rotation))
    folded = transformer_weights(model, llama=True)
    assert torch.allclose(form.weights.blocks[1].W_O, folded.blocks[1].W_O)
    assert_maps_z(model, form)


def test_the_form_is_exactly_a_planted_models_function_in_float64():
    """Planted greater-than's heads attend by large scores that tie exactly between keys:
    TransformerLens's float32 re-factoring moved its patterns (z by 0.19 at layer 3) even
    in float64, and the raw weights of a second load (not the engine's float32-folded
    ones) by 1e-5; unfolded from the model's weights and re-factored in float64, the
    form's z is the model's, mapped, to 1e-9 and its logits the model's."""
    model = load_model("planted-greater-than", device="cpu", dtype="float64")
    form = unfolded_form(model)
    tokens = get_task("greater-than").make_data(model, 5, 0).clean
    hooks = [f"blocks.{layer}.attn.hook_z" for layer in range(model.n_layers)]
    logits, cache = model.bridge.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    seen, whole_logits = whole_run(form.weights, model, tokens)
    assert torch.allclose(whole_logits, logits[:, -1], atol=1e-7)
    for layer, hook in enumerate(hooks):
        assert torch.allclose(form.map_z(layer, cache[hook]), seen["z", layer], atol=1e-7)
