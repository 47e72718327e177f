"""The patching engine against hand-written hooks and independent gradient computations."""

import dataclasses
import re

import pytest
import torch
from conftest import tiny_gpt2

from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_causal_lm, save_tl_legacy_attn_only, word_level_tokenizer
from circuitx.graph import edge_name, full_graph
from circuitx.methods.base import MethodRun
from circuitx.methods.eap import EAP
from circuitx.models import (
    attention_output_hook,
    head_input_hook,
    head_output_hook,
    mlp_input_hook,
    mlp_output_hook,
    post_attention_scale_hook,
)
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task, task_vocabulary

ATOL = 1e-4


@pytest.fixture(
    scope="module", params=["gpt2", "llama", "qwen2", "gemma2", "mistral", "neox", "attn-only"]
)
def model(request, tmp_path_factory):
    """3 layers x 4 heads, d_model 32 (edges that skip a layer exist), of each architecture
    family: GPT-2 with its own tokenizer, the others (grouped-query, multi-query, parallel
    blocks, rotary, RMSNorm, gated MLPs, Gemma-2's softcapping, an attention-only model in
    the legacy TransformerLens format) with the word-level one."""
    directory = tmp_path_factory.mktemp(request.param)
    if request.param == "gpt2":
        return load_model(str(tiny_gpt2(directory, 3, 4, 32, seed=3)), device="cpu")
    tokenizer = word_level_tokenizer(task_vocabulary())
    if request.param == "attn-only":
        save_tl_legacy_attn_only(directory, tokenizer, 3, 4, 32, seed=3)
    else:
        save_causal_lm(directory, request.param, tokenizer, 3, 4, 32, 3, initializer_range=0.2)
    return load_model(str(directory), device="cpu")


@pytest.fixture(scope="module")
def engine(model):
    task = get_task("ioi")
    return PatchingEngine(model, task, task.make_data(model, 8, seed=4))


def present(model, names):
    """The node or edge ``names`` the model has: none with an MLP in an attention-only one."""
    return [n for n in names if model.has_mlp or not re.search(r"(^|>)m\d", n)]


def ones(engine, k=1):
    return torch.ones(k, engine.layout.n_senders, engine.layout.n_receivers)


def end_logits(model, engine, tokens, hooks=()):
    return model.run(tokens, hooks, engine.end)


def test_layout_edges_are_the_graph_edges(model):
    layout = model.layout
    graph = full_graph(model.n_layers, model.n_heads, model.has_mlp, model.parallel)
    assert layout.edge_names == [key for _, _, key in graph.edges(keys=True)]  # same order
    assert int(layout.valid.sum()) == graph.number_of_edges()
    for name in present(model, ("input->a0.h0<q>", "a0.h3->m1", "a0.h1->a2.h2<v>", "m2->logits")):
        sender, receiver = layout.edge(name)
        assert layout.edge_mask([name])[sender, receiver] == 1
        assert layout.valid[sender, receiver]
    # a parallel block's MLP reads what its heads read, so no head feeds it
    assert ("a0.h3->m0" in layout.edge_names) == (model.has_mlp and not model.parallel)


def test_all_clean_mask_gives_the_clean_logits(model, engine):
    clean = end_logits(model, engine, engine.data.clean)
    torch.testing.assert_close(engine.run(edge_mask=ones(engine))[0], clean, atol=ATOL, rtol=0)
    node_ones = torch.ones(1, engine.layout.n_senders)
    torch.testing.assert_close(engine.run(node_mask=node_ones)[0], clean, atol=ATOL, rtol=0)
    # also through every layer, with gradients on (the pass EAP makes)
    with_grad = engine.run(node_mask=node_ones, edge_mask=ones(engine), grad=True)[0]
    torch.testing.assert_close(with_grad.detach(), clean, atol=ATOL, rtol=0)


def test_all_corrupted_mask_gives_the_corrupted_logits(model, engine):
    corrupted = end_logits(model, engine, engine.data.corrupted)
    assert (corrupted - engine.clean_final).abs().max() > 0.1  # the check has teeth
    all_patched = engine.run(edge_mask=torch.zeros_like(ones(engine)))[0]
    torch.testing.assert_close(all_patched, corrupted, atol=ATOL, rtol=0)
    no_node = engine.run(node_mask=torch.zeros(1, engine.layout.n_senders))[0]
    torch.testing.assert_close(no_node, corrupted, atol=ATOL, rtol=0)


