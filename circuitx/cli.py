"""The ``circuitx`` command line: discover, score, export, and listings.

Results go to stdout (a rich table, or one JSON object with ``--json``); notes, progress
bars and errors go to stderr. Every input error is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from circuitx import __version__
from circuitx.errors import CircuitxError
from circuitx.files import atomic_open, check_output_path
from circuitx.progress import progress_bar

EXIT_INPUT_ERROR = 2


class OneLineErrors(click.Group):
    """A click group whose usage and input errors are one line on stderr, never a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.ClickException as error:
            click.echo(f"error: {error.format_message()}", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except CircuitxError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(EXIT_INPUT_ERROR)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(0)


def _stdout() -> Console:
    return Console(soft_wrap=True)


def _note(message: str) -> None:
    click.echo(message, err=True)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="circuitx")
def main() -> None:
    """Automated circuit discovery in transformer language models."""


def _task_names() -> list[str]:
    from circuitx.tasks import TASKS

    return list(TASKS)


def _ablations() -> list[str]:
    from circuitx.patching import ABLATIONS

    return list(ABLATIONS)


def _sae_choices(name: str) -> list[str]:
    from circuitx.methods import sae

    return list(getattr(sae, name))


def _transcoder_choices() -> list[str]:
    from circuitx.methods.transcoder import GRANULARITIES

    return list(GRANULARITIES)


def _method_names() -> list[str]:
    from circuitx.methods import METHODS

    return list(METHODS)


def _device_options(command):
    """``--device`` and ``--dtype``, as every model-loading command takes them."""
    command = click.option(
        "--dtype",
        default="float32",
        show_default=True,
        type=click.Choice(["float32", "float16", "bfloat16"]),
    )(command)
    return click.option(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)."
    )(command)


_json_flag = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object instead of a table."
)


