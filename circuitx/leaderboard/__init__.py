"""The leaderboard: every (task, method) cell over seeds, on one model or each task's planted
model, scored against the reference; resumable, and parallel on local processes or Ray."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from circuitx import builtin
from circuitx.discovery.references import resolve_reference
from circuitx.discovery.run import model_id
from circuitx.errors import CircuitxError, deferred_interrupts, first_line
from circuitx.files import (
    check_directory_can_be_made,
    check_parent_directory,
    json_text,
    written_together,
)
from circuitx.leaderboard.cells import NOT_APPLICABLE, Cell, load_cached, run_cell
from circuitx.leaderboard.clock import CellClock
from circuitx.leaderboard.executors import EXECUTORS, check_not_a_worker, execute
from circuitx.leaderboard.grid import (
    STANDARD_VARIANTS,
    VARIANT,
    Grid,
    MethodSpec,
    check_references,
    make_grid,
    merged_notes,
    method_option,
    methods_over_positions,
    parse_method,
    parse_methods,
    parse_names,
    parse_options,
    parse_references,
    plan_grid,
    tasks_for,
)
from circuitx.leaderboard.plots import faithfulness_figure, method_styles, roc_figure
from circuitx.leaderboard.report import (
    PAGES,
    file_stem,
    page_name,
    write_circuit_pages,
    write_report,
)
from circuitx.leaderboard.results import (
    COLUMNS,
    HEADINGS,
    CellStore,
    csv_text,
    leaderboard_rows,
    markdown,
    table,
    tasks_on_several_models,
    write_text,
)
from circuitx.progress import announce, counted, draws_bars, progress_bar
from circuitx.reference import read_reference
from circuitx.tasks import TASKS, FileTask, get_task
from circuitx.tasks.base import position_layout
from circuitx.transcoders import transcoders_for
from circuitx.version import __version__

__all__ = [
    "COLUMNS",
    "Cell",
    "EXECUTORS",
    "Grid",
    "HEADINGS",
    "Leaderboard",
    "MethodSpec",
    "STANDARD_VARIANTS",
    "check_references",
    "make_grid",
    "merged_notes",
    "methods_over_positions",
    "method_option",
    "non_defaults",
    "parse_method",
    "parse_methods",
    "parse_names",
    "parse_options",
    "parse_references",
    "plan_grid",
    "run_cell",
    "run_leaderboard",
    "table",
    "tasks_for",
    "warning_notes",
]


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    records: list[dict[str, Any]]  # one per cell, in the grid's order
    files: dict[str, str] = field(default_factory=dict)
    resumed: int = 0  # cells found finished by an earlier run
    said: list[str] = field(default_factory=list)  # the runs' notes and warnings (warning_notes)

    @property
    def errors(self) -> list[str]:
        """The failed cells' errors, in the grid's order (not the cells not applicable)."""
        return [r["error"] for r in self.records if r["status"] not in ("ok", NOT_APPLICABLE)]

    @property
    def failed(self) -> int:
        return len(self.errors)

    @property
    def not_applicable(self) -> int:
        return sum(record["status"] == NOT_APPLICABLE for record in self.records)


def run_leaderboard(
    cells: list[Cell],
    out_dir: str | Path,
    jobs: int = 1,
    executor: str = "local",
    threads: int = 1,
    settings: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> Leaderboard:
    """Run the cells not finished in ``out_dir`` already, then write results.json/.csv/.md
    and the plots there. ``settings`` (the command's options) go into results.json, and
    ``notes`` (the grid's: methods left out or merged) there and into the report."""
    check_not_a_worker(jobs if executor == "local" else 1)
    if not cells:
        raise CircuitxError("the leaderboard has no cells to run")
    # before any model loads: an empty --out, a file, /proc/x (takes no files) are refused
    out_dir = check_directory_can_be_made(out_dir, "--out")
    check_parent_directory(out_dir)
    check_result_paths(out_dir, cells)
    check_cells(cells)
    first = cells[0].request
    for name in dict.fromkeys(cell.model for cell in cells):  # unknown models fail here, once
        if name not in builtin.FAMILIES:
            load_cached(name, first.device, first.dtype, first.cache_dir)
    check_reference_files(cells)
    check_task_files(cells)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise CircuitxError(f"cannot write the results directory {out_dir}: {error}") from None
    try:
        return _run(cells, out_dir, jobs, executor, threads, settings, notes)
    except BaseException:
        if made:  # an interrupted first run that finished no cell leaves nothing behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def check_result_paths(out_dir: Path, cells: list[Cell]) -> None:
    """Fail in one line, before any cell runs, where ``out_dir`` holds something else at a
    path the leaderboard writes: a directory where a file of its goes, a file where a
    folder of its goes (a trial's ran every cell and then failed, or failed midway)."""
    if not out_dir.is_dir():
        return
    files = [out_dir / name for name in ("results.json", "results.csv", "results.md")]
    files += [
        out_dir / "index.html",
        *out_dir.glob("roc-*.png"),
        *out_dir.glob("faithfulness-*.png"),
    ]
    files += [out_dir / "cells" / f"{cell.key}.json" for cell in cells]
    files += [out_dir / PAGES / page_name(cell) for cell in cells]
    for path in files:
        if path.is_dir():
            raise CircuitxError(f"{path} is a directory, where the leaderboard writes a file")
    for folder in (out_dir / "cells", out_dir / PAGES):
        if folder.exists() and not folder.is_dir():
            raise CircuitxError(f"{folder} is a file, where the leaderboard keeps a folder")


def check_cells(cells: list[Cell]) -> None:
    """Refuse a grid none of whose cells can run, with the first cell's error; a grid with
    some such cells runs the rest, and the table shows the errors. A cell can run where
    its model reads its task's prompts (planted-ioi has no greater-than years) and, over
    positions, they make its positions (``--positions all`` needs one length)."""
    errors = []
    for cell in cells:
        try:
            request = cell.request.validated(refuse_model=False)  # as methods_for_model did
            if request.model in builtin.FAMILIES:  # a cell that names a family finds none
                builtin.FAMILIES[request.model].model_for(request.task_name)
                return
            model = load_cached(request.model, request.device, request.dtype, request.cache_dir)
            task = get_task(request.task, request.corruption, request.task_format)
            with torch.random.fork_rng(devices=[]):  # as discover draws them (and fails)
                torch.random.default_generator.manual_seed(request.seed)
                data = task.make_data(model, request.n_prompts, request.seed)
            if request.positions != "none":
                position_layout(model.layout, task, data, request.positions, model.causal)
            return
        except CircuitxError as error:
            errors.append((cell, error))
    cell, error = errors[0]
    raise CircuitxError(f"no cell can run; {cell.task} / {cell.method}: {first_line(error)}")


def check_task_files(cells: list[Cell]) -> None:
    """Refuse, before any cell runs, a task file a model of the grid cannot read (a word
    its tokenizer lacks, a token id past its vocabulary, an answer of two tokens), in the
    words ``discover`` refuses it with; each file is checked once for each model."""
    requests = {
        (c.request.task, c.model): c.request for c in cells if c.model not in builtin.FAMILIES
    }
    for request in requests.values():
        task = get_task(request.task, request.corruption, request.task_format)
        if isinstance(task, FileTask):
            model = load_cached(request.model, request.device, request.dtype, request.cache_dir)
            task.check_model(model)
            task.make_data(model, request.n_prompts, request.seed)


def _run(
    cells: list[Cell],
    out_dir: Path,
    jobs: int,
    executor: str,
    threads: int,
    settings: dict[str, Any] | None,
    notes: Sequence[str],
) -> Leaderboard:
    store = CellStore(out_dir / "cells")
    records = {cell.key: store.get(cell.key) for cell in cells}
    pending = [cell for cell in cells if records[cell.key] is None]
    train_transcoders_first(pending)
    running: list[str] = []
    clock = CellClock(cells, records, jobs)
    resumed = len(cells) - len(pending)
    elsewhere = [
        r["threads"] for r in records.values() if r and r.get("threads") not in (None, threads)
    ]
    if elsewhere:  # float sums depend on the thread count: a trial's resume reused them silently
        on = " and ".join(map(str, sorted(set(elsewhere))))
        announce(
            f"note: {counted(len(elsewhere), 'resumed cell')} ran on {on} torch "
            f"thread{'' if on == '1' else 's'}, not "
            f"--threads {threads}: kept as they are (their last float bits may differ; delete "
            "their files in cells/ to run them again)"
        )

    width = RUNNING_WIDTH if draws_bars() else None  # a bar's label, or a log's line
    with progress_bar("leaderboard", len(cells), start=resumed, time_left=clock) as advance:

        def on_start(cell: Cell) -> None:
            running.append(cell.label)
            clock.start(cell)
            advance(0, description=running_text(running, width))

        def on_done(cell: Cell, record: dict[str, Any]) -> None:
            store.put(record)
            records[cell.key] = record
            clock.done(cell, record)
            running.remove(cell.label)
            # with no cell running (--jobs 1, between cells), the one that finished
            advance(
                1, description=running_text(running, width) if running else f"finished {cell.label}"
            )

        execute(pending, jobs, executor, threads, on_start, on_done)

    rows = leaderboard_rows(cells, records)
    ran = [records[cell.key] for cell in cells]
    board = Leaderboard(rows, ran, resumed=resumed, said=warning_notes(cells, ran))
    with deferred_interrupts():  # the files of one table: a Ctrl-C waits for them all
        board.files = write_results(out_dir, cells, board, settings or {}, notes)
    return board


RUNNING_WIDTH = 40  # characters of the bar's label: the counts and times keep their room


def running_text(running: list[str], width: int | None = RUNNING_WIDTH) -> str:
    """The bar's label: the cells running, or how many and the first (a trial's 80-column
    terminal cut the elapsed time to "0:00:" under the names of two cells); ``width``
    None: whole (a log's line has the room)."""
    text = f"running {', '.join(running)}"
    if width is None or len(text) <= width:
        return text
    first = running[0] if len(running) == 1 else f"{len(running)} cells: {running[0]}"
    text, tail = f"running {first}", " / " + running[0].rsplit(" / ", 1)[-1]  # its seed
    return text if len(text) <= width else text[: width - len(tail) - 1] + "…" + tail


def train_transcoders_first(cells: list[Cell]) -> None:
    """Train the built-in transcoders the transcoder cells need (those not yet cached)
    before any cell runs, with the first-use line and bar ``discover`` shows: inside a
    cell, where bars are silenced, the training went unsaid (84-296 s a planted model)."""
    needed = dict.fromkeys(
        (r.model, r.device, r.dtype, r.cache_dir)
        for r in (cell.request for cell in cells)
        if r.method == "transcoder" and r.options.get("transcoders") is None
    )
    for name, device, dtype, cache_dir in needed:
        model = load_cached(name, device, dtype, cache_dir)
        if model.builtin:
            transcoders_for(model, None, cache_dir)  # where cached, a load


def warning_notes(cells: list[Cell], records: list[dict[str, Any]]) -> list[str]:
    """Why a task has no reference (a note), and the warnings of the cells' runs (an
    empty circuit, a model that does not do the task, ...: said as ``warning:``, as
    discover says them), one line per row and warning, naming the seeds it came at; one
    line for a task where every row of it says the same at the same seeds (a task file's
    own warning, a model that does not do the task: a trial's came once per row)."""
    seeds: dict[tuple[str, str, str, str], list[int]] = {}
    rows: dict[tuple[str, str], set[str]] = {}
    for cell, record in zip(cells, records):
        rows.setdefault((cell.task, cell.model), set()).add(cell.method)
        for line in (record.get("result") or {}).get("warnings", []):
            seeds.setdefault((cell.task, cell.model, cell.method, line), []).append(cell.seed)
    said_by: dict[tuple[str, str, str], dict[str, list[int]]] = {}  # the rows saying a line
    for (task, model, method, line), at in seeds.items():
        said_by.setdefault((task, model, line), {})[method] = at
    said = [
        f"note: {task} on {model}: {why}"
        for (task, model), why in unreferenced(cells, records).items()
    ]
    for (task, model, method, line), at in seeds.items():
        at_seeds = f"seed{'s' if len(at) > 1 else ''} {', '.join(map(str, at))}"
        by = said_by[task, model, line]
        every = len(by) > 1 and set(by) == rows[task, model] and all(a == at for a in by.values())
        if not every:
            said.append(f"warning: {task} / {method} on {model}, {at_seeds}: {line}")
        elif method == next(iter(by)):  # said once, at the first row that says it
            said.append(f"warning: {task} / every method on {model}, {at_seeds}: {line}")
    if any(" --" in line for *_, line in seeds):  # a trial's "raise --ep-steps"
        said.append(
            "note: the warnings name discover's flags: here a method's option is --option "
            "METHOD.NAME=VALUE (--option edge-pruning.ep_steps=600), and a selection's "
            "--threshold or --top-k is discover's alone"
        )
    return said


def unreferenced(cells: list[Cell], records: list[dict[str, Any]]) -> dict[tuple, str]:
    """(task, model) -> why it has no reference (its rows' scores are "-"), for the pairs
    whose cells ran without one."""
    found = {}
    for cell, record in zip(cells, records):
        note = (record.get("result") or {}).get("reference_note")
        if note and (record.get("result") or {}).get("reference") is None:
            found.setdefault((cell.task, cell.model), note.removeprefix("no reference: "))
    return found


def check_reference_files(cells: list[Cell]) -> None:
    """Refuse a reference (a file, or a task's published circuit by name) that does not
    fit a model its task runs on: every cell of the pair would fail with it. A reference
    another task's circuit makes, found by each cell's method, is left to the cells."""
    first = cells[0].request
    pairs = dict.fromkeys((c.model, c.request.reference, c.request.task_name) for c in cells)
    for name, reference, task in pairs:
        base = reference.partition(":")[0]
        named = base in TASKS and TASKS[base].reference_task is None
        if name in builtin.FAMILIES or not (Path(reference).is_file() or named):
            continue
        model = load_cached(name, first.device, first.dtype, first.cache_dir)
        try:
            if named:
                resolve_reference(
                    reference, task, model_id(model),
                    (model.n_layers, model.n_heads, model.has_mlp),
                    planted=model.builtin or model.source, cache_dir=first.cache_dir,
                )  # fmt: skip
            else:
                read_reference(reference, model.n_layers, model.n_heads, model.has_mlp)
        except CircuitxError as error:
            raise CircuitxError(f"on model {name}: {error}") from None


def caption(cells: list[Cell], board: Leaderboard, date: str) -> str:
    """The table's caption: models, prompts, seeds, when the cells ran (``date``, the
    writing time, for cells that do not record it) and on which machines."""
    models = sorted({cell.model for cell in cells})
    seeds = sorted({cell.seed for cell in cells})
    machines = sorted({r["machine"] for r in board.records if r.get("machine")})
    times = sorted(r.get("finished_at") or date for r in board.records)
    when = times[0] if times[0] == times[-1] else f"{times[0]} to {times[-1]}"
    seed_text = (
        f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]} (mean ± std)"
    )
    settings = "".join(f"; {text}" for text in non_defaults(cells))
    n = cells[0].n_prompts
    ran = {  # a task with fewer pairs than asked runs them all
        (cell.task, r["result"]["n_prompts"])
        for cell, r in zip(cells, board.records)
        if r.get("status") == "ok" and r["result"].get("n_prompts") not in (None, n)
    }
    fewer = f" ({', '.join(f'{t}: {k}' for t, k in sorted(ran))}, all a task has)" if ran else ""
    threads = sorted({r["threads"] for r in board.records if r.get("threads")})
    on = f"; on {' and '.join(map(str, threads))} torch threads a cell" if len(threads) > 1 else ""
    missing = unreferenced(cells, board.records)
    dashes = (
        f" No reference for {', '.join(f'{t} on {m}' for t, m in missing)}, so their scores "
        'are "-" (results.json\'s reference_note says why).'
        if missing
        else ""
    )
    return (
        f"circuitx {__version__} leaderboard on {', '.join(models)}: {n} prompts{fewer}, "
        f"{seed_text}{settings}; node P/R/F1 at each method's default selection; "
        f"runtime is the discovery's wall time per cell. Cells run {when} on "
        f"{'; '.join(machines) or 'no machine'}{on}.{dashes}"
    )


