"""A compiled tracr model against its program: the built-in ones compute theirs on every
input the tracr task draws, and a disagreement is said with an example."""

from __future__ import annotations

import pytest

from circuitx.builtin import load, model_dir
from circuitx.builtin.tracr import TRACR, compile_program, read_program, save_compiled
from circuitx.builtin.tracr.agreement import Agreement, agreement_warnings, program_agreement
from circuitx.models import load_model

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")


@pytest.mark.parametrize("name", sorted(TRACR))
def test_every_builtin_tracr_model_computes_its_program(name):
    model = load(name)
    described = read_program(model_dir(name))
    agreement = program_agreement(model, described, TRACR[name].program())
    assert agreement.inputs >= 6  # every input where there are at most 200
    assert agreement.disagreeing == 0 and agreement.undefined == 0, agreement.example
    assert agreement_warnings(agreement) == []


def test_a_disagreement_is_said_with_its_first_example_and_whose_it_is():
    """A helper's trial: the cause was said to be inputs outside the program's domain,
    where tracr's own model was as wrong (its numerical MLPs at --max-seq-len 100)."""
    agreement = Agreement(27, 21, 81, 0, "1 1 1: program [1 - -], model [1 3 3]", 21)
    (line,) = agreement_warnings(agreement)
    assert line.startswith("the compiled model answers 21 of 27 inputs checked otherwise")
    assert "(first: 1 1 1: program [1 - -], model [1 3 3])" in line
    assert "tracr's own compiled model answers them so too" in line
    (mixed,) = agreement_warnings(Agreement(27, 15, 81, 0, "1 1 2: ...", 13))
    assert "answers 13 of them so too" in mixed and "the other 2 the conversion" in mixed
    (ours,) = agreement_warnings(Agreement(27, 2, 81, 0, "1 1 2: ...", 0))
    assert "the conversion to GPT-2 differs there" in ours


def test_tracrs_own_model_is_asked_where_the_conversion_disagrees(tmp_path):
    """A numerical map of make_frac_prevs (a trial's program): tracr's own MLP gives 0.25
    where the program gives 0.444, and so does the converted model."""
    from tracr.compiler import lib
    from tracr.rasp import rasp

    program = rasp.numerical(rasp.Map(lambda x: x * x, lib.make_frac_prevs(rasp.tokens == 1)))
    compiled = compile_program(program, {1, 2, 3}, 5)
    save_compiled(tmp_path, compiled, program, "squared", "sequences", 3)
    described = read_program(tmp_path)
    agreement = program_agreement(load_model(str(tmp_path)), described, program, compiled=compiled)
    assert agreement.disagreeing == agreement.tracr_disagreeing == 6
    assert (
        program_agreement(load_model(str(tmp_path)), described, program).tracr_disagreeing is None
    )


def test_a_program_with_one_output_is_warned_of():
    """A trial's make_length built without a word, and discover then found no effect
    under its default (corrupted) ablation."""
    (said,) = agreement_warnings(Agreement(27, 0, 81, 0, None, None, distinct_outputs=1))
    assert said.startswith("the program gives the same output on all 27 inputs checked")
    assert "--ablation zero" in said
    assert agreement_warnings(Agreement(27, 0, 81, 0, None, None, distinct_outputs=3)) == []
