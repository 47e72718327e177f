"""The greater-than high-level model: the output is "above YY", and taking any variable
from a source moves it to the source's YY."""

from __future__ import annotations

import pytest
import torch

from circuitx.builtin.trained.greater_than_hl import (
    COMPARATOR,
    YEAR,
    YEAR_HEAD,
    greater_than_target,
)
from circuitx.builtin.trained.hl import ABOVE


@pytest.fixture(scope="module")
def target():
    return greater_than_target("trained-greater-than")


def _yy(target, rows: torch.Tensor) -> list[int]:
    """Each row's YY, read back from its tokens: the two digits after the first century."""
    tokens = [target.tokenizer.convert_ids_to_tokens(r) for r in target.hl.inputs[rows].tolist()]
    return [int(t[t.index("year") + 2]) for t in tokens]


def test_every_prompt_wants_the_years_above_its_yy(target):
    hl = target.hl
    rows = torch.arange(len(hl.inputs))
    assert hl.readout.kind == ABOVE
    assert hl.outputs(rows)[:, 0].tolist() == _yy(target, rows)
    digits = target.tokenizer.convert_ids_to_tokens(list(hl.readout.tokens))
    assert digits == [f"{i:02d}" for i in range(100)]  # class k is the year k
    ends = hl.readout.positions[:, 0]
    assert (hl.inputs[rows, ends] == hl.inputs[rows, ends - 5]).all()  # the end is XX again
    assert {3, 97} <= set(_yy(target, rows)) <= set(range(3, 98))


def test_any_variable_from_a_source_gives_the_sources_yy(target):
    hl = target.hl
    base, source = torch.arange(0, 64), torch.arange(64, 128)
    for variable in (YEAR, YEAR_HEAD, COMPARATOR):
        assert hl.outputs(base, source, variable)[:, 0].tolist() == _yy(target, source)
    with pytest.raises(ValueError, match="no variable"):
        hl.outputs(base, source, "century")


def test_the_ground_truth_is_the_chain_on_the_aligned_nodes(target):
    graph = target.circuits["greater-than"]
    edges = {(s, r) for s, r, d in graph.edges(data=True) if d["in_circuit"]}
    (year,), (head,), (comparator,) = (
        target.hl.alignment[v] for v in (YEAR, YEAR_HEAD, COMPARATOR)
    )
    assert {(year, head), (head, comparator), (comparator, "logits")} <= edges
    assert (year, comparator) not in edges and (head, "logits") not in edges
