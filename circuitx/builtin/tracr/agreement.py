"""Whether a compiled tracr model computes its program: the model's outputs and the RASP
evaluator's compared on the inputs the tracr task draws."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from circuitx.builtin.tracr import programs
from circuitx.errors import CircuitxError
from circuitx.models import Model
from circuitx.tasks.tracr import TracrProgram, read_outputs, sampled_inputs

AGREEMENT_INPUTS = 200  # inputs compared (all of them where there are fewer)
NUMERICAL_TOLERANCE = 1e-3  # a numerical output this close to the program's value agrees


@dataclass(frozen=True)
class Agreement:
    inputs: int  # inputs compared
    disagreeing: int  # inputs where a position the program defines is answered otherwise
    positions: int  # positions read (every one after BOS)
    undefined: int  # of them, where the program gives no value (its output there is None)
    example: str | None  # the first disagreeing input, with both outputs
    # of the disagreeing inputs, those tracr's own compiled model answers otherwise than
    # the program too (None: it was not run)
    tracr_disagreeing: int | None = None
    # the program's different outputs over the inputs compared (1: every input alike;
    # None: not counted)
    distinct_outputs: int | None = None


def program_agreement(
    model: Model, described: TracrProgram, rasp_program: Any, seed: int = 0, compiled: Any = None
) -> Agreement:
    """Compare ``model`` (a compiled ``rasp_program`` described by ``described``) with the
    program itself on up to :data:`AGREEMENT_INPUTS` of the task's inputs; where they
    disagree, tracr's own ``compiled`` model (its ``AssembledTransformerModel``) too."""
    _, _, rasp = programs.tracr_modules()
    inputs = sampled_inputs(described, AGREEMENT_INPUTS, random.Random(seed))
    read = read_outputs(model, described, inputs)[3].cpu()  # [n, length, k]
    if described.numerical:
        answers: list[list[Any]] = read[..., 0].tolist()
    else:
        answers = [[described.output_values[i] for i in row] for row in read.argmax(-1).tolist()]
    disagreeing, undefined, example, tracr_disagreeing = 0, 0, None, 0
    outputs = set()
    for row, answer in zip(inputs, answers):
        try:
            expected = rasp.evaluate(rasp_program, list(row))
        except Exception as error:  # tracr compiles some programs its evaluator cannot run
            said = " ".join(str(error).split())
            raise CircuitxError(
                f"tracr's RASP evaluator cannot run the program on {' '.join(map(str, row))} "
                f"({type(error).__name__}: {said}), so the model cannot be checked against it"
            ) from None
        undefined += sum(value is None for value in expected)
        outputs.add(tuple(expected))
        if not _all_agree(expected, answer, described.numerical):
            disagreeing += 1
            if example is None:
                example = (
                    f"{' '.join(map(str, row))}: program {_shown(expected)}, model {_shown(answer)}"
                )
            if compiled is not None:
                tracrs = compiled.apply([described.bos, *row]).decoded[1:]
                tracr_disagreeing += not _all_agree(expected, tracrs, described.numerical)
    return Agreement(
        len(inputs),
        disagreeing,
        len(inputs) * described.length,
        undefined,
        example,
        None if compiled is None else tracr_disagreeing,
        len(outputs),
    )


def _all_agree(expected: list[Any], answer: list[Any], numerical: bool) -> bool:
    return all(_agrees(want, got, numerical) for want, got in zip(expected, answer))


def _agrees(want: Any, got: Any, numerical: bool) -> bool:
    if want is None:  # undefined by the program: counted apart, not a disagreement
        return True
    if numerical:
        return abs(float(want) - float(got)) <= NUMERICAL_TOLERANCE
    return want == got or str(want) == str(got)  # the evaluator may give 1.0 for 1


def _shown(values: list[Any]) -> str:
    return (
        "["
        + " ".join(
            "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v) for v in values
        )
        + "]"
    )


def agreement_warnings(agreement: Agreement) -> list[str]:
    """What a user should hear of an :class:`Agreement`: inputs the model answers
    otherwise than the program, positions the program leaves undefined, and a program
    whose output is the same on every input."""
    said = []
    if agreement.distinct_outputs == 1 and agreement.inputs > 1:  # a trial's make_length
        said.append(
            f"the program gives the same output on all {agreement.inputs} inputs checked: "
            "a corrupted prompt cannot change the answer, so discovery on this model needs "
            "--ablation zero"
        )
    if agreement.disagreeing:
        said.append(
            f"the compiled model answers {agreement.disagreeing} of {agreement.inputs} inputs "
            f"checked otherwise than the program (first: {agreement.example}): "
            f"{_why(agreement)}; discovery explains the model's outputs there, not the "
            "program's"
        )
    if agreement.undefined:
        said.append(
            f"the program gives no value at {agreement.undefined} of the {agreement.positions} "
            "positions the tracr task reads: the model's output there is whatever its weights give"
        )
    return said


def _why(agreement: Agreement) -> str:
    """Why a compiled model disagrees with its program, by whether tracr's own does."""
    tracrs, disagreeing = agreement.tracr_disagreeing, agreement.disagreeing
    if tracrs is None:
        return "tracr's own compiled model was not run on them"
    compiles = (
        "tracr compiles some programs only approximately: its numerical MLPs lose precision "
        "as --max-seq-len grows, and a categorical aggregate must select one key"
    )
    if tracrs == disagreeing:
        return f"tracr's own compiled model answers them so too ({compiles})"
    if tracrs == 0:
        return (
            "tracr's own compiled model answers them as the program does, so the conversion "
            "to GPT-2 differs there (please report it)"
        )
    return (
        f"tracr's own compiled model answers {tracrs} of them so too ({compiles}); the other "
        f"{disagreeing - tracrs} the conversion to GPT-2 adds"
    )
