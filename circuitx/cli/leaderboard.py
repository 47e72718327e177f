"""``circuitx leaderboard``: every method on every task, in one table."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from circuitx.cli.common import (
    backup_rounds_option,
    cache_dir_option,
    device_options,
    json_option,
    max_memory_option,
    note,
    positions_option,
    print_json,
    stdout,
    to_stderr,
)
from circuitx.errors import MAX_JOBS, MAX_SEED, MAX_THREADS
from circuitx.leaderboard import (
    COLUMNS,
    STANDARD_VARIANTS,
    non_defaults,
    parse_methods,
    parse_names,
    parse_options,
    parse_references,
    plan_grid,
    run_leaderboard,
    table,
    tasks_for,
)
from circuitx.patching import ABLATIONS
from circuitx.progress import counted
from circuitx.tasks import TASKS
from circuitx.tasks.pairs import is_task_file


def results_table(rows: list[dict[str, Any]], title: str, width: int) -> Table:
    """The leaderboard's rows as a table for a terminal ``width`` columns wide, whose text
    folds onto more lines where it is narrow (never cut short to "0.9…"); rows wider than
    the terminal show the means without the ± std."""
    headings, body = table(rows)
    widest = [max(len(text) for text in column) for column in zip(headings, *body)]
    means_only = sum(widest) + 3 * len(widest) + 1 > width
    if means_only and any(" ± " in text for cells in body for text in cells):
        body = [[text.split(" ± ")[0] for text in cells] for cells in body]
        title = f"{title} (means; ± std in results.md)"  # not for one seed: it has none
    # narrow: no padding beside the borders, so that the numbers keep their whole width
    shown = Table(title=title, padding=(0, 0) if means_only else (0, 1))
    for index, heading in enumerate(headings):
        numeric = 2 <= index < 2 + len(COLUMNS)
        longest = max((len(cells[index]) for cells in body), default=1) if numeric else None
        shown.add_column(
            heading, justify="right" if numeric else "left", overflow="fold", min_width=longest
        )
    for cells_shown in body:
        shown.add_row(*cells_shown)
    return shown


@click.command()
@click.option(
    "--tasks",
    "tasks_spec",
    default="all",
    show_default=True,
    help="Comma-separated task names or task files, or all (a family's tasks; on another "
    "model, every task but tracr).",
)
@click.option(
    "--methods",
    "methods_spec",
    default="all",
    show_default=True,
    help="Comma-separated method names, a method with options of its own as a row "
    "(eap[qk-fix=on]), or all (every method, and the variants "
    + ", ".join(STANDARD_VARIANTS)
    + ").",
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
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED), help="The first seed."
)
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
    type=click.Choice(list(ABLATIONS)),
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
    type=click.IntRange(1, MAX_JOBS),
    help="Cells run at once: 1 runs them in this process, N > 1 in N worker processes (or "
    "N Ray tasks).",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, MAX_THREADS),
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
    "--option",
    "option_specs",
    multiple=True,
    metavar="METHOD.NAME=VALUE",
    help="A method option for every cell of that method, e.g. acdc.tau=0.05 (repeatable); "
    "it enters the cells' keys.",
)
@click.option(
    "--reference",
    "reference_specs",
    multiple=True,
    metavar="TASK=REFERENCE",
    help="A task's reference, as discover's --reference takes it, e.g. "
    "my-task.jsonl=my-circuit.graphml (repeatable); other tasks: auto.",
)
@backup_rounds_option
@cache_dir_option
@max_memory_option
@positions_option
@json_option
@device_options
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
    option_specs,
    reference_specs,
    backup_rounds,
    cache_dir,
    max_memory,
    positions,
    as_json,
    device,
    dtype,
) -> None:
    """Run every (task, method) cell over seeds, score each against the reference, and
    print the leaderboard.

    Writes results.json, results.csv, results.md, ROC and faithfulness plots per task, and
    index.html (the table, the plots, and a link to each cell's circuit as an interactive
    page) to --out. Finished cells are kept under --out/cells by a key of their full
    configuration, so a rerun (after an interruption, or with more tasks) runs only the
    rest. A failing cell shows its error in the table, and the command exits 1.
    """
    tasks = parse_names(tasks_spec, list(TASKS), "task", tasks_for(model_name), is_task_file)
    specs = parse_methods(methods_spec)
    options = parse_options(list(option_specs), [spec.method for spec in specs])
    grid = plan_grid(
        model_name, tasks, specs, methods_spec.strip() == "all", options,
        parse_references(reference_specs, tasks), seeds, seed, n_prompts, ablation, jobs,
        threads, executor, backup_rounds, positions, device, dtype, cache_dir, max_memory,
    )  # fmt: skip
    for line in grid.notes:  # before the run, which may be long
        note(line)
    cells = grid.cells
    board = run_leaderboard(cells, out_dir, jobs, executor, threads, grid.settings, grid.notes)
    for line in board.said:
        to_stderr(line)  # each says what it is: note or warning
    if as_json:
        print_json(
            {
                "rows": board.rows,
                "files": board.files,
                "resumed": board.resumed,
                "failed": board.failed,
                "not_applicable": board.not_applicable,
            }
        )
    else:
        settings = "".join(f"; {text}" for text in non_defaults(cells))
        title = f"circuitx leaderboard: {model_name}, {seeds} seed(s){settings}"
        console = stdout()
        if not console.is_terminal:  # piped: no terminal width to fit, keep rows on one line
            console.width = 240
        console.print(results_table(board.rows, title, console.width))
    resumed = ""
    if board.resumed:
        resumed = f" ({counted(board.resumed, 'cell')} from an earlier run)"
    to_stderr(
        f"wrote index.html, results.json, .csv, .md, plots and circuit pages to {out_dir}{resumed}"
    )
    where = "the rows' error fields give" if as_json else "the table shows"
    if board.not_applicable:
        note(
            f"{board.not_applicable} of {len(cells)} cells are not applicable (a method "
            f"that cannot run on the model by its design); {where} why"
        )
    if board.failed:
        to_stderr(f"{board.failed} of {len(cells)} cells failed; {where} their errors")
        sys.exit(1)
