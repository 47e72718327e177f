"""``circuitx discover``, and the commands that read its graphs: score, compare, export.

The method flags of ``discover`` (``--tau``, ``--ig-steps``, ...) and its ``--method``
choices are generated from the method registry each time the command runs, so a method
registered at run time gets its flags with no edit here."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.table import Table

from circuitx import builtin
from circuitx.cli.common import (
    backup_rounds_option,
    cache_dir_option,
    device_options,
    fmt,
    json_option,
    max_memory_option,
    note,
    positions_option,
    print_json,
    seed_option,
    stdout,
    threads_option,
)
from circuitx.discovery import (
    FAITHFULNESS_PROMPTS,
    DiscoveryRequest,
    discover,
    evaluate,
    matching_reference,
    overlap_notes,
    reference_for_graph,
    reference_for_model,
    report,
    run_warnings,
    scoring_notes,
    top_k_notes,
)
from circuitx.drawing import DRAW_ENGINES, check_engine, draw, draw_format
from circuitx.errors import CircuitxError, listed
from circuitx.files import atomic_open, check_not_an_input, check_output_path
from circuitx.graph import collapse_positions, edges_off_path, position_groups
from circuitx.graph_files import (
    GRAPH_FORMATS,
    graph_format,
    graph_to_text,
    read_graph,
    suffix_format,
    write_graph,
)
from circuitx.methods import METHODS, Option, all_options
from circuitx.patching import ABLATIONS
from circuitx.scoring import OVERLAP_LEVELS, overlap
from circuitx.tasks import FORMATS, TASKS


def option_type(option: Option) -> click.ParamType:
    """The click type of a method option: its range or choices, as the command line shows."""
    if option.choices is not None:
        return click.Choice(list(option.choices))
    if option.type == "int":
        if option.low is None and option.high is None:
            return click.INT
        return click.IntRange(
            min=None if option.low is None else int(option.low),
            max=None if option.high is None else int(option.high),
            min_open=option.low_open,
            max_open=option.high_open,
        )
    if option.type == "float":
        if option.low is None and option.high is None:
            return click.FLOAT
        return click.FloatRange(
            min=option.low, max=option.high, min_open=option.low_open, max_open=option.high_open
        )
    return click.STRING


def method_parameters() -> list[click.Parameter]:
    """``--method`` and every registered method's option flags (None when not given)."""
    params: list[click.Parameter] = [
        click.Option(
            ["--method", "method_name"],
            required=True,
            type=click.Choice(list(METHODS)),
            help="Discovery method.",
        )
    ]
    for name, declared in all_options().items():
        _, option = declared[0]
        users = ", ".join(method.name for method, _ in declared)
        defaults = {method.name: o.default for method, o in declared if o.default is not None}
        if len(set(defaults.values())) > 1:  # methods that share the option differ
            each = ", ".join(f"{value} for {method}" for method, value in defaults.items())
            default = f" [default: {each}]"
        else:
            default = "" if option.default is None else f" [default: {option.default}]"
        helps = {method.name: o.help for method, o in declared}
        said = f"{users}: {option.help}"
        if len(set(helps.values())) > 1:  # in each method's words
            said = "; ".join(f"{method}: {text}" for method, text in helps.items())
        params.append(
            click.Option([option.flag, name], type=option_type(option), help=f"{said}{default}.")
        )
    return params