@main.command()
@click.option(
    "--task", "task_name", required=True, type=click.Choice(_task_names()), help="Task short name."
)
@click.option(
    "--method",
    "method_name",
    required=True,
    type=click.Choice(_method_names()),
    help="Discovery method.",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Built-in model (`planted`: the task's planted-circuit model), hub name or alias "
    "(gpt2, gpt2-medium, attn-only-4l), or a local directory. Default: the task's paper "
    "model (see `circuitx tasks`).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where built-in models are built and cached (default: $CIRCUITX_CACHE_DIR, "
    "else ~/.cache/circuitx).",
)
@click.option(
    "--n-prompts",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clean/corrupted prompt pairs.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Drives every random choice.")
@click.option(
    "--metric", default=None, help="Task metric (default: the task's first; see `circuitx tasks`)."
)
@click.option(
    "--corruption",
    default=None,
    help="How prompts are corrupted (default: the task's first; `circuitx tasks --json` lists them).",
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
    type=click.Choice(_ablations()),
    help="What a patched node or edge carries: its corrupted-run value, that value's mean "
    "over prompts, or zero.",
)
@click.option(
    "--tau",
    type=click.FloatRange(min=0),
    help="acdc: drop an edge whose patching moves the metric by less than this share of "
    "the clean-corrupted gap [default: 0.01].",
)
@click.option(
    "--ig-steps",
    type=click.IntRange(min=1),
    help="eap-ig: interpolation steps between corrupted and clean inputs [default: 5].",
)
@click.option(
    "--stages",
    type=click.IntRange(min=1),
    help="path-patching: rounds, the first to the logits, each later one to the heads "
    "found before [default: 5].",
)
@click.option(
    "--n-examples",
    type=int,
    help="sae: prompts (positive and negative together) the autoencoder is trained on "
    "[default: 10].",
)
@click.option(
    "--n-codes", type=int, help="sae: the autoencoder's codes (hidden size) [default: 200]."
)
@click.option("--sae-steps", type=int, help="sae: full-batch training steps [default: 500].")
@click.option(
    "--sae-l1", type=click.FloatRange(min=0), help="sae: sparsity penalty [default: 0.05]."
)
@click.option(
    "--sae-lr",
    type=click.FloatRange(min=0, min_open=True),
    help="sae: Adam learning rate [default: 0.001].",
)
@click.option(
    "--sae-inputs",
    type=click.Choice(_sae_choices("SAE_INPUTS")),
    help="sae: each head's outputs centred and scaled to a common size, or as the model "
    "writes them (the authors') [default: standardised].",
)
@click.option(
    "--node-score",
    type=click.Choice(_sae_choices("NODE_SCORES")),
    help="sae: share of positive prompts whose code no negative shows, number of such codes "
    "(the authors' node score), or the authors' ranking by code-pair co-occurrence "
    "[default: positive-share].",
)
@click.option(
    "--transcoders",
    help="transcoder: directory or hub repo of transcoders for every MLP (default: "
    "pchlenski/gpt2-transcoders for gpt2; trained once and cached for built-in models).",
)
@click.option(
    "--granularity",
    type=click.Choice(_transcoder_choices()),
    help="transcoder: node writes the head/MLP graph; feature adds each MLP's strongest "
    "transcoder features as nodes m{L}.f{i} (the rest as m{L}.rest) [default: node].",
)
@click.option(
    "--n-features",
    type=int,
    help="transcoder: features kept per MLP with --granularity feature [default: 10].",
)
@click.option(
    "--reference",
    "reference_spec",
    default="auto",
    show_default=True,
    help="auto (a planted model's ground truth, or the task's reference on its paper "
    "model), none, planted, TASK[:VARIANT] or a graph file to score against.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Write the graph: .graphml, .json or .dot.",
)
@_json_flag
@_device_options
def discover(
    task_name,
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
    as_json,
    device,
    dtype,
    **method_flags,
) -> None:
    """Discover a circuit for a task with a method, and score it against a reference.

    Reports the circuit's faithfulness and MIB's CPR and CMD besides the comparison with
    the reference.
    """
    from circuitx.discovery import check_selection, reference_for_model, report
    from circuitx.discovery import discover as run_discovery
    from circuitx.graph import graph_format, write_graph
    from circuitx.methods import get_method, method_options
    from circuitx.models import load_model
    from circuitx.planted import planted_name
    from circuitx.tasks import get_task

    check_selection(threshold, top_k)
    options = method_flags  # --tau, --ig-steps, ..., --node-score: None when not given
    method_options(get_method(method_name), options)
    task = get_task(task_name, corruption)
    task.check_metric(metric or task.default_metric)
    if out_path:
        check_output_path(out_path)
        graph_format(out_path)
    if cache_dir:
        os.environ["CIRCUITX_CACHE_DIR"] = cache_dir
    model_name = planted_name(model_name or task.default_model, task_name)
    model = load_model(model_name, device=device, dtype=dtype)

    reference, label, note = reference_for_model(
        model,
        reference_spec,
        task_name,
        method_name,
        note=_note,
        n_prompts=n_prompts,
        seed=seed,
        metric=metric,
        threshold=threshold,
        top_k=top_k,
        options=options,
        ablation=ablation,
    )
    if note and reference_spec != "none":
        _note(note)
    graph = run_discovery(
        model,
        task_name,
        method_name,
        n_prompts,
        seed,
        metric,
        threshold,
        top_k,
        corruption,
        options,
        ablation,
    )
    summary = report(graph, reference, label)
    if out_path:
        write_graph(graph, out_path)
    if as_json:
        _print_json(summary)
    else:
        _print_summary(summary, out_path)


def _print_summary(summary: dict[str, Any], out_path: str | None) -> None:
    table = Table(
        title=f"{summary['method']} on {summary['task']} ({summary['model']})", show_header=False
    )
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("prompts", summary["n_prompts"]),
        (
            "metric",
            (
                f"{summary['metric']}: clean {_fmt(summary['clean_metric'])}, "
                f"corrupted ({summary['corruption']}) {_fmt(summary['corrupted_metric'])}"
            ),
        ),
        ("clean accuracy", _fmt(summary["clean_accuracy"])),
        ("nodes kept", f"{summary['n_nodes_in_circuit']} / {summary['n_nodes']}"),
        ("edges kept", f"{summary['n_edges_in_circuit']} / {summary['n_edges']}"),
        ("reference", summary["reference"] or "none"),
    ]
    metrics = summary["metrics"]
    for level in ("node", "edge"):
        rows.append(
            (
                f"{level} P / R / F1",
                " / ".join(_fmt(metrics[f"{level}_{m}"]) for m in ("precision", "recall", "f1")),
            )
        )
        rows.append((f"{level} ROC AUC", _fmt(metrics[f"{level}_auc"])))
    rows.append(("faithfulness", _fmt(summary["faithfulness"])))
    rows.append(("CPR / CMD", f"{_fmt(summary['cpr'])} / {_fmt(summary['cmd'])}"))
    if summary["overlap"]:
        heads = summary["overlap"]["heads"]
        rows.append(
            (
                "heads in reference",
                f"{heads['shared']} of {heads['a']} found ({_fmt(heads['a_in_b'])})",
            )
        )
    rows.append(("runtime", f"{summary['runtime_s']:.2f} s"))
    if out_path:
        rows.append(("graph", out_path))
    for key, value in rows:
        table.add_row(key, str(value))
    _stdout().print(table)


@main.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option(
    "--reference",
    "reference_spec",
    default="auto",
    show_default=True,
    help="auto, TASK[:VARIANT] or a graph file.",
)
@_json_flag
def score(graph_path, reference_spec, as_json) -> None:
    """Score a saved circuit graph against a reference circuit."""
    from circuitx.discovery import evaluate, reference_for_graph
    from circuitx.graph import read_graph

    graph = read_graph(graph_path)
    reference, label, note = reference_for_graph(graph, reference_spec)
    if reference is None:
        raise CircuitxError(note or "no reference to score against")
    metrics = evaluate(graph, reference)
    if as_json:
        _print_json({"graph": graph_path, "reference": label, "metrics": metrics})
        return
    table = Table(title=f"{graph_path} vs {label}")
    for column in ("", "precision", "recall", "F1", "ROC AUC"):
        table.add_column(column)
    for level in ("node", "edge"):
        table.add_row(
            level, *(_fmt(metrics[f"{level}_{m}"]) for m in ("precision", "recall", "f1", "auc"))
        )
    _stdout().print(table)


@main.command()
@click.argument("graph_a", type=click.Path(dir_okay=False))
@click.argument("graph_b", type=click.Path(dir_okay=False))
@_json_flag
def compare(graph_a, graph_b, as_json) -> None:
    """Overlap of two circuits: heads, nodes (heads and MLPs) and edges in each, shared,
    Jaccard, and the share of A's circuit found in B's and of B's in A's."""
    from circuitx.graph import read_graph
    from circuitx.scoring import OVERLAP_LEVELS, overlap

    result = overlap(read_graph(graph_a), read_graph(graph_b))
    if as_json:
        _print_json({"a": graph_a, "b": graph_b, **result})
        return
    table = Table(title=f"A = {graph_a}, B = {graph_b}")
    columns = ("a", "b", "shared", "jaccard", "a_in_b", "b_in_a")
    for column in ("", "in A", "in B", "shared", "Jaccard", "A in B", "B in A"):
        table.add_column(column)
    for level in OVERLAP_LEVELS:
        table.add_row(level, *(_fmt(result[level][c]) for c in columns))
    _stdout().print(table)


@main.command()
@click.argument("graph_path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", required=True, type=click.Choice(["graphml", "json", "dot"]))
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), help="Output file (default: stdout)."
)
def export(graph_path, fmt, out_path) -> None:
    """Convert a circuit graph to GraphML, JSON or DOT (DOT shows the circuit only)."""
    from circuitx.graph import graph_to_text, read_graph

    if out_path:
        check_output_path(out_path)
    text = graph_to_text(read_graph(graph_path), fmt)
    if out_path:
        with atomic_open(out_path) as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


