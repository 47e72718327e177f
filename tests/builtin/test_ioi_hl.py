"""The simplified IOI high-level model: the indirect object on IOI prompts, the subject
once the duplicate or the inhibition is taken from an ABC source, and pairs that keep
every position's meaning."""

from __future__ import annotations

import pytest
import torch

from circuitx.builtin.trained.hl import UNDEFINED
from circuitx.builtin.trained.ioi_hl import DUPLICATE, NAME_MOVER, S_INHIBITION, ioi_target


@pytest.fixture(scope="module")
def target():
    return ioi_target("trained-ioi")


@pytest.fixture(scope="module")
def hl(target):
    return target.hl


def _names(hl, rows: torch.Tensor) -> list[list[int]]:
    """Each row's name tokens, in order."""
    names = set(hl.readout.tokens)
    return [[t for t in row.tolist() if t in names] for row in hl.inputs[rows]]


def test_ioi_prompts_give_the_indirect_object_and_abc_a_tie(hl):
    rows = torch.arange(len(hl.inputs))
    classes = hl.outputs(rows)[:, 0].tolist()
    for names, ioi, predicted in zip(_names(hl, rows), hl.is_ioi.tolist(), classes):
        if ioi:  # S appears twice, the indirect object once
            (io,) = [n for n in names if names.count(n) == 1]
            assert hl.readout.tokens[predicted] == io
        else:  # three names, once each
            assert len(set(names)) == len(names) == 3 and predicted == UNDEFINED


def test_patching_from_an_abc_source_removes_the_inhibition(hl):
    n = len(hl.inputs)
    pairs = hl.pairs()
    base, source = pairs // n, pairs % n
    assert hl.is_ioi[base].all() and (hl.groups[base] == hl.groups[source]).all()
    assert (hl.ends[base] == hl.ends[source]).all()  # the same template: positions align
    abc = ~hl.is_ioi[source]
    subject = [
        hl.readout.tokens.index(next(t for t in names if names.count(t) == 2))
        for names in _names(hl, base[abc])
    ]
    for variable in (DUPLICATE, S_INHIBITION):
        assert hl.outputs(base[abc], source[abc], variable)[:, 0].tolist() == subject
    # an IOI source's duplicate sits where the base's does: nothing changes
    same = hl.outputs(base[~abc], source[~abc], DUPLICATE)
    assert torch.equal(same, hl.outputs(base[~abc]))
    # the name mover's value is the source's answer
    assert torch.equal(hl.outputs(base, source, NAME_MOVER), hl.outputs(source))


def test_the_ground_truth_is_the_high_level_graph_on_the_aligned_heads(target, hl):
    graph = target.circuits["ioi"]
    nodes = {n for n, d in graph.nodes(data=True) if d["in_circuit"] and d["kind"] != "input"}
    assert hl.aligned_nodes() <= nodes
    edges = {(s, r) for s, r, d in graph.edges(data=True) if d["in_circuit"]}
    (dup,), (sinh,), (mover,) = (hl.alignment[v] for v in (DUPLICATE, S_INHIBITION, NAME_MOVER))
    assert {(dup, sinh), (sinh, mover), (mover, "logits")} <= edges
    assert (dup, mover) not in edges  # the name mover reads the inhibition, not duplicates
