"""tracr-compiled models: the GPT-2 conversion reproduces tracr's outputs, and the circuit
read from the weights matches ACDC's ground truth."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from conftest import run

from circuitx.builtin import (
    BUILTIN_MODELS,
    ground_truth,
    ground_truths_at_hand,
    load,
    model_dir,
    own_ground_truth,
    shipped_ground_truths,
)
from circuitx.builtin.tracr import compile_program, read_program, save_compiled
from circuitx.builtin.tracr.circuit import ACDC_EDGES, role_names
from circuitx.errors import CircuitxError
from circuitx.graph import edges_by_name
from circuitx.graph_files import write_graph

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")
from tracr.compiler import lib  # noqa: E402
from tracr.rasp import rasp  # noqa: E402


def in_circuit(graph) -> set[str]:
    return {name for name, data in edges_by_name(graph).items() if data.get("in_circuit")}


def every_input(vocab, max_seq_len):
    for length in range(1, max_seq_len + 1):
        yield length, [list(s) for s in itertools.product(sorted(vocab, key=str), repeat=length)]


@pytest.mark.parametrize(
    "make, vocab, max_seq_len",
    [
        # not built-ins: a categorical aggregate reading the previous token (shift_by), and
        # a numerical mean over an always-true selector of a numerical map
        (lambda: lib.shift_by(1, rasp.tokens), {"a", "b", "c"}, 4),
        (
            lambda: rasp.numerical(
                rasp.Aggregate(
                    rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.TRUE),
                    rasp.numerical(rasp.Map(lambda x: 1 if x == 2 else 0, rasp.tokens)),
                    default=0,
                )
            ),
            {1, 2, 3},
            4,
        ),
    ],
    ids=["shift", "mean-of-twos"],
)
def test_converted_outputs_equal_tracr_on_every_input(tmp_path, make, vocab, max_seq_len):
    program = make()
    assembled = compile_program(program, vocab, max_seq_len)
    save_compiled(tmp_path, assembled, program, "test", "sequences")
    model = load(str(tmp_path), device="cpu")
    described = read_program(tmp_path)
    assert not model.causal
    labels = assembled.residual_labels
    encode = assembled.input_encoder.encoding_map
    # read from tracr's own labels, in the order of the output tokens
    if described.numerical:
        dims = [labels.index(program.label)]
    else:
        dims = [labels.index(f"{program.label}:{v}") for v in described.output_values]
    worst = 0.0
    for _, inputs in every_input(vocab, max_seq_len):
        ids = np.array([[encode["BOS"]] + [encode[v] for v in row] for row in inputs])
        residual = np.asarray(assembled.forward(assembled.params, ids).transformer_output.output)
        want = residual[:, 1:, dims]
        got = model.run(torch.tensor(ids))[:, 1:, described.output_tokens].numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    assert worst < 1e-4


@pytest.fixture(scope="module")
def truths():
    return {
        name: (ground_truth(name, "tracr:weights"), ground_truth(name, "tracr:acdc"))
        for name in ("tracr-proportion", "tracr-reverse")
    }


@pytest.mark.parametrize("name", ["tracr-proportion", "tracr-reverse"])
def test_the_ground_truth_of_acdcs_models_is_acdcs_list(truths, name):
    assert in_circuit(ground_truth(name, "tracr")) == in_circuit(truths[name][1])


def test_proportion_weight_circuit_is_acdcs(truths):
    weights, acdc = truths["tracr-proportion"]
    assert in_circuit(weights) == in_circuit(acdc)
    assert len(in_circuit(acdc)) == len(ACDC_EDGES["tracr-proportion"])


def test_reverse_weight_circuit_adds_the_selectors_reads_of_the_embeddings(truths):
    weights, acdc = truths["tracr-reverse"]
    # read from the embeddings and left out of ACDC's list: the always-true selector of
    # ``length`` (a0.h0) reads the tokens with its query and key, and every tracr query
    # reads the ``one`` direction for its default attention to BOS (a3.h0<q>)
    extra = {"input->a0.h0<q>", "input->a0.h0<k>", "input->a3.h0<q>"}
    assert in_circuit(weights) == in_circuit(acdc) | extra
    assert not extra & in_circuit(acdc)


def test_built_in_reverse_reverses(tmp_path):
    model = load("tracr-reverse", device="cpu")
    program = read_program(model_dir("tracr-reverse"))
    assert program.vocab == [1, 2, 3] and program.max_seq_len == 5
    assert program.inputs == "permutations" and not program.numerical
    tokens = torch.tensor([model.encode("BOS 1 2 3"), model.encode("BOS 3 1 2")])
    logits = model.run(tokens)[:, 1:, program.output_tokens]
    outputs = [[program.output_values[i] for i in row] for row in logits.argmax(-1).tolist()]
    assert outputs == [[3, 2, 1], [2, 1, 3]]


def test_models_lists_a_tracr_circuit_once_built(monkeypatch, tmp_path):
    def listed() -> dict:
        result = run("models", "--json")
        assert result.exit_code == 0, result.stderr
        return {row["name"]: row for row in json.loads(result.stdout)}

    with monkeypatch.context() as scope:  # an empty cache: nothing built, nothing building
        scope.setenv("CIRCUITX_CACHE_DIR", str(tmp_path))
        row = listed()["tracr-proportion"]
        assert (row["circuit"], row["circuits"]) == ("known once built", {})
        assert not any(tmp_path.iterdir())
    model_dir("tracr-proportion")  # built in the session's cache
    row = listed()["tracr-proportion"]
    assert row["circuit"] == "1 head, 1 MLP, 5 edges"
    assert set(row["circuits"]) == {"tracr", "tracr:weights", "tracr:acdc"}


def test_a_models_ground_truths_are_named_model_colon_variant(truths, tmp_path):
    """A helper's trial: a tracr circuit that came back from EAP-IG's own files (no task
    recorded) could not be scored: `--reference tracr-reverse` said to name one "with
    --model", which score has not, and tracr:acdc asked for a tracr model's graph."""
    acdc = own_ground_truth("tracr-reverse", None, which="acdc")
    assert in_circuit(acdc) == in_circuit(truths["tracr-reverse"][1])
    with pytest.raises(CircuitxError, match="name one: --reference tracr-reverse:tracr, "):
        own_ground_truth("tracr-reverse", None)
    with pytest.raises(CircuitxError, match="ships no ground truth 'zz'; choose from"):
        own_ground_truth("tracr-reverse", None, which="zz")
    graph = ground_truth("tracr-reverse", "tracr:acdc").copy()
    for key in ("task", "model", "reference"):  # as a file from another tool
        graph.graph.pop(key, None)
    path = tmp_path / "g.graphml"
    write_graph(graph, path)
    scored = run("score", path, "--reference", "tracr-reverse:weights", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["reference"].startswith("tracr-reverse ground truth")


@pytest.mark.parametrize(
    "name, shipped",
    [
        ("tracr-proportion", "tracr, tracr:acdc, tracr:weights"),
        ("tracr-hist", "tracr, tracr:weights"),
    ],
)
def test_a_tracr_models_ground_truths_are_named_before_it_compiles(name, shipped, tmp_path):
    """A session's note: `score --reference tracr-sort` compiled the model, then asked for
    a variant. The names are known without compiling (tracr-hist's has no ACDC list)."""
    with pytest.raises(CircuitxError, match=f"ships ground truths for {shipped};"):
        own_ground_truth(name, None, tmp_path)
    with pytest.raises(
        CircuitxError, match="are circuits of task tracr .* the graph's task is ioi"
    ):
        own_ground_truth(name, "ioi", tmp_path, which="weights")  # a trial's: it compiled first
    with pytest.raises(CircuitxError, match="ships no ground truth 'zz'"):
        own_ground_truth(name, None, tmp_path, which="zz")
    assert not any(tmp_path.iterdir())
    assert sorted(BUILTIN_MODELS[name].truth_names) == shipped_ground_truths(name)
    # read without a build: a planted model's always, a tracr model's once compiled
    assert not ground_truths_at_hand(name, tmp_path) and ground_truths_at_hand(name)
    assert ground_truths_at_hand("planted-ioi", tmp_path)


def test_roles_are_rasp_names_without_tracrs_process_wide_ids():
    labels = {"map_9", "map_3", "opp_idx-1_3", "length_5_selector_width_attn_output", "tokens"}
    assert role_names(labels) == {
        "map_9": "map_2",  # two values of one name: by the order of their ids
        "map_3": "map_1",
        "opp_idx-1_3": "opp_idx-1",
        "length_5_selector_width_attn_output": "length_selector_width_attn_output",
        "tokens": "tokens",
    }
