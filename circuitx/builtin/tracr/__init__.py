"""tracr-compiled models: a RASP program compiled by tracr, converted to GPT-2
(:mod:`.convert`) and saved as a model directory with its ground truth (:mod:`.circuit`)
and the program's description (``tracr.json``), which the ``tracr`` task reads.

Built-ins: ``tracr-reverse`` and ``tracr-proportion`` as the ACDC paper builds them, plus
``tracr-sort`` and ``tracr-hist``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from circuitx.builtin.ground_truth import write_ground_truth
from circuitx.builtin.hf import token_list_tokenizer
from circuitx.builtin.tracr import programs
from circuitx.builtin.tracr.circuit import ACDC_EDGES, acdc_circuit, weight_circuit
from circuitx.builtin.tracr.convert import Converted, convert
from circuitx.errors import CircuitxError
from circuitx.tasks.tracr import INPUTS, TracrProgram, TracrTask, read_program

TASK = TracrTask.name
BOS = "BOS"


@dataclass(frozen=True)
class TracrModel:
    """A built-in tracr model: a program, its vocabulary and maximum length."""

    name: str
    description: str
    program: Callable[[], Any]
    vocab: tuple[Any, ...]
    max_seq_len: int
    inputs: str  # how the task draws inputs: permutations of the vocab, or any sequences
    length: int | None = None  # input tokens (default: the vocabulary's size, at most max)

    def save(self, directory: Path) -> None:
        vocab = set(self.vocab)
        build(
            directory, self.program(), vocab, self.max_seq_len, self.name, self.inputs, self.length
        )


TRACR: dict[str, TracrModel] = {
    model.name: model
    for model in (
        TracrModel(
            "tracr-reverse",
            "tracr: the input reversed, as ACDC builds it (vocab 1 2 3, up to 5 tokens)",
            programs.reverse,
            (1, 2, 3),
            5,
            "permutations",
        ),
        TracrModel(
            "tracr-proportion",
            "tracr: running fraction of x tokens, as ACDC builds it (vocab w x y z, up to 5)",
            programs.proportion,
            ("w", "x", "y", "z"),
            5,
            "sequences",
        ),
        TracrModel(
            "tracr-sort",
            "tracr: the tokens sorted, make_sort_unique (3 distinct of 1..5, up to 5 tokens)",
            programs.sort,
            (1, 2, 3, 4, 5),
            5,
            "permutations",
            3,  # every permutation of the whole vocabulary sorts to the same output
        ),
        TracrModel(
            "tracr-hist",
            "tracr: how often each token occurs, make_hist (vocab a b c, up to 5 tokens)",
            programs.hist,
            ("a", "b", "c"),
            5,
            "sequences",
        ),
    )
}


def compile_program(program: Any, vocab: set[Any], max_seq_len: int) -> Any:
    """tracr's compiled model of ``program`` (bidirectional attention, BOS ``BOS``)."""
    compiling, _, _ = programs.tracr_modules()
    if max_seq_len < 1:
        raise CircuitxError(f"max_seq_len must be at least 1, not {max_seq_len}")
    try:
        return compiling.compile_rasp_to_model(
            program, vocab=vocab, max_seq_len=max_seq_len, compiler_bos=BOS
        )
    except Exception as error:  # tracr raises many types for programs it cannot compile
        said = " ".join(str(error).split())  # tracr lists its reasons a line each
        raise CircuitxError(
            f"tracr cannot compile the program: {type(error).__name__}: {said}"
        ) from None


def check_inputs(n_vocab: int, max_seq_len: int, inputs: str, length: int | None) -> None:
    """Fail in one line unless the task can draw ``inputs`` of ``length`` tokens."""
    if inputs not in INPUTS:
        raise CircuitxError(f"unknown inputs {inputs!r}; choose from {', '.join(INPUTS)}")
    if length is not None and not 1 <= length <= max_seq_len:
        raise CircuitxError(f"--length {length} is more than --max-seq-len {max_seq_len}")
    if inputs == "permutations" and (length or min(n_vocab, max_seq_len)) > n_vocab:
        raise CircuitxError(f"--inputs permutations needs --length at most {n_vocab}")


def build(
    directory: Path,
    program: Any,
    vocab: set[Any],
    max_seq_len: int,
    name: str,
    inputs: str,
    length: int | None = None,
) -> None:
    """Compile ``program`` and save it to ``directory`` (see :func:`save_compiled`)."""
    check_inputs(len(vocab), max_seq_len, inputs, length)
    assembled = compile_program(program, vocab, max_seq_len)
    save_compiled(directory, assembled, program, name, inputs, length)


def save_compiled(
    directory: Path, assembled: Any, program: Any, name: str, inputs: str, length: int | None = None
) -> Converted:
    """Save tracr's compiled ``program`` to ``directory`` as a GPT-2 model directory with
    its tokenizer, ``tracr.json`` and ``circuit.json`` (see :func:`ground_truths`)."""
    converted = convert(assembled, program, name, inputs, length)
    converted.model.save_pretrained(directory)
    tokenizer = token_list_tokenizer(converted.tokens, converted.program.bos, converted.program.pad)
    tokenizer.save_pretrained(directory)
    write_ground_truth(directory, ground_truths(assembled, converted.output_dims, name))
    converted.program.write(directory)
    return converted


def truth_names(name: str) -> tuple[str, ...]:
    """The ground truths :func:`ground_truths` gives built-in ``name``, known before it
    compiles."""
    return (TASK, f"{TASK}:weights", *((f"{TASK}:acdc",) if name in ACDC_EDGES else ()))


def ground_truths(assembled: Any, output_dims: list[int], name: str) -> dict[str, nx.MultiDiGraph]:
    """A compiled model's circuits by task: the weight-derived circuit (``tracr:weights``)
    and the ground truth (task ``tracr``), which is ACDC's edge list for the built-ins the
    ACDC paper scored (also ``tracr:acdc``) and the weight-derived circuit otherwise."""
    weights = weight_circuit(assembled, output_dims, name)
    circuits = {TASK: weights, f"{TASK}:weights": weights}
    if name in ACDC_EDGES:
        acdc = acdc_circuit(name, weights)
        circuits.update({TASK: acdc, f"{TASK}:acdc": acdc})
    return circuits


__all__ = [
    "INPUTS",
    "TASK",
    "TRACR",
    "TracrProgram",
    "TracrModel",
    "build",
    "check_inputs",
    "compile_program",
    "ground_truths",
    "read_program",
    "save_compiled",
    "truth_names",
]