def non_defaults(cells: list[Cell]) -> list[str]:
    """The settings the cells ran with that the table's rows do not show: a dtype other
    than float32, an ablation other than the corrupted run, positions, backup rounds, a
    task's reference other than ``auto``, and each row's options beyond those its label
    names (``--option``)."""
    first = cells[0].request
    texts = [] if first.dtype in (None, "float32") else [str(first.dtype)]
    texts += [] if first.ablation == "corrupted" else [f"{first.ablation} ablation"]
    if first.positions != "none":
        texts.append(f"positions {first.positions}")
    rounds = max(cell.request.backup_rounds for cell in cells)
    if rounds:
        texts.append(f"{rounds} backup round(s)")
    for task, reference in dict.fromkeys((c.request.task, c.request.reference) for c in cells):
        if reference != "auto":
            texts.append(f"{task} scored against {reference}")
    for label, options in dict.fromkeys(
        (cell.method, tuple(cell.request.options.items())) for cell in cells
    ):
        named = VARIANT.match(label).group(2) or ""
        own = {item.partition("=")[0].strip().replace("-", "_") for item in named.split(",")}
        shown = [f"{key.replace('_', '-')}={value}" for key, value in options if key not in own]
        if shown:
            texts.append(f"{label} with {', '.join(shown)}")
    return texts


