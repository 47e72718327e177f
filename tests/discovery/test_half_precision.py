"""Half precision: every method runs in float16 and bfloat16, its scores near float32's
(the model runs in half; caches, metrics and the methods' sums stay float32)."""

import pytest
import torch
from conftest import assert_one_line_error, find, run

from circuitx.builtin import load as load_model
from circuitx.graph import component_nodes
from circuitx.methods import METHODS

# the largest node-score difference from float32, as a share of the largest score,
# measured on trained-ioi (10 prompts): bfloat16 up to 0.050 (EAP-IG), float16 up to 0.0027
TOLERANCE = {"bfloat16": 0.08, "float16": 0.02}
COMPARED = ["activation-patching", "eap", "eap-ig", "cdt"]


@pytest.fixture(scope="module")
def models():
    return {dtype: load_model("trained-ioi", dtype=dtype) for dtype in ("float32", *TOLERANCE)}


# the learned masks need no more than a few steps to show they run (their 300 took a minute)
FEW_STEPS = {"edge-pruning": {"ep_steps": 20}, "subnetwork-probing": {"sp_steps": 20}}


def node_scores(model, method):
    graph = find(model, "ioi", method, n_prompts=10, options=FEW_STEPS.get(method, {}))
    return torch.tensor([graph.nodes[n]["score"] or 0.0 for n in component_nodes(graph)])


@pytest.mark.parametrize("dtype", sorted(TOLERANCE))
@pytest.mark.parametrize("method", COMPARED)
def test_half_precision_scores_are_near_float32s(models, dtype, method):
    reference, half = node_scores(models["float32"], method), node_scores(models[dtype], method)
    assert reference.abs().max() > 0.1
    assert float((half - reference).abs().max() / reference.abs().max()) <= TOLERANCE[dtype]


# transcoders would be trained first (minutes); their bfloat16 scores were measured within
# 0.002 of float32's (docs/usage.md)
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"transcoder"}))
def test_every_method_runs_in_bfloat16(models, method):
    scores = node_scores(models["bfloat16"], method)
    assert bool(torch.isfinite(scores).all()) and scores.abs().max() > 0


def test_a_planted_model_refuses_half_precision_before_it_loads():
    result = run(
        "discover", "--task", "ioi", "--method", "eap", "--model", "planted", "--dtype", "float16"
    )
    assert_one_line_error(result, "planted-ioi is built for float32")
