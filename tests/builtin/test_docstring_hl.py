"""The docstring high-level model: the parameter after the last documented one, moved by
the source's previous names as the def's order says, and pairs that share their names."""

from __future__ import annotations

import pytest
import torch

from circuitx.builtin.trained.docstring_hl import MOVER, PREV_NAME, docstring_target
from circuitx.builtin.trained.hl import UNDEFINED


@pytest.fixture(scope="module")
def target():
    return docstring_target("trained-docstring")


@pytest.fixture(scope="module")
def hl(target):
    return target.hl


def _defs(target, rows: torch.Tensor) -> list[list[str]]:
    """Each row's def parameters, in order, read back from its tokens."""
    words = [target.tokenizer.convert_ids_to_tokens(r) for r in target.hl.inputs[rows].tolist()]
    return [w[w.index("self") + 2 : w.index(")") : 2] for w in words]


def _documented(target, rows: torch.Tensor) -> list[list[str]]:
    """Each row's documented parameters, in order (A and B)."""
    words = [target.tokenizer.convert_ids_to_tokens(r) for r in target.hl.inputs[rows].tolist()]
    return [
        [w[i + 1] for i, t in enumerate(w[:-2]) if t == "param" and w[i + 2] == ":"] for w in words
    ]


def _name(hl, target, cls: int) -> str | None:
    return (
        None if cls == UNDEFINED else target.tokenizer.convert_ids_to_tokens(hl.readout.tokens[cls])
    )


def test_every_prompt_answers_the_parameter_after_the_last_documented_one(target, hl):
    rows = torch.arange(len(hl.inputs))
    defs, documented = _defs(target, rows), _documented(target, rows)
    for params, (a, b), cls in zip(defs, documented, hl.outputs(rows)[:, 0].tolist()):
        assert params.index(b) == params.index(a) + 1
        assert _name(hl, target, cls) == params[params.index(b) + 1]  # C, after A and B


def test_within_a_group_positions_align_and_c_moves(target, hl):
    rows = torch.arange(len(hl.inputs))
    defs, documented = _defs(target, rows), _documented(target, rows)
    assert {len(params) for params in defs} == {4, 5, 6, 7, 8}
    for group in range(int(hl.groups.max()) + 1):
        members = (hl.groups == group).nonzero().flatten().tolist()
        assert len({int(hl.ends[i]) for i in members}) == 1  # one shape: positions align
        c_at = {defs[i].index(documented[i][1]) + 1 for i in members}
        assert len(c_at) > 1  # C is not at one position of the group


def test_interventions_follow_the_bases_def(target, hl):
    n = len(hl.inputs)
    pairs = hl.pairs()
    base, source = pairs // n, pairs % n
    assert (hl.groups[base] == hl.groups[source]).all()
    base, source = base[::7], source[::7]  # a spread of pairs, for time
    base_defs, source_defs = _defs(target, base), _defs(target, source)
    source_b = [b for _, b in _documented(target, source)]
    prev = hl.outputs(base, source, PREV_NAME)[:, 0].tolist()
    for ours, theirs, their_b, p in zip(base_defs, source_defs, source_b, prev):
        assert sorted(ours) == sorted(theirs)  # one group: the same names, the same shape
        # the source's previous names, its B at the end: the base's parameter where the
        # source has its C (the one after its B)
        assert _name(hl, target, p) == ours[theirs.index(their_b) + 1]
    assert torch.equal(hl.outputs(base, source, MOVER), hl.outputs(source))
    changed = torch.tensor(prev) != hl.outputs(base)[:, 0]
    assert 0.3 < changed.float().mean() < 1.0  # the intervention matters, and not always
    with pytest.raises(ValueError, match="no variable"):
        hl.outputs(base, source, "doc_name")


def test_the_previous_name_at_the_end_is_the_last_documented_one(target, hl):
    rows = torch.arange(len(hl.inputs))
    at_end = hl.prev_name[rows, hl.ends].tolist()
    documented = [b for _, b in _documented(target, rows)]
    assert target.tokenizer.convert_ids_to_tokens(at_end) == documented


def test_the_ground_truth_is_the_high_level_graph_on_the_aligned_heads(target, hl):
    graph = target.circuits["docstring"]
    nodes = {n for n, d in graph.nodes(data=True) if d["in_circuit"] and d["kind"] != "input"}
    assert nodes - {"logits"} == hl.aligned_nodes()
    edges = {(s, r) for s, r, d in graph.edges(data=True) if d["in_circuit"]}
    (prev,), (mover,) = (hl.alignment[v] for v in (PREV_NAME, MOVER))
    assert edges == {("input", prev), ("input", mover), (prev, mover), (mover, "logits")}