GRAPH_KEYS = ("graph", "reference_circuit")  # what a cell's record keeps for its drawing


def write_results(
    out_dir: Path,
    cells: list[Cell],
    board: Leaderboard,
    settings: dict[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, str]:
    """Write results.json, results.csv, results.md, the per-task plots, each cell's
    circuit page and index.html; return their paths (the pages' folder as ``circuits``).
    ``notes``: the grid's, which results.json and the report keep beside the runs'."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    earlier = written_before(out_dir)
    files = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
    }
    said = [*notes, *board.said]
    document = {
        "circuitx": __version__,
        "date": date,
        "settings": settings,
        "notes": [line.removeprefix("note: ") for line in said if line.startswith("note: ")],
        "warnings": [
            line.removeprefix("warning: ") for line in said if line.startswith("warning: ")
        ],
        "rows": board.rows,
        # the graphs stay in the cells' own files: results.json is the numbers
        "cells": [{k: v for k, v in r.items() if k not in GRAPH_KEYS} for r in board.records],
    }
    title = caption(cells, board, date)
    pages_dir = out_dir / PAGES
    made_pages_dir = not pages_dir.exists()
    try:
        with written_together():  # this run's files, or (one failing) the earlier run's
            write_text(files["csv"], csv_text(board.rows))
            write_text(files["markdown"], markdown(board.rows, title))
            drawn = write_figures(out_dir, cells, board.records)
            files.update(drawn)
            figures = [path.name for path in drawn.values()]
            pages = write_circuit_pages(out_dir, cells, board.records)
            if pages:
                files[PAGES] = out_dir / PAGES
            files["html"] = out_dir / "index.html"
            write_report(files["html"], cells, board.rows, title, figures, pages, said)
            written = sorted({*figures, *pages.values()})
            write_text(files["json"], json_text({**document, "written": written}, indent=1))
    except BaseException:
        if made_pages_dir:  # this run's, left empty where its pages were not moved in
            with contextlib.suppress(OSError):
                pages_dir.rmdir()
        raise
    for name in sorted(set(earlier) - set(written)):  # of a task or method no longer here
        (out_dir / name).unlink(missing_ok=True)
    return {name: str(path) for name, path in files.items()}


def write_figures(
    out_dir: Path, cells: list[Cell], records: list[dict[str, Any]]
) -> dict[str, Path]:
    """The ROC and faithfulness figures of the finished cells, a pair per task (or per task
    and model where a task runs on several models), by name."""
    figures: dict[str, Path] = {}
    shared = tasks_on_several_models(cells)
    styles = method_styles(dict.fromkeys(cell.method for cell in cells))
    for task, model in dict.fromkeys((cell.task, cell.model) for cell in cells):
        name, label = task, task
        if task in shared:
            name, label = f"{task}-{model}", f"{task} ({model})"
        name = file_stem(name)  # a task file's name may hold a space, a bar or a hash
        roc: dict[str, dict[str, list]] = {}
        faith: dict[str, list] = {}
        signed: dict[str, list] = {}  # CPR's curves (cells run before they were kept: none)
        for cell, record in zip(cells, records):
            if (cell.task, cell.model) != (task, model) or record["status"] != "ok":
                continue
            result = record["result"]
            for level, curve in (result["roc"] or {}).items():
                if curve:
                    roc.setdefault(cell.method, {}).setdefault(level, []).append(curve)
            if result["faithfulness_curve"]:
                faith.setdefault(cell.method, []).append(result["faithfulness_curve"])
            if result.get("cpr_curve"):
                signed.setdefault(cell.method, []).append(result["cpr_curve"])
        if roc_figure(label, roc, out_dir / f"roc-{name}.png", styles):
            figures[f"roc-{name}"] = out_dir / f"roc-{name}.png"
        if faithfulness_figure(label, faith, out_dir / f"faithfulness-{name}.png", styles, signed):
            figures[f"faithfulness-{name}"] = out_dir / f"faithfulness-{name}.png"
    return figures


def written_before(out_dir: Path) -> list[str]:
    """The figures and circuit pages an earlier run into ``out_dir`` wrote (its
    results.json lists them), relative to it; none where it has no such list. Only these
    are removed when this run does not write them again: other files there are the
    user's."""
    try:
        names = json.loads((out_dir / "results.json").read_text()).get("written")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(names, list):
        return []
    return [
        name
        for name in names
        if isinstance(name, str) and not Path(name).is_absolute() and ".." not in Path(name).parts
    ]
