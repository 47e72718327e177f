"""Docstring data, metric and references.

The docstring model's own tokenizer (NeelNanda/gpt-neox-tokenizer-digits) is not available
on this machine, so the generator is tested with the real GPT-2 tokenizer (from ../shared)
and with the word-level tokenizer circuitx builds for its built-in models.
"""

import re

import pytest

from circuitx.errors import CircuitxError
from circuitx.reference import acdc_edge_count
from circuitx.tasks import get_task
from circuitx.tasks.docstring import CORRUPTIONS

task = get_task("docstring")
PROMPT = re.compile(
    r"\ndef (\w+)\(self, (\w+), (\w+), (\w+), (\w+), (\w+), (\w+)\):\n"
    r'    """\w+ \w+ \w+\n\n    :param (\w+): \w+ \w+\n    :param (\w+): \w+ \w+\n    :param'
)
# which named positions each corruption changes
CHANGES = {
    "random_random": {"A_def", "B_def", "C_def", "A_doc", "B_doc"},
    "random_def": {"A_def", "B_def"},
    "random_doc": {"A_doc", "B_doc"},
    "random_answer": {"C_def"},
    "random_def_doc": {"A_def", "B_def", "A_doc", "B_doc"},
    "random_answer_doc": {"C_def", "A_doc", "B_doc"},
}


@pytest.fixture(scope="module", params=["gpt2", "word-level"])
def model(request, tiny_model, word_model):
    return tiny_model if request.param == "gpt2" else word_model


def token(model, data, i, key):
    return int(data.clean[i, data.positions[key][i]])


def test_prompts_have_acdc_shape_and_positions(model):
    data = task.make_data(model, 20, seed=2)
    for i, prompt in enumerate(data.clean_prompts):
        match = PROMPT.fullmatch(prompt)
        assert match, prompt
        _, _, _, a, b, c, _, doc_a, doc_b = match.groups()
        assert (doc_a, doc_b) == (a, b) and len({*match.groups()}) == 7
        assert model.decode([int(data.answer[i])]).strip() == c
        for key, name in (("A_def", a), ("B_def", b), ("C_def", c), ("A_doc", a), ("B_doc", b)):
            assert model.decode([token(model, data, i, key)]).strip() == name
        assert model.decode([token(model, data, i, "END")]).strip() == "param"


def test_wrong_answers_are_the_13_other_drawn_names(model):
    data = task.make_data(model, 10, seed=0)
    assert data.wrong.shape == (10, 13)
    for i in range(10):
        wrong = set(data.wrong[i].tolist())
        assert len(wrong) == 13 and int(data.answer[i]) not in wrong
        assert {token(model, data, i, "A_def"), token(model, data, i, "B_def")} <= wrong
        method = PROMPT.fullmatch(data.clean_prompts[i]).group(1)
        assert model.encode(" " + method)[0] not in wrong


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_each_corruption_changes_only_its_names(model, corruption):
    data = get_task("docstring", corruption).make_data(model, 12, seed=4)
    clean = task.make_data(model, 12, seed=4)
    assert data.clean_prompts == clean.clean_prompts  # the corruption never moves the clean side
    for i in range(12):
        changed = set((data.clean[i] != data.corrupted[i]).nonzero().flatten().tolist())
        assert changed == {int(data.positions[key][i]) for key in CHANGES[corruption]}
        new = {int(data.corrupted[i, p]) for p in changed}
        renamed_alike = 2 if corruption == "random_def_doc" else 0  # A, B: def and doc
        assert len(new) == len(changed) - renamed_alike and int(data.answer[i]) not in new


@pytest.mark.parametrize("corruption", ["random_def_doc", "random_answer_doc"])
def test_random_doc_documents_the_names_random_def_puts_in(model, corruption):
    """As ACDC's generator: random_def and random_doc draw the same fresh names, so
    random_def_doc renames A and B alike in the def and the docstring."""
    data = get_task("docstring", corruption).make_data(model, 12, seed=4)
    fresh = get_task("docstring", "random_def").make_data(model, 12, seed=4)
    for i in range(12):
        match = PROMPT.fullmatch(data.corrupted_prompts[i])
        _, _, _, a, b, c, _, doc_a, doc_b = match.groups()
        original = PROMPT.fullmatch(data.clean_prompts[i]).groups()
        def_a, def_b = PROMPT.fullmatch(fresh.corrupted_prompts[i]).groups()[3:5]
        assert (doc_a, doc_b) == (def_a, def_b) and {doc_a, doc_b}.isdisjoint(original)
        if corruption == "random_def_doc":
            assert (a, b, c) == (doc_a, doc_b, original[5])


def test_unknown_corruption():
    with pytest.raises(CircuitxError, match="no corruption 'nope'"):
        get_task("docstring", "nope")


def test_metric_is_correct_minus_best_other(tiny_model):
    data = task.make_data(tiny_model, 6, seed=1)
    final = tiny_model.run(data.clean, positions=data.positions["END"])
    got = task.metric("logit-diff", final, data, final)
    for i in range(6):
        expected = final[i, data.answer[i]] - final[i, data.wrong[i]].max()
        assert float(got[i]) == pytest.approx(float(expected), abs=1e-5)
    assert task.correct(final, data).tolist() == (got > 0).tolist()


def test_reference_is_acdcs_37_edge_graph():
    graph = task.reference("", 4, 8, False)
    heads = {n for n, d in graph.nodes(data=True) if d["kind"] == "head" and d["in_circuit"]}
    assert heads == {"a0.h5", "a1.h2", "a1.h4", "a2.h0", "a3.h0", "a3.h6"}
    edges = {k for *_, k, d in graph.edges(keys=True, data=True) if d["in_circuit"]}
    assert len(edges) == 24 and acdc_edge_count(graph) == 37
    assert {"a1.h4->a3.h6<q>", "a2.h0->a3.h0<k>", "a0.h5->a1.h2<k>", "a3.h6->logits"} <= edges
    assert not {"a1.h4->a3.h6<k>", "input->a0.h5<q>", "a2.h0->logits"} & edges


def test_oneill_bui_variant_and_models_with_mlps():
    variant = task.reference("oneill-bui", 4, 8, False)
    assert variant.nodes["a1.h0"]["in_circuit"] and not variant.nodes["a1.h2"]["in_circuit"]
    with_mlps = task.reference("", 12, 12, True)
    assert not any(d["in_circuit"] for _, d in with_mlps.nodes(data=True) if d["kind"] == "mlp")
    assert acdc_edge_count(with_mlps) == 37


def test_reference_on_a_model_too_small():
    with pytest.raises(CircuitxError, match="needs at least 4 layers x 7 heads"):
        task.reference("", 4, 6, False)


def test_tokenizer_without_single_token_names_is_rejected(tiny_model, monkeypatch):
    monkeypatch.setattr(type(tiny_model), "encode", lambda self, text: [1, 2])
    with pytest.raises(CircuitxError, match="single-token parameter names"):
        task.make_data(tiny_model, 2, seed=0)