def head_writes(model, tokens, layer, head):
    """What head ``layer.head`` adds to the residual stream, computed from its z and W_O
    (Gemma-2: z over its post-attention norm's scale, times W_O and the norm's gain)."""
    _, cache = model.run_with_cache(tokens, [*model.output_hooks(), *model.scale_hooks()])
    w_o = model.head_write_weights(layer)
    return model.head_outputs(cache, layer)[:, :, head] @ w_o[head]


def write_patch_hooks(model, layer, head, value):
    """Hooks setting what head ``layer.head`` writes to ``value`` [n, pos, d_model] (or a
    broadcastable one): its z where it is what the head writes, else (Gemma-2) the
    difference added after the norm on the layer's summed heads."""
    w_o = model.head_write_weights(layer)[head]
    if not model.post_attention_norm:  # z @ W_O is the write: solve for the z
        value = torch.as_tensor(value)
        solution = torch.linalg.lstsq(w_o.T, value.reshape(-1, w_o.shape[1]).T)
        z_value = solution.solution.T.reshape(*value.shape[:-1], -1)

        def set_z(z):
            z = z.clone()
            z[:, :, head] = z_value
            return z

        return [(head_output_hook(layer), set_z)]
    seen = {}

    def keep(name):
        def hook(x):
            seen[name] = x
            return x

        return hook

    def set_write(out):
        own = (seen["z"][:, :, head] / seen["scale"]) @ w_o
        return out - own + value

    return [
        (head_output_hook(layer), keep("z")),
        (post_attention_scale_hook(layer), keep("scale")),
        (attention_output_hook(layer), set_write),
    ]


def test_patching_a_head_matches_writing_its_corrupted_output_by_hand(model, engine):
    """A helper's trial read Gemma-2's heads before the last layer as mis-patched (its
    reference bound the last layer's weights in a loop); a head's node patch, against
    writing the head's corrupted output with hooks of one's own, on every family."""
    data = engine.data
    for layer, head in ((0, 1), (1, 2)):
        corrupted = head_writes(model, data.corrupted, layer, head)
        hooks = write_patch_hooks(model, layer, head, corrupted)
        expected = engine.metric(end_logits(model, engine, data.clean, hooks).unsqueeze(0))
        (patched,) = engine.patch_each_node([f"a{layer}.h{head}"])
        assert float(patched) == pytest.approx(float(expected.mean()), abs=ATOL)
        assert abs(float(expected.mean()) - float(engine.clean_metric)) > 1e-3


def test_one_edge_into_a_key_matches_a_hand_written_hook(model, engine):
    data = engine.data
    difference = head_writes(model, data.clean, 0, 1) - head_writes(model, data.corrupted, 0, 1)

    def patch_key_input(
        x,
    ):  # [batch, pos, head, d_model]: head 2 of layer 2 reads a0.h1's corrupted output
        x = x.clone()
        x[:, :, 2] -= difference
        return x

    model.enable_hooks(["split_qkv"])
    try:
        expected = end_logits(
            model, engine, data.clean, [(head_input_hook(2, "k"), patch_key_input)]
        )
    finally:
        model.bridge.set_use_split_qkv_input(False)
    mask = engine.layout.edge_mask(engine.layout.edge_names).unsqueeze(0)
    sender, receiver = engine.layout.edge("a0.h1->a2.h2<k>")
    mask[0, sender, receiver] = 0
    torch.testing.assert_close(engine.run(edge_mask=mask)[0], expected, atol=ATOL, rtol=0)
    assert (expected - engine.clean_final).abs().max() > 1e-3


def test_one_edge_between_mlps_matches_a_hand_written_hook(model, engine):
    if not model.has_mlp:
        pytest.skip("an attention-only model has no MLPs")
    data = engine.data
    _, clean = model.run_with_cache(data.clean, [mlp_output_hook(0)])
    _, corrupted = model.run_with_cache(data.corrupted, [mlp_output_hook(0)])
    difference = clean[mlp_output_hook(0)] - corrupted[mlp_output_hook(0)]
    model.enable_hooks(["mlp_in"])
    try:
        expected = end_logits(
            model, engine, data.clean, [(mlp_input_hook(2), lambda x: x - difference)]
        )
    finally:
        model.bridge.set_use_hook_mlp_in(False)
    (result,) = engine.patch_each_edge([[engine.layout.edge("m0->m2")]])
    assert float(result) == pytest.approx(
        float(engine.metric(expected.unsqueeze(0)).mean()), abs=ATOL
    )


