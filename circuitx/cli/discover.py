"""``circuitx discover`` (the commands that read its graphs are in :mod:`circuitx.cli.graphs`).

The method flags of ``discover`` (``--tau``, ``--ig-steps``, ...) and its ``--method``
choices are generated from the method registry each time the command runs, so a method
registered at run time gets its flags with no edit here."""

from __future__ import annotations

import os
import time
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
    warn,
)
from circuitx.discovery import (
    FAITHFULNESS_PROMPTS,
    DiscoveryRequest,
    discover_scored,
    scoring_notes,
    top_k_notes,
)
from circuitx.drawing import draw, draw_format
from circuitx.errors import CircuitxError
from circuitx.files import check_not_an_input, check_output_path, written_together
from circuitx.graph import layout_of
from circuitx.graph_files import check_scores, eap_ig_node_level_note, graph_format, save_graph
from circuitx.methods import METHODS, Option, all_options, unused_options
from circuitx.patching import ABLATIONS
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
    "--metric",
    default=None,
    help="Task metric (default: the task's first; `circuitx tasks --json` lists them).",
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
    help="Keep the nodes (or, for an edge method, the edges) with |score| >= this (method "
    "default if neither this nor --top-k).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    help="Keep the k nodes (an edge method: edges) with the largest |score|.",
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
    "model), none, planted, TASK[:VARIANT], a built-in model's name or a model directory "
    "for its ground truth (MODEL:WHICH for one of several), or a file to score against: a "
    "graph (ours, or EAP-IG's JSON or .pt), a circuit of head classes or a list of edge "
    "names (JSON).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Write the graph: .graphml, .json, .dot or .pt (EAP-IG's, as MIB takes it).",
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
    started = time.perf_counter()  # the run in all: loading and writing too
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
    eap_ig_out = False  # EAP-IG's .pt
    if out_path is not None:  # an empty one is refused
        check_output_path(out_path)
        check_not_an_input(out_path, inputs)
        eap_ig_out = graph_format(out_path) == "eap-ig"
        if eap_ig_out:
            check_eap_ig_out(out_path, request)
    if draw_path is not None:
        check_output_path(draw_path, "--draw")
        check_not_an_input(draw_path, inputs)
        draw_format(draw_path)
    try:
        model = builtin.load(str(request.model), device, dtype, cache_dir)
    except CircuitxError as error:
        if model_name is not None:
            raise
        raise CircuitxError(  # the user named no model: say which one was tried
            f"no --model given (task {task_name}'s default is {request.model}): {error}"
        ) from None
    if eap_ig_out and not model.has_mlp:
        raise CircuitxError(
            f"--out {out_path}: EAP-IG's graphs always have MLPs, and this model has none; "
            "write .graphml or .json"
        )
    notes: list[str] = []  # shown once the work succeeds: an error stays one line
    notes += unused_options(METHODS[request.method], method_flags, request.options)
    scored = discover_scored(model, request, note=notes.append)
    graph, reference, summary = scored.graph, scored.reference, scored.summary
    if scored.no_reference and reference_spec != "none":
        notes.append(f"note: {scored.no_reference}")  # as draw and score say it
    if top_k is not None:  # the graph's universe: over positions, its position nodes
        notes += top_k_notes(layout_of(graph), request.method, top_k)
    if reference is not None:
        notes += scoring_notes(graph, reference)
    with written_together():  # the graph and its picture, or neither (an earlier run's stay)
        if out_path:
            check_scores(graph, f"cannot write {out_path}")  # the rest is discovery's own
            save_graph(graph, out_path, graph_format(out_path))
            if eap_ig_out and (line := eap_ig_node_level_note(graph)):
                notes.append(line)
        if draw_path:
            drawn = draw(graph, draw_path, reference)
            if drawn["note"]:
                notes.append(drawn["note"])
    summary["total_s"] = time.perf_counter() - started  # not Python's start or the imports
    for line in notes:
        note(line)
    for line in summary["warnings"]:
        warn(line)
    written = {"graph": out_path, "drawing": draw_path}  # where they went: a script reads it
    if as_json:
        print_json({**summary, **{k: None if v is None else str(v) for k, v in written.items()}})
    else:
        print_summary(summary, written)


def check_eap_ig_out(out_path: str, request: DiscoveryRequest) -> None:
    """Refuse, before any work, a run whose graph EAP-IG's .pt cannot hold: a score on
    every edge between heads and MLPs, or on every head and MLP (a node method's)."""
    if request.positions != "none":
        why = "a circuit over token positions has more (export --collapse-positions writes one)"
    elif request.options.get("granularity") == "feature":
        why = "a feature graph has more (export writes its components)"
    else:
        return
    raise CircuitxError(
        f"--out {out_path}: EAP-IG's .pt holds a score for each edge between heads and "
        f"MLPs (or each head and MLP), and {why}; write .graphml or .json"
    )


