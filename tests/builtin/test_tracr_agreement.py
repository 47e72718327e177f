"""A compiled tracr model against its program: the built-in ones compute theirs on every
input the tracr task draws, and a disagreement is said with an example."""

from __future__ import annotations

import pytest

from circuitx.builtin import load, model_dir
from circuitx.builtin.tracr import TRACR, read_program
from circuitx.builtin.tracr.agreement import Agreement, agreement_warnings, program_agreement

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")


@pytest.mark.parametrize("name", sorted(TRACR))
def test_every_builtin_tracr_model_computes_its_program(name):
    model = load(name)
    described = read_program(model_dir(name))
    agreement = program_agreement(model, described, TRACR[name].program())
    assert agreement.inputs >= 6  # every input where there are at most 200
    assert agreement.disagreeing == 0 and agreement.undefined == 0, agreement.example
    assert agreement_warnings(agreement) == []


def test_a_disagreement_is_said_with_its_first_example():
    agreement = Agreement(27, 21, 81, 0, "1 1 1: program [1 - -], model [1 3 3]")
    (line,) = agreement_warnings(agreement)
    assert line.startswith("the compiled model answers 21 of 27 inputs checked otherwise")
    assert "(first: 1 1 1: program [1 - -], model [1 3 3])" in line
