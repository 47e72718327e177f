"""The discrete-SAE method: code counting, the autoencoder, the inputs it is trained on,
and the planted circuits it finds through the command line."""

import json
import re

import pytest
import torch
from conftest import assert_one_line_error, find, run

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.engine import Engine
from circuitx.graph import component_nodes, edges_by_name
from circuitx.methods import MethodRun, get_method, method_options
from circuitx.methods import sae as sae_module
from circuitx.methods.sae import (
    SparseAutoencoder,
    VarianceExplained,
    chance_share,
    co_occurrence_ranking,
    code_pairs,
    positive_only,
    restart_seed,
    sae_positions,
    standardiser,
    train_sae,
)
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task


def test_positive_only_counts_codes_no_negative_shows():
    positive = torch.tensor([[0, 1], [2, 1], [2, 3], [4, 1]])
    negative = torch.tensor([[0, 1], [3, 2]])
    # column 0: codes 2 and 4 are positive-only; rows 1, 2, 3 show one
    # column 1: code 3 is positive-only (3 in column 0 of a negative does not count)
    distinct = positive_only(positive, negative, 5, per_example=False)
    shares = positive_only(positive, negative, 5, per_example=True)
    assert distinct.tolist() == [2 / 4, 1 / 4]
    assert shares.tolist() == [3 / 4, 1 / 4]


def test_chance_share_is_what_codes_blind_to_the_side_give():
    """Column 0: positives show codes of their own, negatives one code (positive share 1,
    chance about a half); column 1: codes that do not depend on the side (both 0);
    column 2: every prompt a code of its own (positive share 1, and so is chance's, so
    ``above-chance`` gives it 0)."""
    n = 40
    rows = torch.arange(2 * n)
    codes = torch.stack([torch.where(rows < n, rows, 2 * n), rows % 3, rows], 1)
    share = positive_only(codes[:n], codes[n:], 2 * n + 1, per_example=True)
    chance = chance_share(codes, 2 * n + 1, torch.Generator().manual_seed(0))
    assert share.tolist() == [1.0, 0.0, 1.0]
    assert 0.4 < float(chance[0]) < 0.6 and float(chance[1]) == 0.0 and float(chance[2]) == 1.0


def test_code_pairs_are_joint_codes_of_ordered_pairs():
    codes = torch.tensor([[1, 2, 0]])
    joint = code_pairs(codes, 3).view(3, 3)
    assert joint[0, 1] == 1 * 3 + 2 and joint[1, 0] == 2 * 3 + 1 and joint[2, 2] == 0


def test_code_pairs_at_positions_pair_components_at_the_same_position():
    codes = torch.tensor([[[1, 2], [0, 1]]])  # [n, P, C]: position 0 shows 1, 2
    joint = code_pairs(codes, 3).view(2, 2, 2)
    assert joint[0, 0, 1] == 1 * 3 + 2 and joint[1, 0, 1] == 0 * 3 + 1
    assert joint[1, 1, 0] == 1 * 3 + 0


def test_co_occurrence_ranking_counts_ends_of_the_top_quarter():
    scores = torch.zeros(4, 4)
    scores[0, 2] = scores[2, 0] = 3.0  # the top 4**2 // 4 = 4 ordered pairs
    scores[1, 2] = 2.0
    scores[3, 1] = 1.0
    assert co_occurrence_ranking(scores).tolist() == [2, 2, 3, 1]


def test_standardiser_centres_and_scales_each_component_over_all_blocks():
    vectors = torch.randn(30, 3, 8) * torch.tensor([0.01, 1.0, 50.0]).view(1, 3, 1) + 7.0
    vectors[:, 2] = 5.0  # a component that never varies
    out = standardiser(lambda: iter([vectors[:11], vectors[11:]]))(vectors)
    assert out[:, :2].mean(0).abs().max() < 1e-4
    assert out[:, :2].pow(2).sum(-1).mean(0).tolist() == pytest.approx([8.0, 8.0], rel=1e-5)
    assert out[:, 2].abs().max() == 0


def test_trained_autoencoder_reconstructs_sparse_data_with_unit_features():
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(4, 16, generator=generator)
    which = torch.randint(0, 4, (200,), generator=generator)
    data = directions[which] * (1 + torch.rand(200, 1, generator=generator))
    sae = train_sae(data, 8, 500, 0.01, 1e-2, torch.Generator().manual_seed(1))
    assert sae.encoder.norm(dim=-1).tolist() == pytest.approx([1.0] * 8, abs=1e-5)
    assert sae.decoder.norm(dim=-1).tolist() == pytest.approx([1.0] * 8, abs=1e-5)
    explained = VarianceExplained(data.device)
    explained.add(sae, data, sae.hidden(data))
    assert explained.value() > 0.8
    # vectors along one direction share a code; the four directions get four codes
    codes = sae.codes(sae.hidden(data))
    assert all(len(set(codes[which == k].tolist())) == 1 for k in range(4))
    assert len(set(codes.tolist())) == 4