class DiscoverCommand(click.Command):
    """A command whose method flags come from the registry when it runs."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        static = [p for p in params if p.name != "help"]
        method, *flags = method_parameters()
        return [*static[:1], method, *static[1:], *flags, *params[len(static) :]]


@click.command(cls=DiscoverCommand)
@click.option(
    "--task",
    "task_name",
    required=True,
    help=f"Task short name ({', '.join(TASKS)}), or a task file of prompt pairs: our .jsonl, "
    "an EAP-IG/MIB .csv or an auto-circuit .json (see docs/task-files.md).",
)
@click.option(
    "--task-format",
    type=click.Choice(FORMATS),
    default=None,
    help="The task file's format (default: told by its suffix and content).",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Built-in model (`planted`: the task's planted-circuit model), hub name or alias "
    "(gpt2, gpt2-medium, attn-only-4l), or a local directory. Default: the task's paper "
    "model (see `circuitx tasks`).",
)
@cache_dir_option
@click.option(
    "--n-prompts",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clean/corrupted prompt pairs.",
)
@seed_option
@click.option(
    "--metric", default=None, help="Task metric (default: the task's first; see `circuitx tasks`)."
)
@click.option(
    "--corruption",
    default=None,
    help="How prompts are corrupted (default: the task's first; `circuitx tasks --json` "
    "lists them).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(min=0),
    help="Keep components with |score| >= this (method default if neither this nor --top-k).",
)
@click.option(
    "--top-k", type=click.IntRange(min=1), help="Keep the k components with the largest |score|."
)
@click.option(
    "--ablation",
    default="corrupted",
    show_default=True,
    type=click.Choice(list(ABLATIONS)),
    help="What a patched node or edge carries: its corrupted-run value, that value's mean "
    "over prompts, or zero.",
)
@click.option(
    "--reference",
    "reference_spec",
    default="auto",
    show_default=True,
    help="auto (a planted model's ground truth, or the task's reference on its paper "
    "model), none, planted, TASK[:VARIANT], a planted model's name or a graph file to score "
    "against.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Write the graph: .graphml, .json or .dot.",
)
@click.option(
    "--draw",
    "draw_path",
    type=click.Path(dir_okay=False),
    help="Draw the circuit (.svg, .png, .pdf, or .html: an interactive page), coloured by "
    "agreement with the reference.",
)
@click.option(
    "--faithfulness/--no-faithfulness",
    default=True,
    show_default=True,
    help="Measure the circuit's faithfulness, CPR and CMD after discovery.",
)
@click.option(
    "--faithfulness-prompts",
    type=click.IntRange(min=1),
    default=FAITHFULNESS_PROMPTS,
    show_default=True,
    help="Measure faithfulness on the first N prompts (a random sample; discovery uses "
    "them all): its curve costs 13 forward passes of each.",
)
@backup_rounds_option
@positions_option
@max_memory_option
@json_option
@device_options
@threads_option
def discover_command(
    task_name,
    task_format,
    method_name,
    model_name,
    cache_dir,
    n_prompts,
    seed,
    metric,
    corruption,
    threshold,
    top_k,
    ablation,
    reference_spec,
    out_path,
    draw_path,
    faithfulness,
    faithfulness_prompts,
    backup_rounds,
    positions,
    max_memory,
    as_json,
    device,
    dtype,
    **method_flags,
) -> None:
    """Discover a circuit for a task with a method, and score it against a reference.

    Reports the circuit's faithfulness and MIB's CPR and CMD besides the comparison with
    the reference.
    """
    request = DiscoveryRequest(
        task=task_name,
        task_format=task_format,
        method=method_name,
        model=model_name,
        n_prompts=n_prompts,
        seed=seed,
        threshold=threshold,
        top_k=top_k,
        ablation=ablation,
        corruption=corruption,
        metric=metric,
        options=method_flags,  # None where not given
        reference=reference_spec,
        device=device,
        dtype=dtype,
        cache_dir=cache_dir,
        faithfulness=faithfulness,
        faithfulness_prompts=faithfulness_prompts,
        backup_rounds=backup_rounds,
        positions=positions,
        max_memory=max_memory,
    ).validated()
    source = click.get_current_context().get_parameter_source("faithfulness_prompts")
    if not faithfulness and source is click.core.ParameterSource.COMMANDLINE:
        raise CircuitxError(
            "--faithfulness-prompts sets how faithfulness is measured, and --no-faithfulness "
            "skips it: give one of them"
        )
    inputs = {"--task": task_name, "--reference": reference_spec}
    if out_path:
        check_output_path(out_path)
        check_not_an_input(out_path, inputs)
        graph_format(out_path)
    if draw_path:
        check_output_path(draw_path)
        check_not_an_input(draw_path, inputs)
        draw_format(draw_path)
    model = builtin.load(str(request.model), device, dtype, cache_dir)
    notes: list[str] = []  # shown once the work succeeds: an error stays one line
    if top_k is not None:
        notes += top_k_notes(model.layout, request.method, top_k)
    reference, label, why_not = reference_for_model(model, request, note=notes.append)
    if why_not and reference_spec != "none":
        notes.append(why_not)
    graph = discover(model, request)
    reference = matching_reference(graph, reference)  # at its positions, if any: once
    summary = report(graph, reference, label)
    if reference is not None:
        notes += scoring_notes(graph, reference)
    if out_path:
        write_graph(graph, out_path)
    if draw_path:
        drawn = draw(graph, draw_path, reference)
        if drawn["note"]:
            notes.append(drawn["note"])
    summary["warnings"] += run_warnings(summary, request.n_prompts)
    for line in notes + summary["warnings"]:
        note(line)
    if as_json:  # where the graph went: a script reads it here
        print_json({**summary, "graph": None if out_path is None else str(out_path)})
    else:
        print_summary(summary, out_path)


def prompts_text(summary: dict[str, Any]) -> str:
    """The prompt count, and the parts the memory budget cut them into where several."""
    parts = summary.get("prompt_parts") or 1
    return f"{summary['n_prompts']}" + (f" (in {parts} parts)" if parts > 1 else "")


def print_summary(summary: dict[str, Any], out_path: str | None) -> None:
    table = Table(
        title=f"{summary['method']} on {summary['task']} ({summary['model']})", show_header=False
    )
    table.add_column(style="bold")
    table.add_column()
    metric = (
        f"{summary['metric']}: clean {fmt(summary['clean_metric'])}, "
        f"corrupted ({summary['corruption']}) {fmt(summary['corrupted_metric'])}"
    )
    rows = [
        ("prompts", prompts_text(summary)),
        ("metric", metric),
        ("clean accuracy", fmt(summary["clean_accuracy"])),
        ("nodes kept", f"{summary['n_nodes_in_circuit']} / {summary['n_nodes']}"),
        ("edges kept", f"{summary['n_edges_in_circuit']} / {summary['n_edges']}"),
        ("reference", summary["reference"] or "none"),
    ]
    metrics = summary["metrics"]
    for level in ("node", "edge"):
        values = (metrics[f"{level}_{m}"] for m in ("precision", "recall", "f1"))
        rows.append((f"{level} P / R / F1", " / ".join(map(fmt, values))))
        rows.append((f"{level} ROC AUC", fmt(metrics[f"{level}_auc"])))
    sample = summary.get("faithfulness_prompts")
    on = f" (first {sample} prompts)" if sample and sample < summary["n_prompts"] else ""
    rows.append(("faithfulness", fmt(summary["faithfulness"]) + on))
    rows.append(("CPR / CMD", f"{fmt(summary['cpr'])} / {fmt(summary['cmd'])}"))
    if summary["overlap"]:
        heads = summary["overlap"]["heads"]
        found = f"{heads['shared']} of the circuit's {heads['a']} ({fmt(heads['a_in_b'])})"
        rows.append(("heads in reference", found))
    method = METHODS.get(summary["method"])
    for key, label, *digits in method.reported_facts if method is not None else ():
        rows.append((label, fmt(summary["method_facts"].get(key), *digits)))
    timing = f"{summary['discovery_s']:.2f} s discovery"
    if summary["faithfulness_s"] is not None:
        timing += f", {summary['faithfulness_s']:.2f} s faithfulness"
    rows.append(("runtime", timing))
    if out_path:  # a name that is not UTF-8 is shown with its bytes escaped
        rows.append(("graph", os.fsencode(out_path).decode("utf-8", "backslashreplace")))
    for key, value in rows:
        table.add_row(key, str(value))
    stdout().print(table)


@click.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option(
    "--reference",
    "reference_spec",
    default="auto",
    show_default=True,
    help="auto, planted, TASK[:VARIANT], a planted model's name or a graph file (ours, or "
    "EAP-IG's JSON).",
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
    reference goes to a circuit's token positions by its task's roles)."""
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
    metrics = evaluate(graph, reference)
    for line in scoring_notes(graph, reference):
        note(line)
    if as_json:
        print_json({"graph": graph_path, "reference": label, "metrics": metrics})
        return
    table = Table(title=f"{graph_path} vs {label}")
    for column in ("", "precision", "recall", "F1", "ROC AUC"):
        table.add_column(column)
    for level in ("node", "edge"):
        table.add_row(
            level, *(fmt(metrics[f"{level}_{m}"]) for m in ("precision", "recall", "f1", "auc"))
        )
    stdout().print(table)


