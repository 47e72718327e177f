"""Subnetwork probing and edge pruning: hard-concrete gates, the masked passes that train
them, and the planted circuits recovered."""

import pytest
import torch
from conftest import assert_one_line_error, find, run

from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.methods import METHODS, method_options
from circuitx.methods.learned_masks import open_probability, sample_gates
from circuitx.scoring import score_graph
from circuitx.tasks import get_task


def test_gates_are_exactly_zero_or_one_often_and_follow_the_seed():
    log_alpha = torch.tensor([-3.0, 0.0, 3.0]).repeat(2000)
    gates = sample_gates(log_alpha, torch.Generator().manual_seed(0)).view(2000, 3)
    assert bool(((gates >= 0) & (gates <= 1)).all())
    open_share = (gates != 0).double().mean(0)
    torch.testing.assert_close(
        open_share, open_probability(log_alpha[:3]).double(), atol=0.03, rtol=0
    )
    assert float((gates == 1).double().mean()) > 0.1 and float((gates == 0).double().mean()) > 0.1
    again = sample_gates(log_alpha, torch.Generator().manual_seed(0)).view(2000, 3)
    assert torch.equal(gates, again)


def test_the_training_pass_gives_the_masked_models_gradient(tiny_model):
    task = get_task("ioi")
    engine = Engine(tiny_model, task, task.make_data(tiny_model, 6, seed=4), task.default_metric)
    ((part, _),) = engine.parts()
    # at all ones it is EAP's node gradient (the frozen differences are exact there)
    ones = torch.ones(1, part.layout.n_senders, requires_grad=True)
    part.metric(part.run(ones, train=True)).mean().backward()
    torch.testing.assert_close(ones.grad[0], part.mask_gradients()[0], atol=1e-5, rtol=1e-4)
    # elsewhere, the slope of the masked model's metric
    mask = torch.ones(1, part.layout.n_senders)
    mask[0, 1::3] = 0.3  # some heads and MLPs mostly patched
    leaf = mask.clone().requires_grad_(True)
    part.metric(part.run(leaf, train=True)).mean().backward()
    sender, eps = 2, 1e-2
    nudged = mask.repeat(2, 1)
    nudged[1, sender] -= eps
    with torch.no_grad():
        metrics = part.metric(part.run(nudged)).mean(-1)
    slope = float(metrics[0] - metrics[1]) / eps
    assert slope == pytest.approx(float(leaf.grad[0, sender]), rel=3e-2, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, task", [("planted-ioi", "ioi"), ("planted-greater-than", "greater-than")]
)
def test_subnetwork_probing_finds_the_planted_circuit(model, task):
    planted = load_model(model)
    options = {"sp_steps": 60}
    graph = find(
        planted, task, "subnetwork-probing", n_prompts=8, faithfulness=False, options=options
    )
    assert score_graph(graph, ground_truth(model, task))["node_auc"] >= 0.99
    again = find(
        planted, task, "subnetwork-probing", n_prompts=8, faithfulness=False, options=options
    )
    assert [d["score"] for _, d in again.nodes(data=True)] == [
        d["score"] for _, d in graph.nodes(data=True)
    ]  # the same seed, the same gates


def test_the_edge_training_pass_gives_the_masked_models_gradient(tiny_model):
    """The edge-masked pass whose differences are its own keeps every difference a
    correction read as autograd saved it (its buffer grows out of place)."""
    task = get_task("ioi")
    engine = Engine(tiny_model, task, task.make_data(tiny_model, 6, seed=4), task.default_metric)
    ((part, _),) = engine.parts()
    layout = part.layout
    ones = torch.ones(1, layout.n_senders, layout.n_receivers, requires_grad=True)
    part.metric(part.run(edge_mask=ones, train=True)).mean().backward()
    torch.testing.assert_close(ones.grad[0], part.mask_gradients()[1], atol=1e-5, rtol=1e-4)
    senders, receivers = layout.edge_positions
    mask = torch.ones(1, layout.n_senders, layout.n_receivers)
    mask[0, senders[::4], receivers[::4]] = 0.3
    leaf = mask.clone().requires_grad_(True)
    part.metric(part.run(edge_mask=leaf, train=True)).mean().backward()
    sender, receiver = layout.edge("a0.h1->a1.h0<q>")
    nudged, eps = mask.repeat(2, 1, 1), 1e-2
    nudged[1, sender, receiver] -= eps
    with torch.no_grad():
        metrics = part.metric(part.run(edge_mask=nudged)).mean(-1)
    slope = float(metrics[0] - metrics[1]) / eps
    assert slope == pytest.approx(float(leaf.grad[0, sender, receiver]), rel=3e-2, abs=1e-4)


@pytest.mark.slow
def test_edge_pruning_keeps_exactly_its_target_and_finds_the_planted_circuit():
    planted = load_model("planted-greater-than")
    options = {"ep_steps": 80, "sparsity": 0.98}
    graph = find(planted, "greater-than", "edge-pruning", n_prompts=8, options=options)
    kept = [key for *_, key, data in graph.edges(keys=True, data=True) if data["in_circuit"]]
    n_edges = graph.number_of_edges()
    assert len(kept) == n_edges - round(0.98 * n_edges) == graph.graph["top_k"]
    assert graph.graph["ep_open_edges"] == sum(d["score"] > 0.5 for *_, d in graph.edges(data=True))
    assert (
        score_graph(graph, ground_truth("planted-greater-than", "greater-than"))["node_auc"] >= 0.99
    )
    assert graph.graph["faithfulness"] > 0.95
    again = find(planted, "greater-than", "edge-pruning", n_prompts=8, options=options)
    assert [d["score"] for *_, d in again.edges(data=True)] == [
        d["score"] for *_, d in graph.edges(data=True)
    ]