def test_a_vector_with_no_active_unit_gets_no_code_never_a_units_index():
    """Codes are the largest active unit; a vector whose units are all zero (here the
    ones pointing away from both features) gets the explicit "no code" symbol, one past
    the units, so it is never counted as unit 0."""
    features = torch.eye(3)[:2]  # units read coordinates 0 and 1
    sae = SparseAutoencoder(features, torch.zeros(2), features, torch.zeros(3))
    vectors = torch.tensor([[2.0, 1.0, 0.0], [0.5, 3.0, 0.0], [-1.0, -1.0, 5.0], [0, 0, 0.0]])
    hidden = sae.hidden(vectors)
    assert hidden[2:].abs().max() == 0  # no active unit
    assert sae.no_code == 2
    assert sae.codes(hidden).tolist() == [0, 1, 2, 2]


def test_variance_explained_adds_up_over_blocks():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(9, 2, 6, generator=generator) + 3.0
    features = torch.nn.functional.normalize(torch.randn(4, 6, generator=generator), dim=-1)
    sae = SparseAutoencoder(features, torch.zeros(4), features, torch.ones(6))
    explained = VarianceExplained(vectors.device)
    for block in (vectors[:4], vectors[4:]):
        explained.add(sae, block, sae.hidden(block))
    flat = vectors.flatten(0, 1)
    residual = (sae.reconstruct(sae.hidden(flat)) - flat).pow(2).sum()
    whole = 1 - residual / (flat - flat.mean(0)).pow(2).sum()
    assert float(explained.value()) == pytest.approx(float(whole), abs=1e-5)
    assert VarianceExplained(vectors.device).value().isnan()  # nothing added: undefined


def test_the_authors_decoder_norm_keeps_each_output_coordinates_weights_unit():
    data = torch.randn(40, 10, generator=torch.Generator().manual_seed(0))
    sae = train_sae(
        data, 6, 30, 0.01, 1e-2, torch.Generator().manual_seed(1), decoder_norm="output"
    )
    assert sae.decoder.norm(dim=0).tolist() == pytest.approx([1.0] * 10, abs=1e-5)
    assert sae.encoder.norm(dim=-1).tolist() == pytest.approx([1.0] * 6, abs=1e-5)


def test_the_fit_is_reported_and_an_over_regularised_run_warned_about():
    """discover's --json reports the autoencoders' fit; a sparsity penalty far too strong
    (no unit survives) gets a one-line warning on stderr, the table a row per fact."""
    base = ["discover", "--task", "ioi", "--method", "sae", "--model", "planted"]
    small = [*base, "--n-prompts", "10", "--sae-restarts", "1", "--no-faithfulness"]
    strong = run(*small, "--sae-l1", "100", "--json")
    assert strong.exit_code == 0, strong.output
    summary = json.loads(strong.stdout)
    facts = summary["method_facts"]
    assert set(facts) == {key for key, *_ in get_method("sae").reported_facts}
    assert {"sae_scored_no_code_fraction", "sae_codes_used"} <= set(facts)  # as methods.md says
    assert facts["sae_no_code_fraction"] > 0.9 and facts["sae_fraction_of_variance_explained"] < 0.5
    assert len(summary["warnings"]) == 1
    warned = [line for line in strong.stderr.splitlines() if "sae: the autoencoders" in line]
    assert len(warned) == 1 and "lower --sae-l1" in warned[0]
    assert warned[0].startswith("warning: sae: the autoencoders")  # said as what it is
    table = run(*small, "--sae-l1", "100")
    assert "SAE variance explained" in table.stdout and "SAE inputs with no code" in table.stdout
    assert re.search(r"│ SAE units used as codes \(mean\) +│ \d+\.\d +│", table.stdout)
    assert re.search(r"│ SAE units +│ \d+ +│", table.stdout)  # a count, no decimals
    healthy = json.loads(run(*small, "--json").stdout)  # the defaults
    assert healthy["warnings"] == []
    assert healthy["method_facts"]["sae_fraction_of_variance_explained"] >= 0.8