def _training_option(flag: str, kind: click.ParamType, help: str):
    """A train-transcoders option whose default is ``TrainingSettings``'s."""
    from circuitx.transcoders import TrainingSettings

    default = TrainingSettings.__dataclass_fields__[flag.lstrip("-").replace("-", "_")].default
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


@main.command("train-transcoders")
@click.option(
    "--model", "model_name", required=True, help="Built-in model, local directory or hub name."
)
@click.option("--layers", default="all", show_default=True, help="'all' or layers like 0,2,5.")
@click.option(
    "--corpus",
    default="tasks",
    show_default=True,
    help="'tasks' (prompts every task makes for this model, with answers), a text file, "
    "or a Hugging Face dataset with a text column.",
)
@click.option(
    "--features",
    "n_features",
    type=click.IntRange(min=1),
    help="Features per layer [default: 4 x d_model].",
)
@_training_option(
    "--l1", click.FloatRange(min=0), "Sparsity penalty, per unit of the output's RMS."
)
@_training_option("--steps", click.IntRange(min=1), "Adam steps.")
@_training_option("--lr", click.FloatRange(min=0, min_open=True), "Peak learning rate.")
@_training_option("--batch-tokens", click.IntRange(min=1), "Tokens per step.")
@click.option(
    "--refit/--no-refit",
    default=True,
    show_default=True,
    help="After training, re-solve each decoder by least squares (a features x features "
    "solve: costly for tens of thousands of features on a CPU).",
)
@click.option(
    "--context",
    type=click.IntRange(min=2),
    default=128,
    show_default=True,
    help="Tokens per corpus sequence (at most the model's context).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=2_000_000,
    show_default=True,
    help="Corpus tokens read at most.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Save to OUT/checkpoints/step-N every N steps (0: only the final transcoders).",
)
@click.option(
    "--tasks",
    "task_names",
    default="all",
    show_default=True,
    help="Tasks whose metric is measured with the MLPs replaced: 'all', 'none' or names "
    "like ioi,greater-than.",
)
@click.option(
    "--n-prompts",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Prompts per task for that measurement.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Drives every random choice.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write the transcoders to.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@click.option(
    "--cache-dir", type=click.Path(file_okay=False), help="Where built-in models are cached."
)
def train_transcoders(
    model_name,
    layers,
    corpus,
    n_features,
    l1,
    steps,
    lr,
    batch_tokens,
    refit,
    context,
    max_tokens,
    checkpoint_every,
    task_names,
    n_prompts,
    seed,
    out_dir,
    as_json,
    device,
    cache_dir,
) -> None:
    """Train transcoders (sparse MLP replacements) on a corpus, save them in the authors'
    file layout, and report reconstruction quality and the task metrics with the MLPs
    replaced."""
    from circuitx import transcoders as tc
    from circuitx.models import load_model
    from circuitx.tasks import TASKS, get_task

    out = Path(out_dir)
    if not out.parent.is_dir():
        raise CircuitxError(f"output directory's parent does not exist: {out.parent}")
    if task_names == "all":
        chosen = list(TASKS)
    elif task_names == "none":
        chosen = []
    else:
        chosen = [get_task(name.strip()).name for name in task_names.split(",") if name.strip()]
    if cache_dir:
        os.environ["CIRCUITX_CACHE_DIR"] = cache_dir
    model = load_model(model_name, device=device)
    chosen_layers = tc.parse_layers(layers, model)
    data = tc.load_corpus(model, corpus, context, seed, max_tokens)
    settings = tc.TrainingSettings(
        n_features=n_features or 4 * model.d_model,
        l1=l1,
        steps=steps,
        batch_tokens=batch_tokens,
        lr=lr,
        seed=seed,
        refit=refit,
    )
    with progress_bar(f"training {len(chosen_layers)} transcoders", steps) as advance:
        result = tc.train_and_report(
            model, chosen_layers, data, settings, out, chosen, n_prompts, checkpoint_every, advance
        )
    if as_json:
        _print_json(result)
        return
    console = _stdout()
    layers_table = Table(title=f"transcoders for {model.name} -> {out}")
    for column in ("layer", "FVE", "L0", "dead"):
        layers_table.add_column(column)
    for layer, quality in result["layers_quality"].items():
        layers_table.add_row(
            layer,
            _fmt(quality["fraction_of_variance_explained"]),
            _fmt(quality["l0"]),
            _fmt(quality["dead_fraction"]),
        )
    console.print(layers_table)
    tasks_table = Table(title="task metric, MLPs replaced by transcoders")
    for column in ("task", "metric", "original", "replaced", "relative change"):
        tasks_table.add_column(column)
    for task, row in result["task_metric_replaced"].items():
        if "error" in row:
            tasks_table.add_row(task, "-", "-", "-", row["error"])
        else:
            tasks_table.add_row(
                task,
                row["metric"],
                _fmt(row["original"]),
                _fmt(row["replaced"]),
                _fmt(row["relative_change"]),
            )
    console.print(tasks_table)
    console.print(
        f"{result['training_tokens']} tokens in {result['train_seconds']:.1f} s "
        f"({result['seconds_per_layer_per_million_tokens']:.1f} s per layer per million tokens)"
    )


@main.command()
@click.option("--json", "as_json", is_flag=True)
def tasks(as_json) -> None:
    """List the tasks."""
    from circuitx.tasks import TASKS

    rows = [
        {
            "name": t.name,
            "title": t.title,
            "default_model": t.default_model,
            "paper_model": t.paper_model,
            "default_metric": t.default_metric,
            "metrics": list(t.metrics),
            "corruptions": list(t.corruptions),
            "references": [f"{t.name}:{v}" if v else t.name for v in t.reference_variants],
            "relational_reference": t.reference_task,
        }
        for t in TASKS.values()
    ]
    columns = ("name", "default_model", "default_metric", "references")
    _list(rows, as_json, "tasks", columns)


@main.command()
@click.option(
    "--tasks",
    "tasks_spec",
    default="all",
    show_default=True,
    help="Comma-separated task names, or all.",
)
@click.option(
    "--methods",
    "methods_spec",
    default="all",
    show_default=True,
    help="Comma-separated method names, or all.",
)
@click.option(
    "--model",
    "model_name",
    default="planted",
    show_default=True,
    help="`planted` / `planted-hard` (each task's planted-circuit model), a built-in model, "
    "hub name or local directory.",
)
@click.option(
    "--seeds",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seeds per cell (--seed, --seed + 1, ...); the table shows mean ± std.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="The first seed.")
@click.option(
    "--n-prompts",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clean/corrupted prompt pairs per cell.",
)
@click.option(
    "--ablation",
    default="corrupted",
    show_default=True,
    type=click.Choice(_ablations()),
    help="What a patched node or edge carries (as in discover).",
)
@click.option(
    "--out",
    "out_dir",
    default="leaderboard",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for results.json/.csv/.md, the plots, and the finished cells (cells/), "
    "which a rerun reuses.",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Cells run at once: 1 runs them in this process, N > 1 in N worker processes (or "
    "N Ray tasks).",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="torch CPU threads per cell. Results depend on it in the last float bits only; with "
    "it fixed they are identical whatever --jobs or --executor.",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    type=click.Choice(["local", "ray"]),
    help="local: this machine's processes; ray: a Ray cluster ($RAY_ADDRESS) or a local "
    "Ray instance (pip install 'circuitx[ray]').",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Where built-in models are built and cached.",
)
@_json_flag
@_device_options
def leaderboard(
    tasks_spec,
    methods_spec,
    model_name,
    seeds,
    seed,
    n_prompts,
    ablation,
    out_dir,
    jobs,
    threads,
    executor,
    cache_dir,
    as_json,
    device,
    dtype,
) -> None:
    """Run every (task, method) cell over seeds, score each against the reference, and
    print the leaderboard.

    Writes results.json, results.csv, results.md and ROC and faithfulness plots per task
    to --out. Finished cells are kept under --out/cells by a key of their full
    configuration, so a rerun (after an interruption, or with more tasks) runs only the
    rest. A failing cell shows its error in the table, and the command exits 1.
    """
    from circuitx import leaderboard as board_module
    from circuitx.methods import METHODS
    from circuitx.tasks import TASKS

    tasks = board_module.parse_names(tasks_spec, list(TASKS), "task")
    methods = board_module.parse_names(methods_spec, list(METHODS), "method")
    if cache_dir:
        os.environ["CIRCUITX_CACHE_DIR"] = cache_dir
    seed_list = list(range(seed, seed + seeds))
    cells = board_module.make_grid(
        tasks, methods, model_name, seed_list, n_prompts, ablation, device, dtype
    )
    settings = {
        "tasks": tasks,
        "methods": methods,
        "model": model_name,
        "seeds": seed_list,
        "n_prompts": n_prompts,
        "ablation": ablation,
        "jobs": jobs,
        "threads": threads,
        "executor": executor,
        "device": device,
        "dtype": dtype,
    }
    board = board_module.run_leaderboard(cells, out_dir, jobs, executor, threads, settings)
    if as_json:
        _print_json(
            {
                "rows": board.rows,
                "files": board.files,
                "resumed": board.resumed,
                "failed": board.failed,
            }
        )
    else:
        headings, body = board_module.table(board.rows)
        table = Table(title=f"circuitx leaderboard: {model_name}, {len(seed_list)} seed(s)")
        for index, heading in enumerate(headings):
            numeric = 2 <= index < 2 + len(board_module.COLUMNS)
            table.add_column(heading, justify="right" if numeric else "left")
        for cells_shown in body:
            table.add_row(*cells_shown)
        console = _stdout()
        if not console.is_terminal:  # piped: no terminal width to fit, keep rows on one line
            console.width = 240
        console.print(table)
    resumed = f" ({board.resumed} cells from an earlier run)" if board.resumed else ""
    _note(f"wrote results.json, results.csv, results.md and plots to {out_dir}{resumed}")
    if board.failed:
        _note(f"{board.failed} of {len(cells)} cells failed; the table shows their errors")
        sys.exit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def methods(as_json) -> None:
    """List the discovery methods."""
    from circuitx.methods import METHODS

    rows = [
        {
            "name": m.name,
            "title": m.title,
            "granularity": m.granularity,
            "default_threshold": m.default_threshold,
            "options": m.options,
        }
        for m in METHODS.values()
    ]
    columns = ("name", "granularity", "default_threshold", "options", "title")
    _list(rows, as_json, "methods", columns)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def models(as_json) -> None:
    """List built-in models (with each planted model's task and circuit) and hub aliases."""
    from circuitx.builtin import BUILTIN_MODELS
    from circuitx.models import HUB_ALIASES
    from circuitx.planted import PLANTED

    rows = []
    for m in BUILTIN_MODELS.values():
        circuits = PLANTED[m.name].circuits() if m.name in PLANTED else {}
        rows.append(
            {
                "name": m.name,
                "source": "built-in (no download)",
                "task": m.task,
                "circuit": _circuit_size(circuits[m.task]) if m.task else None,
                "description": m.description,
                "circuits": {task: _circuit_facts(graph) for task, graph in circuits.items()},
            }
        )
    rows += [
        {
            "name": alias,
            "source": "Hugging Face hub",
            "task": None,
            "circuit": None,
            "description": hub_id,
            "circuits": {},
        }
        for alias, hub_id in HUB_ALIASES.items()
    ]
    _list(rows, as_json, "models", ("name", "source", "task", "circuit", "description"))


def _circuit_facts(graph) -> dict[str, Any]:
    nodes = [
        n for n, d in graph.nodes(data=True) if d["in_circuit"] and d["kind"] in ("head", "mlp")
    ]
    return {
        "heads": [n for n in nodes if graph.nodes[n]["kind"] == "head"],
        "mlps": [n for n in nodes if graph.nodes[n]["kind"] == "mlp"],
        "n_edges": sum(bool(d["in_circuit"]) for *_, d in graph.edges(data=True)),
    }


def _circuit_size(graph) -> str:
    facts = _circuit_facts(graph)
    return f"{len(facts['heads'])} heads, {len(facts['mlps'])} MLPs, {facts['n_edges']} edges"


def _list(rows: list[dict[str, Any]], as_json: bool, title: str, columns: tuple[str, ...]) -> None:
    if as_json:
        _print_json(rows)
        return
    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i == 0, overflow="fold")  # names stay whole
    for row in rows:
        table.add_row(*(_cell(row[column]) for column in columns))
    _stdout().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return _fmt(value)