def test_patching_every_outgoing_edge_is_patching_the_node(model, engine):
    layout = engine.layout
    for node in present(model, ("a0.h2", "m1", "a2.h0")):
        sender = layout.sender(node)
        outgoing = [(sender, r) for r in range(layout.n_receivers) if layout.valid[sender, r]]
        (by_edges,) = engine.patch_each_edge([outgoing])
        (by_node,) = engine.patch_each_node([node])
        assert float(by_edges) == pytest.approx(float(by_node), abs=ATOL)
        # both at once: the edges of a patched node carry nothing more to patch
        node_mask = torch.ones(1, layout.n_senders)
        node_mask[0, sender] = 0
        edge_mask = ones(engine)
        edge_mask[0, sender] = 0
        both = engine.metric(engine.run(node_mask, edge_mask)).mean()
        assert float(both) == pytest.approx(float(by_node), abs=ATOL)


def test_passes_from_a_later_layer_equal_whole_passes(model, engine):
    layout = engine.layout
    names = present(model, ("a1.h0->a2.h3<q>", "m1->logits", "a0.h0->m1", "a1.h1->logits"))
    edges = [[layout.edge(name)] for name in names]
    nodes = present(model, ("a2.h1", "m2", "a1.h3"))
    skipping = engine.patch_each_edge(edges), engine.patch_each_node(nodes)
    model.can_skip_layers = False  # the fallback: every pass from the tokens
    try:
        whole = engine.patch_each_edge(edges), engine.patch_each_node(nodes)
    finally:
        del model.can_skip_layers
    for a, b in zip(skipping, whole):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_mean_and_zero_patch_values(model, engine, ablation):
    task, data = engine.task, engine.data
    other = PatchingEngine(model, task, data, ablation=ablation)
    written = head_writes(model, data.corrupted, 1, 3)
    real = data.real_tokens.unsqueeze(-1).to(written)  # a prompt's tokens, not its padding
    mean = (written * real).sum(0) / real.sum(0)
    value = mean if ablation == "mean" else torch.zeros_like(written[0])
    hooks = write_patch_hooks(model, 1, 3, value)
    expected = task.metric("logit-diff", end_logits(model, engine, data.clean, hooks), data, None)
    assert float(other.patch_each_node(["a1.h3"])[0]) == pytest.approx(
        float(expected.mean()), abs=ATOL
    )


def test_a_mean_takes_no_padding(model, engine):
    """A helper's trial: mean ablation changed with the tokenizer's pad token (faithfulness
    0.988 against 0.974, the same weights and prompts): the mean at a position took the
    padding of the prompts shorter than it."""
    task, data = engine.task, engine.data
    assert len(set(data.lengths.tolist())) > 1  # prompts of several lengths, padded
    padding = ~data.real_tokens
    pads = {int(t) for t in data.corrupted[padding]}
    other = next(token for token in range(1, 50) if token not in pads)
    repadded = dataclasses.replace(
        data,
        clean=data.clean.masked_fill(padding, other),
        corrupted=data.corrupted.masked_fill(padding, other),
    )
    nodes = ["input", "a0.h0", "a1.h3", "a2.h1"]
    scores = [
        PatchingEngine(model, task, batch, ablation="mean").patch_each_node(nodes)
        for batch in (data, repadded)
    ]
    torch.testing.assert_close(*scores, atol=ATOL, rtol=0)


def test_prune_drops_dangling_edges(engine):
    if not engine.model.has_mlp:
        pytest.skip("an attention-only model has no MLPs (the case prunes an MLP's edge)")
    layout = engine.layout
    kept = ["input->a0.h1<v>", "a0.h1->a2.h0<q>", "a2.h0->logits", "a1.h2->m2", "input->a1.h3<k>"]
    pruned = layout.prune(layout.edge_mask(kept))
    # a1.h2 has no input and m2 no output, a1.h3 no output: only the path to the logits stays
    assert pruned.sum() == 3
    assert torch.equal(pruned, layout.edge_mask(kept[:3]))


