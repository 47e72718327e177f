"""``circuitx build-tracr``: compile a RASP program with tracr into a model directory."""

from __future__ import annotations

from pathlib import Path

import click

from circuitx.builtin import build_once, ground_truth
from circuitx.builtin.tracr import TASK, check_inputs, compile_program, programs, save_compiled
from circuitx.builtin.tracr.agreement import agreement_warnings, program_agreement
from circuitx.cli.common import fmt, json_option, print_json, warn
from circuitx.errors import CircuitxError
from circuitx.files import check_new_directory
from circuitx.graph import component_nodes, edges_by_name
from circuitx.models import load_model, quiet_loaders
from circuitx.tasks.tracr import INPUTS, read_program


def parse_vocab(text: str) -> list[int | str]:
    """Vocabulary values from ``1,2,3`` or ``a b c``: whole numbers become ints."""
    words = text.replace(",", " ").split()
    if not words:
        raise CircuitxError("--vocab is empty; give values like 1,2,3 or a,b,c")
    values = [int(w) if w.lstrip("-").isdigit() else w for w in words]
    if len(set(map(str, values))) != len(values):
        raise CircuitxError(f"--vocab repeats a value: {text!r}")
    return values


MAX_SEQ_LEN = 1024


@click.command("build-tracr")
@click.argument("program")
@click.option(
    "--vocab",
    required=True,
    help="Input values, e.g. 1,2,3 or a,b,c (commas or spaces separate them).",
)
@click.option(
    "--max-seq-len",
    required=True,
    type=click.IntRange(1, MAX_SEQ_LEN),
    help="Longest input (tracr's weights grow with it).",
)
@click.option("--out", "out", required=True, type=click.Path(), help="New model directory.")
@click.option(
    "--inputs",
    type=click.Choice(INPUTS),
    default="sequences",
    show_default=True,
    help="What the tracr task feeds it: every sequence over the vocabulary, or every "
    "permutation of it (programs that need distinct tokens, like make_sort_unique).",
)
@click.option(
    "--length",
    type=click.IntRange(min=1),
    help="Input tokens per prompt [default: the vocabulary's size, at most --max-seq-len].",
)
@json_option
def build_tracr(program, vocab, max_seq_len, out, inputs, length, as_json) -> None:
    """Compile PROGRAM with tracr and save it as a model directory that loads with
    --model DIR, with its ground-truth circuit (for --task tracr --reference auto).

    PROGRAM is a function of tracr.compiler.lib (e.g. make_hist; an SOp argument gets
    tokens, max_seq_len the maximum length) or module:function (or file.py:function)
    returning a RASP program.
    """
    values = parse_vocab(vocab)
    check_inputs(len(values), max_seq_len, inputs, length)
    target = check_new_directory(out)
    rasp_program = programs.user_program(program, max_seq_len)
    name = program.rpartition(":")[2]
    checked = []

    def build_and_check(staging: Path) -> None:
        """The model, with its agreement with the program measured before it moves into
        place: a run stopped before that leaves no directory."""
        compiled = compile_program(rasp_program, set(values), max_seq_len)
        save_compiled(staging, compiled, rasp_program, name, inputs, length)
        model = load_model(str(staging.absolute()))  # "sub/.m...staging" reads as a hub id
        described = read_program(staging)
        checked.append(program_agreement(model, described, rasp_program, compiled=compiled))

    try:
        with quiet_loaders():
            build_once(target, build_and_check, option="--out")
    except CircuitxError as error:
        if ":" in program or not str(error).startswith("tracr cannot compile"):
            raise
        raise CircuitxError(  # a lib function built on tokens where it wants another SOp
            f"{error} (build-tracr gave {program} the tokens for each SOp argument; a "
            "program on another SOp is a module:function of your own, see docs/tracr.md)"
        ) from None
    described, (agreement,) = read_program(target), checked
    agreed = agreement.inputs - agreement.disagreeing
    truth = ground_truth(str(target), TASK)
    edges = [e for e, data in edges_by_name(truth).items() if data.get("in_circuit")]
    nodes = [n for n in component_nodes(truth) if truth.nodes[n].get("in_circuit")]
    summary = {
        "directory": str(target),
        "program": name,
        "output": "numerical" if described.numerical else "categorical",
        "output_values": described.output_values,
        "inputs": f"{described.inputs} of {described.length} tokens",
        "circuit_nodes": nodes,
        "circuit_edges": len(edges),
        "program_agreement": {"agreeing": agreed, "inputs": agreement.inputs},
        # of the inputs the model answers otherwise, those tracr's own model does too
        "tracr_disagreeing": agreement.tracr_disagreeing,
        "undefined_positions": {"undefined": agreement.undefined, "positions": agreement.positions},
        "warnings": agreement_warnings(agreement),
    }
    for line in summary["warnings"]:
        warn(line)
    if as_json:
        print_json(summary)
        return
    for key, value in summary.items():
        if key == "warnings":  # said on stderr
            continue
        if isinstance(value, list):  # a numerical program lists no output values
            shown = ", ".join(map(str, value)) or "-"
        elif isinstance(value, dict):  # a count of a total: "27 of 27 inputs"
            (_, count), (total, whole) = value.items()
            shown = f"{count} of {whole}" + (" inputs" if total == "inputs" else "")
        else:
            shown = fmt(value)
        click.echo(f"{key}: {shown}")