def features_text(summary: dict[str, Any]) -> str:
    """A feature graph's features kept, which the nodes and edges kept do not count (a
    trial read 0 / 5 as five features, where each was an MLP's rest)."""
    return (
        f"{summary['n_features_in_circuit']} / {summary['n_features']} (each MLP's rest one of "
        f"them), their edges "
        f"{summary['n_feature_edges_in_circuit']} / {summary['n_feature_edges']} (not in "
        "the counts above)"
    )


def prompts_text(summary: dict[str, Any]) -> str:
    """The prompt count, and the parts the memory budget cut them into where several."""
    parts = summary.get("prompt_parts") or 1
    return f"{summary['n_prompts']}" + (f" (in {parts} parts)" if parts > 1 else "")


def selection_text(summary: dict[str, Any]) -> str:
    """How the circuit was selected, in words: a threshold, a top k, or the method's own
    search."""
    method = METHODS.get(summary["method"])
    level = method.granularity if method is not None else "node"
    if summary["top_k"] is not None:
        return f"the top {summary['top_k']} {level}s by |score|"
    if summary["threshold"] is not None:
        return f"|{level} score| >= {summary['threshold']:g}"
    return f"{summary['method']}'s own search"


def positions_text(summary: dict[str, Any]) -> str:
    """The position groups a circuit's nodes act at: the task's named positions, or every
    position with the named ones' places (``13, every one: END=12``)."""
    groups, aliases = summary["positions"], summary.get("position_aliases")
    if aliases:
        named = ", ".join(f"{name}={group}" for name, group in aliases.items())
        return f"{len(groups)}, every one: {named}"
    return ", ".join(groups)


def metric_value(value: float | None) -> str:
    """A task metric as the summary shows it: three decimals, or three significant
    digits below 0.001 (a trial's prob-diff of -2.03e-05 showed as 0.000)."""
    if value is not None and 0 < abs(value) < 0.001:
        return f"{value:.3g}"
    return fmt(value)


def print_summary(summary: dict[str, Any], written: dict[str, str | None]) -> None:
    precision = f", {summary['dtype']}" if summary.get("dtype") not in (None, "float32") else ""
    table = Table(
        title=f"{summary['method_label']} on {summary['task']} ({summary['model']}{precision})",
        show_header=False,
    )
    table.add_column(style="bold")
    table.add_column()
    metric = (
        f"{summary['metric']}: clean {metric_value(summary['clean_metric'])}, "
        f"corrupted ({summary['corruption']}) {metric_value(summary['corrupted_metric'])}"
    )
    if summary.get("ablated_metric") is not None:  # scores are shares of clean - this
        ablated = metric_value(summary["ablated_metric"])
        metric += f", every node {summary['ablation']}-ablated {ablated}"
    rows = [
        ("prompts", prompts_text(summary)),
        ("metric", metric),
        ("clean accuracy", fmt(summary["clean_accuracy"])),
        ("nodes kept", f"{summary['n_nodes_in_circuit']} / {summary['n_nodes']}"),
        ("edges kept", f"{summary['n_edges_in_circuit']} / {summary['n_edges']}"),
        *(
            [("features kept", features_text(summary))]
            if summary.get("n_features") is not None
            else []
        ),
        ("selected by", selection_text(summary)),
        *([("positions", positions_text(summary))] if summary.get("positions") else []),
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
    declared = method.reported_facts if method is not None else ()
    for key, label, *digits in declared:
        value = summary["method_facts"].get(key)
        if value is not None:  # else a fact this run had none of (null in --json)
            rows.append((label, fmt(value, *digits)))
    labelled = {key for key, *_ in declared}
    rows += [(k, fmt(v)) for k, v in summary["method_facts"].items() if k not in labelled]
    timing = f"{summary['discovery_s']:.2f} s discovery"
    if summary["faithfulness_s"] is not None:
        timing += f", {summary['faithfulness_s']:.2f} s faithfulness"
    if summary.get("total_s") is not None:  # loading the model, scoring, writing too
        timing += f"; {summary['total_s']:.2f} s in all"
    rows.append(("runtime", timing))
    for key, path in written.items():  # a name that is not UTF-8: its bytes escaped
        if path:
            rows.append((key, os.fsencode(path).decode("utf-8", "backslashreplace")))
    for key, value in rows:
        table.add_row(key, str(value))
    stdout().print(table)
