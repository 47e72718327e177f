"""IOI data with the real GPT-2 tokenizer (from ../shared), and the IOI reference circuit."""

import pytest
import torch

from circuitx.errors import CircuitxError
from circuitx.tasks import get_task
from circuitx.tasks.ioi import CLASSES, NAMES

ioi = get_task("ioi")


@pytest.fixture(scope="module")
def data(tiny_model):
    return ioi.make_data(tiny_model, 60, seed=3)


def test_every_name_is_one_gpt2_token(tiny_model):
    for name in NAMES:
        assert len(tiny_model.encode(" " + name)) == 1, name


def test_positions_point_at_the_right_tokens(tiny_model, data):
    decode = lambda i, pos: tiny_model.decode([int(data.clean[i, pos])])
    for i, prompt in enumerate(data.clean_prompts):
        p = {k: int(v[i]) for k, v in data.positions.items()}
        io, s = tiny_model.decode([int(data.answer[i])]), tiny_model.decode([int(data.wrong[i])])
        assert decode(i, p["IO"]) == io and decode(i, p["S1"]) == s and decode(i, p["S2"]) == s
        assert p["S1+1"] == p["S1"] + 1 and p["S2"] > max(p["IO"], p["S1"])
        assert decode(i, p["END"]) == " to" and prompt.endswith(" to")
        assert data.clean[i, 0] == tiny_model.bos_token_id
        assert prompt.count(io.strip()) == 1 and prompt.count(s.strip()) == 2


def test_half_the_prompts_are_abba(data):
    abba = sum(
        int(data.positions["IO"][i]) < int(data.positions["S1"][i]) for i in range(data.n_prompts)
    )
    assert abba == data.n_prompts // 2


def test_corrupted_prompts_change_only_the_names(tiny_model, data):
    for i in range(data.n_prompts):
        named = {int(data.positions[k][i]) for k in ("IO", "S1", "S2")}
        changed = set((data.clean[i] != data.corrupted[i]).nonzero().flatten().tolist())
        assert changed == named
        new_names = {int(data.corrupted[i, pos]) for pos in named}
        assert len(new_names) == 3  # three distinct names
        assert not new_names & {int(data.answer[i]), int(data.wrong[i])}


def test_s2_io_flip_puts_the_io_name_in_s2s_place(tiny_model, data):
    """MIB's IOI corruption: only S2 changes, to the IO name; the clean prompts are the
    default corruption's."""
    flipped = get_task("ioi", "s2_io_flip").make_data(tiny_model, 60, seed=3)
    assert flipped.clean_prompts == data.clean_prompts
    for i in range(data.n_prompts):
        changed = (data.clean[i] != flipped.corrupted[i]).nonzero().flatten().tolist()
        assert changed == [int(data.positions["S2"][i])]
        assert flipped.corrupted[i, changed[0]] == data.answer[i]


def test_generation_is_deterministic_under_a_seed(tiny_model, data):
    again = ioi.make_data(tiny_model, 60, seed=3)
    assert again.clean_prompts == data.clean_prompts and torch.equal(
        again.corrupted, data.corrupted
    )
    assert ioi.make_data(tiny_model, 60, seed=4).clean_prompts != data.clean_prompts


def test_metric_is_logit_difference_at_end(tiny_model, data):
    final = tiny_model.run(data.clean, positions=data.positions["END"])
    full = tiny_model.run(data.clean)
    i = 5
    end = int(data.positions["END"][i])
    expected = full[i, end, data.answer[i]] - full[i, end, data.wrong[i]]
    got = ioi.metric("logit-diff", final, data, final)
    assert got[i] == pytest.approx(float(expected), abs=1e-4)
    assert torch.allclose(
        ioi.metric("kl", final, data, final), torch.zeros(data.n_prompts), atol=1e-5
    )


def test_reference_has_the_26_heads_and_class_edges():
    graph = ioi.reference("", 12, 12, True)
    heads = [n for n, d in graph.nodes(data=True) if d["kind"] == "head" and d["in_circuit"]]
    assert len(heads) == 26 == sum(len(v) for v in CLASSES.values())
    assert (
        graph.nodes["a9.h9"]["role"] == "name mover"
        and graph.nodes["a0.h1"]["role"] == "duplicate token"
    )
    in_circuit = {k for *_, k, d in graph.edges(keys=True, data=True) if d["in_circuit"]}
    assert {
        "a7.h3->a9.h9<q>",
        "a2.h2->a5.h5<k>",
        "input->a9.h9<v>",
        "m3->a9.h9<k>",
        "a9.h9->logits",
        "a9.h9->m10",
        "a5.h5->a7.h3<v>",
        "input->a7.h3<q>",
    } <= in_circuit
    assert (
        not {"a7.h3->a9.h9<k>", "input->a7.h3<k>", "a5.h5->logits", "a2.h2->a5.h5<q>"} & in_circuit
    )


def test_reference_is_a_clear_error_on_a_small_model():
    with pytest.raises(CircuitxError, match="needs at least 12 layers x 12 heads"):
        ioi.reference("", 2, 4, True)


def test_tokenizer_that_splits_names_is_rejected(tiny_model, monkeypatch):
    monkeypatch.setattr(
        type(tiny_model), "encode", lambda self, text: [1, 2] if text.startswith(" ") else [1]
    )
    with pytest.raises(CircuitxError, match="single tokens"):
        ioi.make_data(tiny_model, 4, seed=0)


def test_oneill_bui_variant_swaps_one_backup_mover():
    default, variant = ioi.reference("", 12, 12, True), ioi.reference("oneill-bui", 12, 12, True)
    heads = lambda g: {n for n, d in g.nodes(data=True) if d["kind"] == "head" and d["in_circuit"]}
    assert heads(variant) - heads(default) == {"a11.h3"}
    assert heads(default) - heads(variant) == {"a9.h0"}
