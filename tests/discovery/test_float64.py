"""Double precision: with --dtype float64 the caches, logits and every method's sums are
float64, so a score is the float64 computation's, not float32's rounding of it. Checked
against float64 hooks on the model itself, written here without the engine."""

import math

import pytest
import torch
from conftest import assert_one_line_error, find, run

from circuitx.builtin import load as load_model
from circuitx.graph import component_nodes
from circuitx.methods import METHODS
from circuitx.models.hooks import head_output_hook
from circuitx.tasks import get_task

N_PROMPTS = 4
# measured with 10 prompts: on planted IOI float32's head scores are up to 2.2e-3
# (activation patching) and 4.7e-5 (EAP) from the direct float64 computation (the anchor
# of 1000 amplifies rounding), float64's 8e-14 and 4e-15
TOLERANCE = 1e-10


@pytest.fixture(scope="module")
def planted():
    return {dtype: load_model("planted-ioi", dtype=dtype) for dtype in ("float32", "float64")}


def head_scores(graph):
    return {node: graph.nodes[node]["score"] for node in component_nodes(graph) if "." in node}


def direct(model, data, gradient: bool):
    """Each head's effect as a share of the clean - corrupted gap, by hooks on the bridge:
    its output patched to the corrupted run's (activation patching), or the gradient of
    the metric at its clean output times clean - corrupted (attribution patching)."""
    task, bridge = get_task("ioi"), model.bridge
    rows, end = torch.arange(data.n_prompts), data.positions["END"]

    def metric(hooks=()):
        logits = bridge.run_with_hooks(data.clean, fwd_hooks=list(hooks))[rows, end]
        return task.metric("logit-diff", logits.double(), data, None).mean()

    _, corrupted = bridge.run_with_cache(data.corrupted)
    with torch.no_grad():
        clean = metric()
        gap = (
            clean - task.metric("logit-diff", bridge(data.corrupted)[rows, end], data, None).mean()
        )
    effects = {}
    for layer in range(model.n_layers):
        patch = corrupted[head_output_hook(layer)]
        if gradient:
            gates = torch.ones(model.n_heads, dtype=torch.float64, requires_grad=True)

            def mix(z, hook, gates=gates, patch=patch):
                return patch + gates[:, None] * (z - patch)

            metric([(head_output_hook(layer), mix)]).backward()
            shares = gates.grad / gap
        else:
            with torch.no_grad():
                shares = []
                for head in range(model.n_heads):

                    def swap(z, hook, head=head, patch=patch):
                        z = z.clone()
                        z[:, :, head] = patch[:, :, head]
                        return z

                    shares.append((clean - metric([(head_output_hook(layer), swap)])) / gap)
        effects |= {f"a{layer}.h{h}": float(shares[h]) for h in range(model.n_heads)}
    return effects


@pytest.mark.parametrize("method", ["activation-patching", "eap"])
def test_float64_scores_are_the_float64_computation(planted, method):
    model = planted["float64"]
    expected = direct(model, get_task("ioi").make_data(model, N_PROMPTS, 0), method == "eap")
    worst = {}
    for dtype, loaded in planted.items():
        graph = find(loaded, "ioi", method, n_prompts=N_PROMPTS, seed=0, faithfulness=False)
        scores = head_scores(graph)
        worst[dtype] = max(abs(scores[node] - expected[node]) for node in expected)
    assert worst["float64"] < TOLERANCE
    assert worst["float32"] > 100 * TOLERANCE  # the check tells the two apart


# the learned masks need no more than a few steps to show they run; transcoders would be
# trained first (minutes) and were run by hand
FEW_STEPS = {"edge-pruning": {"ep_steps": 20}, "subnetwork-probing": {"sp_steps": 20}}


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"transcoder"}))
def test_every_method_runs_in_float64_on_a_planted_model(planted, method):
    options = FEW_STEPS.get(method, {})
    # one method's run measures its faithfulness in float64 (masked passes), the rest score
    faithful = method == "eap"
    graph = find(
        planted["float64"],
        "ioi",
        method,
        n_prompts=N_PROMPTS,
        options=options,
        faithfulness=faithful,
    )
    if faithful:
        assert math.isfinite(graph.graph["faithfulness"])
    scores = torch.tensor([graph.nodes[n]["score"] or 0.0 for n in component_nodes(graph)])
    assert bool(torch.isfinite(scores).all()) and scores.abs().max() > 0
    assert graph.graph["dtype"] == "float64"


def test_float64_is_offered_and_half_precision_still_refused_on_a_planted_model():
    result = run(
        "discover", "--task", "ioi", "--method", "eap", "--model", "planted", "--dtype", "bfloat16"
    )
    assert_one_line_error(result, "use --dtype float32 or float64")
