"""Greater-than data with the real GPT-2 tokenizer (from ../shared), its metric and references."""

import re

import pytest
import torch

from circuitx.errors import CircuitxError
from circuitx.reference import acdc_edge_count
from circuitx.tasks import get_task
from circuitx.tasks.greater_than import two_digit_tokens, valid_years

task = get_task("greater-than")


@pytest.fixture(scope="module")
def data(tiny_model):
    return task.make_data(tiny_model, 40, seed=1)


def circuit(graph, kind):
    return {n for n, d in graph.nodes(data=True) if d["kind"] == kind and d["in_circuit"]}


def edges(graph):
    return {k for *_, k, d in graph.edges(keys=True, data=True) if d["in_circuit"]}


def test_two_digit_numbers_are_single_gpt2_tokens(tiny_model):
    ids = two_digit_tokens(tiny_model)
    assert [tiny_model.decode([int(t)]) for t in ids] == [f"{i:02d}" for i in range(100)]


def test_valid_years_follow_the_acdc_rule(tiny_model):
    years = valid_years(tiny_model, two_digit_tokens(tiny_model))
    assert (
        len(years) == 604
    )  # ACDC's year set for GPT-2 (1100-1799, first/last per century dropped)
    assert all(2 <= y % 100 <= 98 for y in years) and 1280 not in years and 1302 not in years
    assert min(y for y in years if y // 100 == 17) == 1703  # 1702 is the century's first


def test_prompts_and_positions(tiny_model, data):
    decode = lambda i, key: tiny_model.decode([int(data.clean[i, data.positions[key][i]])])
    for i, prompt in enumerate(data.clean_prompts):
        match = re.fullmatch(
            r"The (\w+) lasted from the year (\d\d)(\d\d) to the year (\d\d)", prompt
        )
        assert match, prompt
        noun, xx, yy, xx2 = match.groups()
        assert xx == xx2 and 2 <= int(yy) <= 98 and int(data.extra["yy"][i]) == int(yy)
        assert decode(i, "NOUN") == " " + noun and decode(i, "XX1") == " " + xx
        assert decode(i, "YY") == yy and decode(i, "END") == " " + xx
        assert int(data.positions["END"][i]) == data.clean.shape[1] - 1


def test_corrupted_prompts_change_only_yy_to_01(tiny_model, data):
    for i in range(data.n_prompts):
        changed = (data.clean[i] != data.corrupted[i]).nonzero().flatten().tolist()
        assert changed == [int(data.positions["YY"][i])]
        assert tiny_model.decode([int(data.corrupted[i, changed[0]])]) == "01"


def test_prob_diff_by_hand(tiny_model, data):
    final = tiny_model.run(data.clean, positions=data.positions["END"])
    got = task.metric("prob-diff", final, data, final)
    digits = two_digit_tokens(tiny_model)
    for i in (0, 7):
        probs = final[i].softmax(-1)
        yy = int(data.extra["yy"][i])
        above = sum(float(probs[digits[j]]) for j in range(yy + 1, 100))
        at_or_below = sum(float(probs[digits[j]]) for j in range(yy + 1))
        assert float(got[i]) == pytest.approx(above - at_or_below, abs=1e-5)
    assert task.default_metric == "prob-diff" and "logit-diff" not in task.metrics


def test_correct_means_the_top_year_is_above_yy(data):
    final = torch.zeros(data.n_prompts, 50257)
    digits = data.extra["digit_tokens"]
    yy = data.extra["yy"]
    final[torch.arange(data.n_prompts), digits[torch.clamp(yy + 1, max=99)]] = 5.0
    assert task.correct(final, data).all()
    final[torch.arange(data.n_prompts), digits[yy]] = 9.0
    assert not task.correct(final, data).any()


def test_acdc_reference_has_the_published_size():
    graph = task.reference("", 12, 12, True)
    heads = ["0.3", "0.5", "0.1", "5.5", "6.1", "6.9", "7.10", "8.11", "9.1"]
    assert circuit(graph, "head") == {"a{}.h{}".format(*h.split(".")) for h in heads}
    assert circuit(graph, "mlp") == {f"m{i}" for i in (0, 1, 2, 3, 8, 9, 10, 11)}
    assert len(edges(graph)) == 235 and acdc_edge_count(graph) == 262  # ACDC's count
    assert {
        "input->a0.h3<q>",
        "input->m2",
        "a0.h1->m0",
        "m1->m3",
        "m4->m8",  # MLPs below the last AMID layer are chained
        "m8->a9.h1<q>",  # earlier MLPs feed the AMID queries
        "a0.h5->a6.h9<k>",
        "a9.h1->m9",
        "m10->logits",
        "a8.h11->logits",
    } <= edges(graph)
    assert not {
        "m4->a9.h1<k>",
        "input->a5.h5<q>",
        "a0.h3->logits",
        "m8->a9.h1<k>",
        "m4->m9",
    } & edges(graph)


def test_hanna_variant_swaps_the_amid_heads():
    acdc, hanna = (
        circuit(task.reference("", 12, 12, True), "head"),
        circuit(task.reference("hanna", 12, 12, True), "head"),
    )
    assert hanna - acdc == {"a5.h1", "a8.h8"} and acdc - hanna == {"a6.h1"}


def test_reference_needs_the_model_to_hold_it():
    with pytest.raises(CircuitxError, match="needs at least 12 layers x 12 heads"):
        task.reference("", 10, 12, True)
    with pytest.raises(CircuitxError, match="has MLPs; this model has none"):
        task.reference("", 12, 12, False)


def test_word_level_tokenizer_splits_years_into_digit_pairs(word_model):
    """The built-in tokenizer splits 1732 into 17 and 32, so the task runs on built-in models."""
    data = task.make_data(word_model, 10, seed=0)
    assert (data.positions["YY"] == data.positions["XX1"] + 1).all()
    assert data.clean.shape == data.corrupted.shape


def test_tokenizer_without_two_digit_tokens_is_rejected(tiny_model, monkeypatch):
    encode = type(tiny_model).encode
    split = lambda self, text: [1, 2] if text.isdigit() else encode(self, text)
    monkeypatch.setattr(type(tiny_model), "encode", split)
    with pytest.raises(CircuitxError, match="every two-digit number as one token"):
        task.make_data(tiny_model, 2, seed=0)