def test_eap_scores_are_gradient_times_difference(model, engine):
    """EAP's edge scores against (clean_u - corrupted_u) . d metric / d input_v, the
    gradients taken here by adding zero probes at the receivers' inputs."""
    data, layout = engine.data, engine.layout
    scores = EAP().score(engine, MethodRun()).edges

    # what every sender writes, clean minus corrupted: [n, pos, d] per sender name
    def outputs(tokens):
        names = ["blocks.0.hook_resid_pre", *model.output_hooks()]  # MLPs' where they exist
        _, cache = model.run_with_cache(tokens, names)
        written = {"input": cache["blocks.0.hook_resid_pre"]}
        for layer in range(model.n_layers):
            for head in range(model.n_heads):
                written[f"a{layer}.h{head}"] = head_writes(model, tokens, layer, head)
            if model.has_mlp:
                written[f"m{layer}"] = cache[mlp_output_hook(layer)]
        return written

    clean, corrupted = outputs(data.clean), outputs(data.corrupted)

    probes = {}

    def probe(name, shape):
        def hook(x):
            probes[name] = torch.zeros(shape, requires_grad=True)
            return x + probes[name]

        return hook

    n, pos = data.clean.shape
    d = model.d_model
    hooks = [("ln_final.hook_in", probe("logits", (n, pos, d)))]
    for layer in range(model.n_layers):
        for which in "qkv":
            hooks.append(
                (
                    head_input_hook(layer, which),
                    probe(f"{layer}{which}", (n, pos, model.n_heads, d)),
                )
            )
        if model.has_mlp:
            hooks.append((mlp_input_hook(layer), probe(f"m{layer}", (n, pos, d))))
    model.enable_hooks(["split_qkv", *(["mlp_in"] if model.has_mlp else [])])
    try:
        final = model.run(data.clean, hooks, engine.end, grad=True)
    finally:
        model.bridge.set_use_split_qkv_input(False)
        model.bridge.set_use_hook_mlp_in(False)
    metric = engine.metric(final).mean()
    names = list(probes)
    grads = dict(zip(names, torch.autograd.grad(metric, [probes[k] for k in names])))

    def receiver_grad(receiver, head_input):
        if receiver == "logits":
            return grads["logits"]
        if receiver.startswith("m"):
            return grads[receiver]
        layer, head = (int(x) for x in receiver[1:].split(".h"))
        return grads[f"{layer}{head_input}"][:, :, head]

    checked = 0
    for sender, receiver, head_input in layout.edges:
        key = edge_name(sender, receiver, head_input)
        score = float(scores[layout.edge(key)])
        expected = ((clean[sender] - corrupted[sender]) * receiver_grad(receiver, head_input)).sum()
        assert score == pytest.approx(float(expected) / engine.gap, abs=1e-4, rel=1e-3), key
        checked += 1
    assert checked == len(layout.edges)
    assert float((scores * layout.valid).abs().max()) > 1e-3


def test_complement_form_equals_patching_the_removed_edges(model, engine):
    """Faithfulness's passes read a receiver with few kept edges as the fully patched input
    plus the kept edges' differences: the same metric as subtracting the removed edges',
    for circuits from empty to nearly full, several stacked in one pass, soft masks too."""
    layout = engine.layout
    generator = torch.Generator().manual_seed(0)
    masks = [torch.zeros(layout.n_senders, layout.n_receivers)]
    for keep in (0.02, 0.1, 0.3, 0.6, 0.95):
        draw = torch.rand(layout.n_senders, layout.n_receivers, generator=generator)
        masks.append((draw < keep).float())
    masks.append(torch.rand(layout.n_senders, layout.n_receivers, generator=generator))
    late = torch.ones(layout.n_senders, layout.n_receivers)  # a pass from block 1 on
    late[:, layout.head_receiver(1, "q") :] = 0.0
    masks.append(late)
    masks = torch.stack(masks) * layout.valid
    removed = engine.edge_mask_metrics(masks)
    complement = engine.edge_mask_metrics(masks, complement=True)
    torch.testing.assert_close(complement, removed, atol=ATOL, rtol=0)
    one_at_a_time = torch.cat([engine.edge_mask_metrics(m[None], complement=True) for m in masks])
    torch.testing.assert_close(one_at_a_time, complement, atol=ATOL, rtol=0)
    # the empty circuit is the corrupted run: every receiver reads the corrupted inputs
    assert float(complement[0]) == pytest.approx(engine.corrupted_metric, abs=ATOL)


def test_head_input_gradients_from_q_k_v_equal_the_split_inputs(model, engine):
    """EAP's edge gradients into heads come from the gradients at q, k and v through
    W_Q, W_K, W_V and the norm's Jacobian where the model allows it; they equal those of
    the pass that splits every head's input (the one other architectures use)."""
    if engine.head_reads is None:
        pytest.skip(f"{model.name}: its heads read through grouped keys (the split pass)")
    fast = engine.mask_gradients(), engine.mask_gradients([(0, 0.4), (0, 0.7)])
    engine.__dict__["head_reads"] = None  # the split pass
    try:
        split = engine.mask_gradients(), engine.mask_gradients([(0, 0.4), (0, 0.7)])
    finally:
        del engine.__dict__["head_reads"]
    for (fast_nodes, fast_edges), (split_nodes, split_edges) in zip(fast, split):
        scale = float(split_edges.abs().max())
        torch.testing.assert_close(fast_nodes, split_nodes, atol=1e-5 * scale, rtol=1e-4)
        torch.testing.assert_close(fast_edges, split_edges, atol=1e-5 * scale, rtol=1e-4)