@pytest.mark.parametrize(
    "flag, value, said",
    [("--sparsity", "1", "not in the range 0.0<=x<1.0"), ("--warmup", "2", "0.0<=x<=1.0")],
)
def test_a_share_outside_its_range_is_one_line(flag, value, said):
    result = run(
        "discover", "--task", "ioi", "--model", "planted", "--method", "subnetwork-probing",
        flag, value,
    )  # fmt: skip
    assert_one_line_error(result, said)
    with pytest.raises(CircuitxError, match=f"{flag} must be"):  # the Python API's check
        method_options(METHODS["subnetwork-probing"], {flag[2:]: float(value)})


def test_training_that_misses_its_sparsity_says_so(tiny_model):
    """A helper's trial: subnetwork probing trained too briefly kept nearly every node,
    and nothing said the gates never reached their target."""
    options = {"sp_steps": 3}
    graph = find(
        tiny_model, "ioi", "subnetwork-probing", n_prompts=4, faithfulness=False, options=options
    )
    reached = graph.graph["sp_expected_sparsity"]
    assert reached < 0.1
    (said,) = METHODS["subnetwork-probing"].warnings(graph.graph)
    assert said.startswith(
        f"subnetwork-probing: training reached an expected sparsity of {reached:.3g} against "
        "its 0.7 target"
    )
    assert said.endswith("raise --sp-steps or --sp-lr")
    reached_it = {"ep_expected_sparsity": 0.97, "sparsity": 0.975}
    assert METHODS["edge-pruning"].warnings(reached_it) == []
    short = {**reached_it, "ep_expected_sparsity": 0.5}
    assert "--ep-steps" in METHODS["edge-pruning"].warnings(short)[0]
    # a trial's: the authors' learning rate reached 0.945, twice the open edges asked for,
    # within 90% of the target and unsaid
    (said,) = METHODS["edge-pruning"].warnings({**reached_it, "ep_expected_sparsity": 0.945})
    assert "0.945 against its 0.975 target, 2.2 times the share of gates open" in said


def test_a_target_past_the_open_edges_says_so():
    """A trial's --sparsity 0.96 on planted IOI: training left 19 gates open and the 30
    asked for took 11 closed ones by rank (10 spurious nodes), unsaid."""
    facts = {"ep_kept_edges": 30, "ep_open_edges": 19, "top_k": 30, "sparsity": 0.96}
    facts["ep_expected_sparsity"] = 0.967
    (said,) = METHODS["edge-pruning"].warnings(facts)
    assert said.startswith("edge-pruning: training left 19 edges open (P(open) > 1/2), and ")
    assert "the other 11 are closed gates taken by rank" in said
    assert METHODS["edge-pruning"].warnings({**facts, "ep_open_edges": 30}) == []
    assert METHODS["edge-pruning"].warnings({**facts, "top_k": 5}) == []  # --top-k given


def test_a_sparsity_that_keeps_no_edge_says_so():
    """A helper's trial: on an 8-edge tracr model the default 0.975 kept 0 edges, and the
    run said every score was under 1e-6 (they were 0.003 to 0.005)."""
    from circuitx.discovery import run_warnings

    facts = {"ep_kept_edges": 0, "top_k": 0, "sparsity": 0.975}
    assert (
        METHODS["edge-pruning"]
        .warnings(facts)[-1]
        .startswith("edge-pruning: --sparsity 0.975 keeps none of the graph's edges")
    )
    summary = {"n_prompts": 8, "n_nodes_in_circuit": 0, "method": "edge-pruning", "top_k": 0}
    summary |= {"metric": "l2", "clean_metric": 0.0, "corrupted_metric": -1.0}
    summary |= {"largest_score": 0.005, "threshold": None}
    assert run_warnings(summary, 8)[-1] == (
        "no component is in the circuit: its selection keeps the top 0"
    )


def test_subnetwork_probing_trains_on_the_metric_when_asked(tiny_model):
    """A helper's trial 43: subnetwork probing trained on the KL whatever --metric said, and
    said nothing; the ACDC paper runs it on the task metric too (minus it, minimised)."""
    graphs = {
        loss: find(
            tiny_model,
            "ioi",
            "subnetwork-probing",
            n_prompts=4,
            faithfulness=False,
            options={"sp_steps": 5, "sp_loss": loss},
        )  # fmt: skip
        for loss in ("kl", "metric")
    }
    assert "sp_final_metric" not in graphs["kl"].graph and graphs["kl"].graph["sp_final_kl"] >= 0
    assert "sp_final_kl" not in graphs["metric"].graph
    scores = {k: [d["score"] for _, d in g.nodes(data=True)] for k, g in graphs.items()}
    assert scores["kl"] != scores["metric"]  # the loss trains the gates
    method = METHODS["subnetwork-probing"]
    assert method.target({"sp_loss": "metric"}) is None
    assert "not on --metric" in method.target({"sp_loss": "kl"})
    said = (
        "subnetwork-probing trains its gates on the KL divergence from the full model, not on "
        "--metric (--sp-loss metric trains them on it); logit-diff is what faithfulness reads"
    )
    args = ["discover", "--task", "ioi", "--method", "subnetwork-probing", "--model", "planted"]
    args += ["--n-prompts", "2", "--sp-steps", "2", "--faithfulness-prompts", "2"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.stderr.split())
    result = run(*args[:-2], "--no-faithfulness")  # a trial's: said where nothing reads it
    assert result.exit_code == 0, result.output
    assert "logit-diff sets only the metrics shown" in " ".join(result.stderr.split())
