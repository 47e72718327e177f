"""The tracr task: inputs from the model's program, ACDC's shuffled corruption, a metric at
every position after BOS, and the engine reading all of them."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
from conftest import assert_one_line_error, run

from circuitx.builtin import load
from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.methods import MethodRun, get_method
from circuitx.models import EMBED_OUTPUT_HOOK
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task
from circuitx.tasks.tracr import TracrProgram, all_inputs, input_at, input_count, sampled_inputs

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")


@pytest.fixture(scope="module")
def reverse():
    return load("tracr-reverse", device="cpu")


@pytest.fixture(scope="module")
def proportion():
    return load("tracr-proportion", device="cpu")


def test_reverse_uses_every_permutation_and_a_shuffle_without_fixed_points(reverse):
    data = get_task("tracr").make_data(reverse, 50, seed=0)
    rows = [tuple(row) for row in data.clean.tolist()]
    bos = reverse.bos_token_id
    assert sorted(rows) == sorted((bos, *p) for p in itertools.permutations(range(3)))
    assert sorted(map(tuple, data.corrupted.tolist())) == sorted(rows)
    assert all(not torch.equal(a, b) for a, b in zip(data.clean, data.corrupted))
    assert data.readout.tolist() == [[1, 2, 3]] * 6
    assert data.answer.shape == (18,)


def test_proportion_samples_sequences_with_the_seed(proportion):
    task = get_task("tracr")
    a, b = task.make_data(proportion, 20, seed=1), task.make_data(proportion, 20, seed=1)
    assert torch.equal(a.clean, b.clean) and a.clean.shape == (20, 5)
    assert len({tuple(r) for r in a.clean.tolist()}) == 20  # without replacement
    assert not torch.equal(a.clean, task.make_data(proportion, 20, seed=2).clean)


@pytest.mark.parametrize("ablation", ["corrupted", "zero", "mean"])
def test_engine_reads_every_position_after_bos(reverse, ablation):
    task = get_task("tracr")
    data = task.make_data(reverse, 6, seed=0)
    engine = PatchingEngine(reverse, task, data, "l2", ablation)
    full = reverse.run(data.clean)
    torch.testing.assert_close(engine.clean_final, full[:, 1:].flatten(0, 1))
    assert engine.clean_metric == 0.0 and engine.corrupted_metric < -0.1
    assert task.accuracy(engine.clean_final, data) == 1.0
    # no patch changes nothing; every node patched is (about) the corrupted run
    nothing = engine.run(node_mask=torch.ones(1, engine.layout.n_senders))
    torch.testing.assert_close(nothing[0], engine.clean_final, atol=1e-4, rtol=0)
    if ablation == "corrupted":
        everything = engine.run(node_mask=torch.zeros(1, engine.layout.n_senders))
        torch.testing.assert_close(everything[0], engine.corrupted_final, atol=1e-4, rtol=0)


def test_zero_ablation_keeps_the_embeddings_anchor(reverse):
    task = get_task("tracr")
    data = task.make_data(reverse, 6, seed=0)
    engine = PatchingEngine(reverse, task, data, "l2", "zero")
    patch = engine.patch_cache[EMBED_OUTPUT_HOOK]
    assert torch.equal(patch, reverse.zero_embedding.expand_as(patch))
    # with only the anchor left in the embeddings every LayerNorm still divides by about
    # the same constant: the logits stay finite and small
    everything = engine.run(node_mask=torch.zeros(1, engine.layout.n_senders))
    assert everything.abs().max() < 10


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_scores_are_shares_of_the_ablations_own_effect(reverse, ablation):
    """Under zero or mean ablation the gap is clean - the run with every node ablated,
    not the corrupted prompts' (reverse: 0.333 against 0.593 zero-ablated): a3.h0 alone
    carries the whole zero-ablated effect, and scores 1."""
    task = get_task("tracr")
    data = task.make_data(reverse, 6, seed=0)
    engine = Engine(reverse, task, data, "l2", ablation)
    everything = engine.edge_mask_metrics(torch.zeros(1, *reverse.layout.valid.shape))
    assert engine.ablated_metric == pytest.approx(float(everything[0]), abs=1e-6)
    assert engine.gap == pytest.approx(engine.clean_metric - engine.ablated_metric)
    assert abs(engine.ablated_metric - engine.corrupted_metric) > 0.2
    if ablation == "zero":
        scores = engine.patch_each_node(["a3.h0"])
        assert float(engine.normalised_effect(scores)[0]) == pytest.approx(1.0, abs=1e-5)


def test_categorical_metrics_and_a_numerical_output(reverse, proportion):
    task = get_task("tracr")
    data = task.make_data(reverse, 6, seed=0)
    for metric in ("kl", "logit-diff"):
        engine = PatchingEngine(reverse, task, data, metric)
        assert engine.clean_metric > engine.corrupted_metric
    numbers = task.make_data(proportion, 10, seed=0)
    with pytest.raises(CircuitxError, match="needs a categorical output"):
        PatchingEngine(proportion, task, numbers, "kl")


def test_task_tracr_needs_a_tracr_model():
    result = run(
        "discover", "--task", "tracr", "--method", "activation-patching", "--model", "random-12x12"
    )
    assert_one_line_error(result, "task tracr needs a tracr model")


def test_discover_on_tracr_reports_the_ground_truth():
    result = run(
        "discover",
        "--task",
        "tracr",
        "--method",
        "acdc",
        "--model",
        "tracr-proportion",
        "--ablation",
        "zero",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["reference"] == "tracr-proportion ground truth (ACDC's edge list)"
    assert summary["metrics"]["edge_auc"] >= 0.99
    # a helper's trial: the answers are the model's own outputs, so "clean accuracy 1.000"
    # held by construction and checked nothing
    assert summary["clean_accuracy"] is None
    # the baseline every score is a share from: every node zero-ablated
    assert (
        summary["ablated_metric"] < 0 and summary["ablated_metric"] != summary["corrupted_metric"]
    )


@pytest.mark.parametrize("name", ["reverse", "proportion"])
def test_parts_of_a_batch_read_their_own_rows(name, request):
    """Several readout rows per prompt (and, numerical, each row's clean value) are cut
    with the prompts: activation patching in parts gives the scores of one batch."""
    model = request.getfixturevalue(name)
    task = get_task("tracr")
    data = task.make_data(model, 10, seed=2)
    method = get_method("activation-patching")
    nodes = [
        method.score(Engine(model, task, data, "l2", part_size=size), MethodRun()).nodes
        for size in (10, 4)
    ]
    torch.testing.assert_close(nodes[1], nodes[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("inputs", ["permutations", "sequences"])
def test_inputs_are_drawn_without_listing_them_as_the_list_drew_them(inputs):
    """A helper's trial: make_hist over 11 tokens at 11 positions listed 2.9e11 inputs to
    draw 4 and was killed for memory. Each input is now computed from its index; the
    draw is the one rng.sample made over the whole list, so every built-in model's
    prompts stay as they were."""

    def program(vocab, length):
        return TracrProgram("p", vocab, length, length, "BOS", "pad", False, [], [], inputs)

    small = program(["a", "b", "c", "d"], 3)
    listed = all_inputs(small)
    assert input_count(small) == len(listed)
    assert [input_at(small, i) for i in range(len(listed))] == listed
    for seed, n in ((0, 5), (3, 20), (7, len(listed) - 1)):
        old, new = random.Random(seed), random.Random(seed)
        assert sampled_inputs(small, n, new) == old.sample(listed, n)
        assert old.random() == new.random()  # the derangement after draws the same
    assert sampled_inputs(small, 10**6, random.Random(0)) == listed
    huge = program([f"t{i}" for i in range(40)], 30)  # past what a range's len takes
    rows = sampled_inputs(huge, 4, random.Random(0))
    assert len(set(rows)) == 4 and all(len(row) == 30 for row in rows)
    if inputs == "permutations":
        assert all(len(set(row)) == 30 for row in rows)


def test_a_tracr_model_on_another_task_says_it_is_a_tracr_model():
    """A helper's trial: ioi on tracr-reverse said 0 of 99 IOI names are single tokens."""
    result = run("discover", "--task", "ioi", "--method", "eap", "--model", "tracr-reverse")
    assert_one_line_error(result, "tracr-reverse is a tracr model: it runs task tracr")