def test_the_default_threshold_with_a_node_score_not_from_chance_is_warned_about():
    """A helper's trial: --node-score positive-share kept 25 of 25 components at the
    default threshold, which is for above-chance scores."""
    sae = get_method("sae")
    facts = {"node_score": "positive-share", "threshold": sae.default_threshold}
    (said,) = sae.warnings(facts)
    assert said.startswith("sae: the threshold 0.1 is for --node-score above-chance")
    assert sae.warnings({**facts, "threshold": 0.5}) == []
    assert sae.warnings({**facts, "threshold": None, "top_k": 5}) == []
    assert sae.warnings({**facts, "node_score": "above-chance"}) == []


def test_training_is_deterministic_under_a_seed():
    data = torch.randn(50, 12, generator=torch.Generator().manual_seed(0))
    first = train_sae(data, 6, 20, 0.05, 1e-3, torch.Generator().manual_seed(3))
    second = train_sae(data, 6, 20, 0.05, 1e-3, torch.Generator().manual_seed(3))
    assert torch.equal(first.encoder, second.encoder)


def test_mean_writes_average_each_prompts_own_tokens(tiny_model):
    """A padded batch's mean writes equal those of each prompt run alone, unpadded."""
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, 0)
    engine = PatchingEngine(tiny_model, task, data)
    assert len(set(data.positions["END"].tolist())) > 1  # prompts of different lengths
    writes = engine.mean_writes(engine.clean_cache)
    for i in range(data.n_prompts):
        tokens = data.clean[i : i + 1, : int(data.positions["END"][i]) + 1]
        _, cache = tiny_model.run_with_cache(tokens, tiny_model.output_hooks())
        z = cache["blocks.1.attn.hook_z"][0].mean(0)  # [head, d_head]
        head = torch.einsum("he,hed->hd", z, tiny_model.head_output_weights(1))
        sender = engine.layout.head_sender(1)
        assert torch.allclose(writes[i, sender : sender + 4], head, atol=1e-5)
        mlp = cache["blocks.0.hook_mlp_out"][0].mean(0)
        assert torch.allclose(writes[i, engine.layout.mlp_sender(0)], mlp, atol=1e-5)


def test_writes_at_positions_are_each_prompts_own(tiny_model):
    """Each sender's write at a prompt's named positions, from a padded batch, is what the
    prompt run alone writes there; ``all`` reads back from END as far as the shortest
    prompt reaches, ``named`` the task's positions in their order."""
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, 0)
    engine = PatchingEngine(tiny_model, task, data)
    at = torch.stack(list(data.positions.values()), 1)  # [n, P]
    writes = engine.writes_at(engine.clean_cache, at)
    assert writes.shape == (6, engine.layout.n_senders, len(data.positions), tiny_model.d_model)
    for i in range(data.n_prompts):
        tokens = data.clean[i : i + 1, : int(data.positions["END"][i]) + 1]
        _, cache = tiny_model.run_with_cache(tokens, tiny_model.output_hooks())
        z = cache["blocks.1.attn.hook_z"][0, at[i]]  # [P, head, d_head]
        head = torch.einsum("phe,hed->hpd", z, tiny_model.head_output_weights(1))
        sender = engine.layout.head_sender(1)
        assert torch.allclose(writes[i, sender : sender + 4], head, atol=1e-5)
        mlp = cache["blocks.0.hook_mlp_out"][0, at[i]]
        assert torch.allclose(writes[i, engine.layout.mlp_sender(0)], mlp, atol=1e-5)
    whole = Engine(tiny_model, task, data, task.default_metric)
    named, count = sae_positions(whole, "named")
    assert count == len(data.positions) and torch.equal(named(engine), at)
    every, count = sae_positions(whole, "all")
    end = data.positions["END"]
    assert count == int(end.min()) + 1
    assert torch.equal(every(engine)[:, -1], end) and (every(engine)[:, 0] >= 0).all()
    assert (every(engine).diff(dim=1) == 1).all()


def sae_engine(model, options, seed=0):
    task = get_task("colored-objects", "absent-object")
    data = task.make_data(model, 8, seed=0)
    run = MethodRun(seed=seed, options=method_options(get_method("sae"), options), n_prompts=8)
    return Engine(model, task, data, task.default_metric), run


def sae_scores(model, options, seed=0):
    return get_method("sae").score(*sae_engine(model, options, seed))