@click.command()
@click.argument("graph_a", type=click.Path(dir_okay=False))
@click.argument("graph_b", type=click.Path(dir_okay=False))
@json_option
def compare(graph_a, graph_b, as_json) -> None:
    """Overlap of two circuits: heads, nodes (heads and MLPs) and edges in each, shared,
    Jaccard, and the share of A's circuit found in B's and of B's in A's."""
    a, b = read_graph(graph_a), read_graph(graph_b)
    result = overlap(a, b)
    for line in overlap_notes(a, b):
        note(line)
    if as_json:
        print_json({"a": graph_a, "b": graph_b, **result})
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
    help="Every scored edge, not the circuit's only (a page: its slider starts there).",
)  # fmt: skip
@click.option(
    "--top", type=click.IntRange(min=1),
    help="The N edges of largest |score| (a page: its slider starts at top N).",
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
        if reference is None:
            raise CircuitxError(why_not or "no reference to draw against")
    drawn = draw(graph, out_path, matching_reference(graph, reference), top, every, engine)
    if drawn["note"]:
        note(f"note: {drawn['note']}")
    if (every or top is not None) and drawn["edges"] == 0:
        note(
            "note: no edge has a non-zero score (a node-level method scores none): --all and "
            "--top choose among scored edges; without them the circuit's edges are drawn"
        )


def collapsed(graph: Any, path: str) -> Any:
    """``graph`` over components (--collapse-positions), with a note where it has no
    positions to collapse."""
    if position_groups(graph) is None:
        note(f"note: {path} has no token positions: --collapse-positions changes nothing")
    return collapse_positions(graph)


@click.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt_name", required=True, type=click.Choice(list(GRAPH_FORMATS)))
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
    """Convert a circuit graph to GraphML, JSON, DOT (the circuit only) or EAP-IG's graph
    JSON (what MIB evaluates). GRAPH may be an EAP-IG graph too."""
    if out_path:
        check_output_path(out_path)
        named = suffix_format(out_path)
        json_file = named == "json" and fmt_name == "eap-ig"  # EAP-IG's graphs are JSON
        if named is not None and named != fmt_name and not json_file:
            raise CircuitxError(
                f"--out {out_path} names a {named} file, but --format is {fmt_name}"
            )
    graph = read_graph(graph_path)
    text = graph_to_text(collapsed(graph, graph_path) if collapse else graph, fmt_name)
    if out_path:
        with atomic_open(out_path) as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)
    off_path = edges_off_path(graph) if fmt_name == "eap-ig" else []
    if off_path:
        kept = sum(1 for *_, in_circuit in graph.edges(data="in_circuit") if in_circuit)
        note(
            f"note: {len(off_path)} of the circuit's {kept} edges "
            f"{'lies' if len(off_path) == 1 else 'lie'} on no path from input to "
            f"logits ({listed(off_path, 3)}); EAP-IG's evaluate_graph prunes them first, so "
            f"MIB counts {kept - len(off_path)}"
        )
