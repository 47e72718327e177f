import pytest
import torch
from conftest import find, tiny_gpt2

from circuitx.builtin import load as load_model
from circuitx.graph import component_nodes, full_graph
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task

LAYER, HEAD, N_HEADS, D_MODEL = 1, 2, 4, 32


def keep_only_one_head(model):
    """Zero every attention head's W_O but one head's, and every MLP's output weights."""
    d_head = D_MODEL // N_HEADS
    for layer, block in enumerate(model.transformer.h):
        weight = block.attn.c_proj.weight  # Conv1D: rows are the concatenated head outputs
        kept = weight[HEAD * d_head : (HEAD + 1) * d_head].clone()
        weight.zero_()
        if layer == LAYER:
            weight[HEAD * d_head : (HEAD + 1) * d_head] = kept
        block.mlp.c_proj.weight.zero_()


@pytest.fixture(scope="module")
def one_head_model(tmp_path_factory):
    directory = tiny_gpt2(
        tmp_path_factory.mktemp("one_head"), 3, N_HEADS, D_MODEL, seed=5, edit=keep_only_one_head
    )
    return load_model(str(directory), device="cpu")


def test_the_only_head_that_matters_ranks_first(one_head_model):
    graph = find(one_head_model, "ioi", "activation-patching", n_prompts=16, seed=0, top_k=1)
    scores = {n: graph.nodes[n]["score"] for n in component_nodes(graph)}
    target = f"a{LAYER}.h{HEAD}"
    assert max(scores, key=lambda n: abs(scores[n])) == target
    assert abs(scores[target]) > 0.01
    others = max(abs(v) for n, v in scores.items() if n != target)
    assert others < 1e-3 * abs(scores[target])
    assert [n for n in component_nodes(graph) if graph.nodes[n]["in_circuit"]] == [target]


def test_stacked_patches_equal_one_patch_per_pass(tiny_model):
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=1)
    nodes = component_nodes(full_graph(tiny_model.n_layers, tiny_model.n_heads, True))
    stacked = PatchingEngine(tiny_model, task, data).patch_each_node(nodes)
    single = PatchingEngine(tiny_model, task, data, tokens_per_pass=1).patch_each_node(nodes)
    torch.testing.assert_close(stacked, single, atol=1e-5, rtol=1e-5)


def test_patching_a_node_matches_a_hand_written_hook(tiny_model):
    from circuitx.models import head_output_hook

    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=2)
    engine = PatchingEngine(tiny_model, task, data)
    name = head_output_hook(1)
    _, corrupted = tiny_model.run_with_cache(data.corrupted, [name])

    def patch(z):
        z = z.clone()
        z[:, :, 3] = corrupted[name][:, :, 3]
        return z

    final = tiny_model.run(data.clean, [(name, patch)], data.positions["END"])
    expected = float(task.metric("logit-diff", final, data, final).mean())
    assert float(engine.patch_each_node(["a1.h3"])[0]) == pytest.approx(expected, abs=1e-5)


def test_same_seed_gives_the_same_graph(tiny_model):
    first = find(tiny_model, "ioi", "activation-patching", n_prompts=8, seed=11)
    second = find(tiny_model, "ioi", "activation-patching", n_prompts=8, seed=11)
    third = find(tiny_model, "ioi", "activation-patching", n_prompts=8, seed=12)
    scores = lambda g: [g.nodes[n]["score"] for n in component_nodes(g)]
    assert scores(first) == scores(second)
    assert scores(first) != scores(third)
