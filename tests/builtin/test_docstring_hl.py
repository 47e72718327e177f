"""The docstring high-level model: the parameter after the last documented one, moved by
the source's documented name or previous parameters as the def's order says, and pairs
that share their names."""

from __future__ import annotations

import pytest
import torch

from circuitx.builtin.trained.docstring_hl import DOC_NAME, MOVER, PREV_PARAM, docstring_target
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
    base_b = [b for _, b in _documented(target, base)]
    source_b = [b for _, b in _documented(target, source)]
    doc = hl.outputs(base, source, DOC_NAME)[:, 0].tolist()
    prev = hl.outputs(base, source, PREV_PARAM)[:, 0].tolist()
    for ours, theirs, our_b, their_b, d, p in zip(
        base_defs, source_defs, base_b, source_b, doc, prev
    ):
        assert sorted(ours) == sorted(theirs)  # one group: the same names, the same shape
        # doc_name from the source: the base's parameter after the source's B
        at = ours.index(their_b) + 1
        assert _name(hl, target, d) == (ours[at] if at < len(ours) else None)
        # prev_param from the source: the base's parameter where the source has B before it
        after = theirs.index(our_b) + 1
        assert _name(hl, target, p) == (ours[after] if after < len(ours) else None)
    assert torch.equal(hl.outputs(base, source, MOVER), hl.outputs(source))
    changed = torch.tensor(doc) != hl.outputs(base)[:, 0]
    assert 0.3 < changed.float().mean() < 1.0  # the interventions matter, and not always


def test_the_ground_truth_is_the_high_level_graph_on_the_aligned_heads(target, hl):
    graph = target.circuits["docstring"]
    nodes = {n for n, d in graph.nodes(data=True) if d["in_circuit"] and d["kind"] != "input"}
    assert hl.aligned_nodes() <= nodes
    edges = {(s, r) for s, r, d in graph.edges(data=True) if d["in_circuit"]}
    (prev,), (doc,), (mover,) = (hl.alignment[v] for v in (PREV_PARAM, DOC_NAME, MOVER))
    assert {(prev, mover), (doc, mover), (mover, "logits")} <= edges
    assert (prev, doc) not in edges
