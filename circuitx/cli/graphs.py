"""``circuitx score``, ``compare``, ``draw`` and ``export``: what can be done with a
circuit graph file once it is written (ours, or EAP-IG's graph JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from circuitx.builtin import BUILTIN_MODELS
from circuitx.cli.common import cache_dir_option, fmt, json_option, note, print_json, stdout, warn
from circuitx.discovery import (
    evaluate,
    faithless_match,
    matching_reference,
    overlap_notes,
    reference_for_graph,
    scoring_notes,
)
from circuitx.drawing import DRAW_ENGINES, DRAW_FORMATS, check_engine, draw
from circuitx.errors import CircuitxError, listed
from circuitx.files import check_not_an_input, check_output_path, file_suffix
from circuitx.graph import (
    collapse_positions,
    component_graph,
    edges_off_path,
    position_groups,
    shape_of,
)
from circuitx.graph_files import (
    GRAPH_FORMATS,
    eap_ig_node_level_note,
    graph_format,
    graph_to_text,
    read_graph,
    save_graph,
)
from circuitx.reference import hand_written_circuit
from circuitx.scoring import OVERLAP_LEVELS, overlap
from circuitx.tasks import TASKS


@click.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option(
    "--reference",
    "reference_spec",
    default="auto",
    show_default=True,
    help="auto, planted, TASK[:VARIANT], a built-in model's name or a model directory for "
    "its ground truth (MODEL:WHICH for one of several), or a file: a graph (ours, or "
    "EAP-IG's JSON or .pt), a circuit of head classes or a list of edge names (JSON).",
)
@click.option(
    "--collapse-positions",
    "collapse",
    is_flag=True,
    help="Score a circuit over token positions as its components: each score summed over "
    "positions, the circuit selected again from the sums.",
)
@cache_dir_option
@json_option
def score(graph_path, reference_spec, collapse, cache_dir, as_json) -> None:
    """Score a saved circuit graph against a reference circuit (a component-level
    reference goes to a circuit's token positions by its task's roles). auto: the
    reference the graph was discovered with, where discover was given one; else the one
    discover's auto picks (a built-in model's ground truth, or the task's published
    circuit), even for a graph discovered with --reference none. ROC AUC is
    given twice: tied scores counting half, and as misses (pessimistic, the ACDC
    paper's)."""
    if reference_spec == "none":
        raise CircuitxError("score needs a reference to score against; --reference none names none")
    graph = read_graph(graph_path)
    if collapse:
        graph = collapsed(graph, graph_path)
    reference, label, why_not = reference_for_graph(graph, reference_spec, cache_dir)
    if reference is None:
        raise CircuitxError(why_not or "no reference to score against")
    if collapse:
        reference = collapse_positions(reference)
    reference = matching_reference(graph, reference)  # once: the notes find it placed
    metrics = evaluate(graph, reference)
    notes = scoring_notes(graph, reference)
    for line in notes:
        note(line)
    warnings = faithless_match(graph.graph.get("faithfulness"), metrics, recorded=True)
    for line in warnings:  # as discover warns
        warn(line)
    if as_json:
        summary = {"graph": graph_path, "reference": label, "metrics": metrics}
        said = [line.removeprefix("note: ") for line in notes]
        print_json({**summary, "notes": said, "warnings": warnings})
        return
    table = Table(title=f"{graph_path} vs {label}")
    for column in ("", "precision", "recall", "F1", "ROC AUC", "pessimistic"):
        table.add_column(column)
    measures = ("precision", "recall", "f1", "auc", "auc_pessimistic")
    for level in ("node", "edge"):
        table.add_row(level, *(fmt(metrics[f"{level}_{m}"]) for m in measures))
    table.caption = "ROC AUC: tied scores count half; pessimistic: as misses (the ACDC paper's)"
    stdout().print(table)


@click.command()
@click.argument("graph_a", type=click.Path(dir_okay=False))
@click.argument("graph_b", type=click.Path(dir_okay=False))
@json_option
def compare(graph_a, graph_b, as_json) -> None:
    """Overlap of two circuits: heads, nodes (heads and MLPs) and edges in each, shared,
    Jaccard, and the share of A's circuit found in B's and of B's in A's. B may be a
    hand-written reference (head classes or edge names), read for A's model."""
    for path in (graph_a, graph_b):  # a trial's `compare c.graphml planted-ioi`
        if not Path(path).exists() and (path in BUILTIN_MODELS or path in TASKS):
            raise CircuitxError(
                f"compare takes graph files, and {path} is a reference's name: `circuitx "
                f"score GRAPH --reference {path}` scores a circuit against it"
            )
    a = read_graph(graph_a)
    b = hand_written_circuit(graph_b, *shape_of(a), what="graph file")
    b = read_graph(graph_b) if b is None else b
    result = overlap(a, b)
    notes = overlap_notes(a, b)
    for line in notes:
        note(line)
    if as_json:  # the notes also in the JSON, as score's and discover's warnings are
        said = [line.removeprefix("note: ") for line in notes]
        print_json({"a": graph_a, "b": graph_b, **result, "notes": said})
        return
    table = Table(title=f"A = {graph_a}, B = {graph_b}")
    columns = ("a", "b", "shared", "jaccard", "a_in_b", "b_in_a")
    for column in ("", "in A", "in B", "shared", "Jaccard", "A in B", "B in A"):
        table.add_column(column)
    for level in OVERLAP_LEVELS:
        table.add_row(level, *(fmt(result[level][c]) for c in columns))
    stdout().print(table)


@click.command("draw")
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option(
    "--out", "out_path", required=True, type=click.Path(dir_okay=False),
    help="The picture: .svg, .png, .pdf, or .html (an interactive page).",
)  # fmt: skip
@click.option(
    "--reference",
    "reference_spec",
    default="none",
    show_default=True,
    help="Colour by agreement with a reference: none, auto, planted, TASK[:VARIANT], a "
    "planted model's name or a graph file.",
)
@click.option(
    "--all", "every", is_flag=True,
    help="Every edge with a non-zero score, not the circuit's only (for a node-level method, "
    "every such head and MLP and the edges among them; a page: its slider starts there).",
)  # fmt: skip
@click.option(
    "--top", type=click.IntRange(min=1),
    help="The N edges of largest non-zero |score| (for a node-level method, heads and MLPs "
    "and the edges among them), as discover's --top-k selects (a page: its slider starts "
    "at top N).",
)  # fmt: skip
@click.option(
    "--engine", type=click.Choice(DRAW_ENGINES), default="matplotlib", show_default=True,
    help="Who lays out a static picture: circuitx's layout by matplotlib, or Graphviz's dot "
    "(needs dot on the PATH).",
)  # fmt: skip
@cache_dir_option
def draw_command(graph_path, out_path, reference_spec, every, top, engine, cache_dir) -> None:
    """Draw a circuit graph (input at the bottom, a row per layer, logits at the top)."""
    if every and top is not None:  # before the graph is read (draw checks it too)
        raise CircuitxError("choose --all or --top, not both")
    check_output_path(out_path)
    check_engine(engine, out_path)
    graph = read_graph(graph_path)
    reference = None
    if reference_spec != "none":
        reference, _, why_not = reference_for_graph(graph, reference_spec, cache_dir)
        if reference is None and reference_spec == "auto":  # as discover: drawn without one
            note(f"note: {why_not or 'no reference'}; drawn without one")
        elif reference is None:
            raise CircuitxError(why_not or "no reference to draw against")
    drawn = draw(graph, out_path, matching_reference(graph, reference), top, every, engine)
    if drawn["note"]:
        note(f"note: {drawn['note']}")


def collapsed(graph: Any, path: str) -> Any:
    """``graph`` over components (--collapse-positions), with a note where it has no
    positions to collapse."""
    if position_groups(graph) is None:
        note(f"note: {path} has no token positions: --collapse-positions changes nothing")
    return collapse_positions(graph)


@click.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt_name", type=click.Choice(list(GRAPH_FORMATS)),
    help="The format written (default: told by --out's suffix).",
)  # fmt: skip
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), help="Output file (default: stdout)."
)
@click.option(
    "--collapse-positions",
    "collapse",
    is_flag=True,
    help="Export a circuit over token positions as its components (scores summed).",
)
def export(graph_path, fmt_name, out_path, collapse) -> None:
    """Convert a circuit graph to GraphML, JSON, DOT (the circuit only), EAP-IG's graph
    JSON or .pt (what MIB evaluates; --out FILE.pt) or auto-circuit's edge names (every
    edge's score by its Edge.name, and the circuit's edges). GRAPH may be any of those
    but DOT."""
    if out_path is not None:  # an empty one is refused, not read as stdout
        check_output_path(out_path)
        check_not_an_input(out_path, {"GRAPH": graph_path})
        fmt_name = graph_format(out_path, fmt_name, "--format")
        if file_suffix(out_path) in DRAW_FORMATS:  # a helper's trial: DOT text in c.svg
            raise CircuitxError(
                f"{out_path} names a picture, and export writes DOT text: draw the "
                f"circuit with `circuitx draw {graph_path} --out {out_path}` (--engine dot "
                "lays it out with Graphviz), or export to a .dot file"
            )
    if fmt_name is None:
        raise CircuitxError(
            f"give --format ({', '.join(GRAPH_FORMATS)}), or --out FILE with a suffix that says it"
        )
    graph = read_graph(graph_path)
    if collapse:  # what is written, and what the note below counts
        graph = collapsed(graph, graph_path)
    if fmt_name in ("eap-ig", "auto-circuit") and component_graph(graph) is not graph:
        graph = component_graph(graph)
        note(
            f"note: {fmt_name}'s graphs have no transcoder features: the heads and MLPs are written"
        )
    if out_path:
        save_graph(graph, out_path, fmt_name)
    else:
        click.echo(graph_to_text(graph, fmt_name), nl=False)
    if fmt_name == "eap-ig" and (line := eap_ig_node_level_note(graph)):
        note(line)
    off_path = edges_off_path(graph) if fmt_name == "eap-ig" else []
    if off_path:
        kept = sum(1 for *_, in_circuit in graph.edges(data="in_circuit") if in_circuit)
        note(
            f"note: {len(off_path)} of the circuit's {kept} edges "
            f"{'lies' if len(off_path) == 1 else 'lie'} on no path from input to "
            f"logits ({listed(off_path, 3)}); EAP-IG's evaluate_graph prunes them first, so "
            f"MIB counts {kept - len(off_path)}"
        )