def test_restarts_average_autoencoders_of_their_own_seeds(word_model):
    """``--sae-restarts 3`` scores the mean of three autoencoders, each trained on its own
    draw of examples from its own seed (the first the single run's); the spread reported
    is their std."""
    small = {"n_codes": 12, "sae_steps": 30, "n_examples": 6, "node_score": "positive-share"}
    one = sae_scores(word_model, {**small, "sae_restarts": 1})
    three = sae_scores(word_model, {**small, "sae_restarts": 3})
    assert len({restart_seed(0, k) for k in range(3)}) == 3 and restart_seed(0, 0) == 0
    engine, run = sae_engine(word_model, {**small, "sae_restarts": 3})
    method, units = get_method("sae"), engine.layout.n_senders - 1
    node_score = run.options["node_score"]
    each = [
        sae_module._overlap(method.code_prompts(engine, run, [k]), 0, node_score).node
        for k in range(3)
    ]
    torch.testing.assert_close(each[0], one.nodes[1:])
    torch.testing.assert_close(torch.stack(each).mean(0), three.nodes[1:])
    spread = torch.stack(each).std(0)
    assert three.facts["sae_restart_spread_max"] == pytest.approx(float(spread.max()))
    assert three.facts["sae_restart_spread_max"] > 0.0 == one.facts["sae_restart_spread_max"]
    assert len(each[0]) == units


def test_positions_give_each_component_its_best_positions_score(word_model):
    """With positions, a component's score is its best position's (so at least as high
    as a position's on its own), within [0, 1], and the graph says how many positions."""
    small = {"n_codes": 12, "sae_steps": 30, "n_examples": 6}
    named = sae_scores(word_model, {**small, "sae_positions": "named"})
    every = sae_scores(word_model, {**small, "sae_positions": "all"})
    assert named.facts["sae_position_count"] == 4  # COLOR, OBJECT, QUERY, END
    assert every.facts["sae_position_count"] > 4
    for scores in (named, every):
        assert 0.0 <= float(scores.nodes.min()) and float(scores.nodes.max()) <= 1.0
        assert scores.nodes[1:].any()


def test_answer_heads_get_codes_unique_to_positives():
    """On planted greater-than, the year heads and MLPs that carry the answer show codes on
    the clean years that no 01-year prompt shows; the distractors mostly do not."""
    graph = find(load_model("planted-greater-than"), "greater-than", "sae", n_prompts=50)
    truth = ground_truth("planted-greater-than", "greater-than")
    scores = {n: graph.nodes[n]["score"] for n in component_nodes(graph)}
    planted = [n for n in scores if truth.nodes[n]["in_circuit"]]
    others = [n for n in scores if n not in planted]
    assert min(scores[n] for n in planted) > 0.5
    assert min(scores[n] for n in planted) > max(scores[n] for n in others)
    assert graph.graph["corruption"] == "yy-01"
    assert graph.graph["negative_accuracy"] < graph.graph["clean_accuracy"]


def test_same_seed_same_graph_and_another_seed_another(tiny_model):
    options = {"n_codes": 20}
    graph = lambda seed: find(tiny_model, "ioi", "sae", n_prompts=6, seed=seed, options=options)
    first, second, third = graph(4), graph(4), graph(5)
    assert edges_by_name(first) == edges_by_name(second)
    assert dict(first.nodes(data=True)) == dict(second.nodes(data=True))
    assert edges_by_name(first) != edges_by_name(third)


def test_colored_objects_negatives_ask_about_an_absent_object(word_model):
    data = get_task("colored-objects", "absent-object").make_data(word_model, 10, 0)
    for clean, corrupted in zip(data.clean_prompts, data.corrupted_prompts):
        scene, question = corrupted.rsplit("What color is the ", 1)
        asked = question.split("?")[0]
        assert clean.startswith(scene) and asked not in re.findall(r"\w+", scene)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n-examples", "0"], "'--n-examples': 0 is not in the range 1<=x<=1000000"),
        (["--n-examples", "13"], "--n-examples 13 is more than the 12 prompts"),
        (["--n-codes", "300"], "--n-codes 300 must be between 1 and the 125 vectors"),
        (  # a trial's: the bound left the positions out (126 was refused here)
            ["--sae-positions", "named", "--n-codes", "626"],
            "626 must be between 1 and the 625 vectors the autoencoder is trained on (5 "
            "examples x 25 heads and MLPs x 5 positions)",
        ),
        (["--sae-steps", "0"], "'--sae-steps': 0 is not in the range 1<=x<=1000000"),
    ],
)
def test_bad_settings_end_with_one_line(args, message):
    base = ["discover", "--task", "ioi", "--method", "sae", "--model", "planted"]
    assert_one_line_error(run(*base, "--n-prompts", "6", *args), message)


