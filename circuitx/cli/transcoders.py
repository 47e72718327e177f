"""``circuitx train-transcoders``."""

from __future__ import annotations

import math

import click
from click.core import ParameterSource
from rich.table import Table

from circuitx import builtin
from circuitx import transcoders as tc
from circuitx.cli.common import (
    cache_dir_option,
    fmt,
    json_option,
    print_json,
    seed_option,
    stdout,
    threads_option,
)
from circuitx.errors import CircuitxError
from circuitx.files import check_new_directory, claim_directory
from circuitx.methods.transcoder import check_attributable
from circuitx.progress import announce, progress_bar
from circuitx.tasks import TASKS, get_task
from circuitx.transcoders import TrainingSettings

MAX_FEATURES = 2**20  # features per layer
MAX_BATCH_TOKENS = 2**20


def _finite(context: click.Context, parameter: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise CircuitxError(f"--{parameter.name.replace('_', '-')} must be a finite number")
    return value


def _training_option(flag: str, kind: click.ParamType, help: str):
    """A train-transcoders option whose default is ``TrainingSettings``'s (a float one
    finite)."""
    default = TrainingSettings.__dataclass_fields__[flag.lstrip("-").replace("-", "_")].default
    callback = _finite if isinstance(kind, click.FloatRange) else None
    return click.option(
        flag, type=kind, default=default, show_default=True, help=help, callback=callback
    )


@click.command("train-transcoders")
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
    type=click.IntRange(1, MAX_FEATURES),
    help="Features per layer [default: 4 x d_model].",
)
@_training_option(
    "--l1", click.FloatRange(min=0), "Sparsity penalty, per unit of the output's RMS."
)
@_training_option("--steps", click.IntRange(min=1), "Adam steps.")
@_training_option("--lr", click.FloatRange(min=0, min_open=True), "Peak learning rate.")
@_training_option("--batch-tokens", click.IntRange(1, MAX_BATCH_TOKENS), "Tokens per step.")
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
    help="Save to OUT/checkpoints/step-N every N steps, with the training state: an "
    "interrupted run resumes from its last checkpoint when run again with the same --out "
    "(0: only the final transcoders).",
)
@click.option(
    "--tasks",
    "task_names",
    default="all",
    show_default=True,
    help="Tasks whose metric is measured with the MLPs replaced: 'all', 'none', or names "
    "and task files like ioi,my-task.jsonl.",
)
@click.option(
    "--n-prompts",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Prompts per task for that measurement.",
)
@seed_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write the transcoders to.",
)
@json_option
@click.option("--device", default=None, help="torch device (default: cuda if available, else cpu).")
@cache_dir_option
@threads_option
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
    state = tc.interrupted_run(out_dir)
    # a new directory, as two sets of transcoders would mix in one, unless it is resumed
    out = check_new_directory(out_dir) if state is None else state.parent.parent
    text = tc.corpus_file_text(corpus)  # a bad corpus file is refused before the model loads
    if task_names == "all":
        chosen = list(TASKS)
    elif task_names == "none":
        chosen = []
    else:
        chosen = [get_task(name.strip()) for name in task_names.split(",") if name.strip()]
    model = builtin.load(model_name, device=device, cache_dir=cache_dir)
    check_attributable(model)  # transcoders the method would refuse are not trained
    if task_names != "all":  # a task named that the model cannot run is refused before training
        for task in chosen:
            task.check_model(model)
            task.make_data(model, n_prompts, seed)
    chosen_layers = tc.parse_layers(layers, model)
    data = tc.load_corpus(model, corpus, context, seed, max_tokens, text)
    given = click.get_current_context().get_parameter_source("context")
    if context > model.n_ctx and given != ParameterSource.DEFAULT:  # load_corpus cuts it
        announce(
            f"note: --context {context} is more than {model.name}'s context of {model.n_ctx} "
            f"tokens: sequences have at most {model.n_ctx}"
        )
    if not tc.holds_out(data):
        announce(
            f"note: the corpus makes one sequence ({data.n_tokens} tokens): the FVE, L0 and "
            "dead features are measured on the training tokens, none held out (give a longer "
            "--corpus or a smaller --context)"
        )
    if batch_tokens > data.n_tokens:  # the buffer repeats the corpus, as the built-in cache's
        announce(
            f"note: --batch-tokens {batch_tokens} is more than the corpus's {data.n_tokens} "
            "tokens: each step's batch repeats them (a larger --corpus gives more to learn from)"
        )
    settings = tc.TrainingSettings(
        n_features=n_features or 4 * model.d_model,
        l1=l1,
        steps=steps,
        batch_tokens=batch_tokens,
        lr=lr,
        seed=seed,
        refit=refit,
    )
    # another run given this --out (new, or resuming the same checkpoints) is refused
    with claim_directory(out, new=state is None):
        resume = None
        if state is not None:
            if tc.interrupted_run(out) is None:
                raise CircuitxError(f"--out {out} was finished by another run meanwhile")
            resume = tc.load_interrupted(state, model, chosen_layers, data, settings)
            announce(f"resuming the run interrupted at step {resume['step']} in {out}")
        with progress_bar(f"training {len(chosen_layers)} transcoders", steps) as advance:
            result = tc.train_and_report(
                model, chosen_layers, data, settings, out, chosen, n_prompts, checkpoint_every,
                advance, resume,
            )  # fmt: skip
    if as_json:
        print_json(result)
        return
    console = stdout()
    layers_table = Table(title=f"transcoders for {model.name} -> {out}")
    for column in ("layer", "FVE", "L0", "dead"):
        layers_table.add_column(column)
    for layer, quality in result["layers_quality"].items():
        layers_table.add_row(
            layer,
            fmt(quality["fraction_of_variance_explained"]),
            fmt(quality["l0"]),
            fmt(quality["dead_fraction"]),
        )
    console.print(layers_table)
    tasks_table = Table(title="task metric, MLPs replaced by transcoders")
    for column in ("task", "metric", "original", "replaced", "|change| / |original|"):
        tasks_table.add_column(column)
    unmeasured = {}
    for task, row in result["task_metric_replaced"].items():
        if "error" in row:
            unmeasured[task] = row["error"]
        else:
            tasks_table.add_row(
                task,
                row["metric"],
                fmt(row["original"]),
                fmt(row["replaced"]),
                fmt(row["relative_change"]),
            )
    if tasks_table.row_count:
        console.print(tasks_table)
    if unmeasured and task_names == "all":  # the tasks this model cannot run: one line
        console.print(
            f"not measured, as the model cannot run them: {', '.join(unmeasured)} "
            "(--json says why)",
            soft_wrap=True,
        )
    else:
        for task, why in unmeasured.items():
            console.print(f"{task} not measured: {why}", soft_wrap=True, markup=False)
    resumed = result.get("resumed_from_step")
    tokens = result["training_tokens"]
    if resumed:  # the seconds are this run's: the tokens trained since the checkpoint
        tokens = (result["steps"] - resumed) * result["batch_tokens"]
    console.print(
        f"{tokens} tokens in {result['train_seconds']:.1f} s "
        f"({result['seconds_per_layer_per_million_tokens']:.1f} s per layer per million tokens)"
        + (
            f", resumed at step {resumed} ({result['training_tokens']} tokens in all)"
            if resumed
            else ""
        )
    )