def test_the_default_codes_are_at_most_the_vectors_trained_on(word_model):
    """The authors' 200 codes, fewer where a small model gives fewer vectors (3 examples x
    the word model's components here)."""
    graph = find(word_model, "ioi", "sae", n_prompts=4, options={"n_examples": 3, "sae_steps": 20})
    components = word_model.n_layers * (word_model.n_heads + int(word_model.has_mlp))
    assert 3 * components < 200
    assert graph.graph["sae_codes"] == 3 * components


def test_heads_only_codes_the_heads_and_scores_the_mlps_0(word_model):
    """--sae-components heads (the authors'): the autoencoder is trained on and codes the
    heads' writes alone (fewer vectors: its default codes say so), each MLP and every
    edge at one scores 0, and the heads keep scores of their own."""
    small = {"sae_steps": 30, "n_examples": 3, "node_score": "positive-share"}
    engine, run = sae_engine(word_model, {**small, "sae_components": "heads"})
    coded = get_method("sae").code_prompts(engine, run)
    heads = word_model.n_layers * word_model.n_heads
    assert coded.codes.shape[-1] == heads and coded.n_codes == 3 * heads
    scores = sae_scores(word_model, {**small, "sae_components": "heads"})
    layout = engine.layout
    mlps = [layout.mlp_sender(layer) for layer in range(word_model.n_layers)]
    assert word_model.has_mlp and not scores.nodes[mlps].any() and scores.nodes[1:].any()
    edges = scores.edges
    assert not edges[mlps].any()
    assert not edges[:, [layout.mlp_receiver(layer) for layer in range(layout.n_layers)]].any()
    everything = sae_scores(word_model, small)
    assert everything.nodes[mlps].any() and everything.facts["sae_codes"] > coded.n_codes


def test_codes_over_positions_may_be_more_than_the_components():
    args = ["discover", "--task", "ioi", "--method", "sae", "--model", "planted"]
    args += ["--n-prompts", "6", "--sae-positions", "named", "--n-codes", "300"]
    result = run(*args, "--sae-steps", "10", "--sae-restarts", "1", "--no-faithfulness", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["method_facts"]["sae_codes"] == 300


def test_heads_only_bounds_the_codes_by_the_heads_vectors():
    base = ["discover", "--task", "ioi", "--method", "sae", "--model", "planted"]
    result = run(*base, "--n-prompts", "6", "--sae-components", "heads", "--n-codes", "101")
    assert_one_line_error(result, "and the 100 vectors the autoencoder is trained on (5 exam")
    assert "5 examples x 20 heads)" in result.stderr


def test_sae_options_belong_to_sae():
    args = ["discover", "--task", "ioi", "--method", "eap", "--model", "planted", "--n-codes", 5]
    assert_one_line_error(run(*args), "--n-codes applies to sae, not eap")


def test_negatives_default_to_the_task_negative_corruption(word_model):
    graph = find(word_model, "colored-objects", "sae", n_prompts=6, options={"n_codes": 20})
    assert graph.graph["corruption"] == "absent-object"
    other = find(
        word_model,
        "colored-objects",
        "sae",
        n_prompts=6,
        corruption="other-object",
        options={"n_codes": 20},
    )
    assert other.graph["corruption"] == "other-object"


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, lowest", [("ioi", 0.85), ("greater-than", 0.99), ("docstring", None)]
)
def test_finds_each_planted_circuit_through_the_cli(task, lowest):
    """One seed; benchmarks/sae.py reports the mean over seeds (docs/planted.md). Codes
    that summarise the outputs find the circuit heads whose outputs differ most between
    positive and negative prompts first. Docstring's two weaker heads look like
    distractors to them, and where they rank among the distractors follows the CPU's
    float rounding through the training: node AUC 0.67 at seed 0 on the machines before
    2026-12-04, 0.39 on an Intel Xeon (seeds 0-4 there: 0.39, 0.59, 0.53, 0.48, 0.61;
    the mover a2.h3 first at seeds 0-2, every node kept the circuit's at 0-4); so
    docstring's AUC is not asserted, its precision is."""
    args = ["discover", "--task", task, "--method", "sae", "--model", "planted", "--json"]
    summary = json.loads(run(*args, "--no-faithfulness").stdout)
    if lowest is not None:
        assert summary["metrics"]["node_auc"] >= lowest
        assert summary["metrics"]["node_precision"] > 0
    else:  # docstring: what it keeps (the mover) is the circuit's
        assert summary["metrics"]["node_precision"] == 1.0
    assert summary["warnings"] == []
