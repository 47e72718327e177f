"""The leaderboard: every (task, method) cell over seeds, on one model or each task's planted
model, scored against the reference; resumable, and parallel on local processes or Ray."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Integral
from os import PathLike, fspath
from pathlib import Path
from typing import Any

from circuitx import builtin
from circuitx.discovery import DiscoveryRequest, check_reference
from circuitx.errors import MAX_BACKUP_ROUNDS, MAX_JOBS, MAX_SEED, CircuitxError, first_line
from circuitx.files import check_parent_directory, json_text
from circuitx.leaderboard.cells import Cell, load_cached, run_cell
from circuitx.leaderboard.executors import EXECUTORS, execute
from circuitx.leaderboard.plots import faithfulness_figure, roc_figure
from circuitx.leaderboard.report import PAGES, write_circuit_pages, write_report
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
from circuitx.methods import METHODS, get_method
from circuitx.patching import ABLATIONS
from circuitx.progress import progress_bar
from circuitx.tasks import TASKS, get_task
from circuitx.tasks.base import POSITION_MODES
from circuitx.version import __version__

__all__ = [
    "COLUMNS",
    "EXECUTORS",
    "HEADINGS",
    "Cell",
    "STANDARD_VARIANTS",
    "Leaderboard",
    "MethodSpec",
    "check_grid",
    "check_references",
    "make_grid",
    "non_defaults",
    "parse_methods",
    "parse_names",
    "parse_options",
    "parse_references",
    "run_cell",
    "run_leaderboard",
    "table",
]


@dataclass
class Leaderboard:
    rows: list[dict[str, Any]]
    records: list[dict[str, Any]]  # one per cell, in the grid's order
    files: dict[str, str] = field(default_factory=dict)
    resumed: int = 0  # cells found finished by an earlier run

    @property
    def failed(self) -> int:
        return sum(record["status"] != "ok" for record in self.records)


def tasks_for(model: str) -> list[str]:
    """What ``--tasks all`` means on ``model``: a family's tasks; on any other model, every
    task that does not need a model family of its own."""
    if model in builtin.FAMILIES:
        return [task for task in TASKS if task in builtin.FAMILIES[model].members]
    return [name for name, task in TASKS.items() if task.model_family is None]


def parse_names(
    spec: str,
    known: list[str],
    what: str,
    every: list[str] | None = None,
    also: Callable[[str], bool] | None = None,
) -> list[str]:
    """``all`` (``every``, default ``known``) or a comma-separated list of names from
    ``known`` (or that ``also`` accepts: task files), in the order given."""
    if spec.strip() == "all":
        return list(known if every is None else every)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise CircuitxError(f"no {what} given; choose from all, {', '.join(known)}")
    unknown = [n for n in names if n not in known and not (also is not None and also(n))]
    if unknown:
        raise CircuitxError(
            f"unknown {what} {', '.join(map(repr, unknown))}; choose from all, {', '.join(known)}"
        )
    return list(dict.fromkeys(names))


def parse_references(specs: Sequence[str], tasks: Sequence[str]) -> dict[str, str]:
    """``TASK=REFERENCE`` specs (``TASK`` as ``--tasks`` names it) as a task -> reference
    map (see :func:`check_references`)."""
    references: dict[str, str] = {}
    for spec in specs:
        task, _, reference = spec.partition("=")
        if task not in tasks or not reference:
            raise CircuitxError(
                f"--reference {spec!r}: give TASK=REFERENCE with TASK one of --tasks "
                f"({', '.join(tasks)})"
            )
        references[task] = reference
    return check_references(references, tasks)


def check_references(references: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, str]:
    """A task -> reference map, each task one of ``tasks`` and each reference checked as
    ``discover --reference`` checks it; a task not named keeps ``auto``."""
    checked = {}
    for task, reference in references.items():
        if task not in tasks:
            raise CircuitxError(
                f"references name task {task!r}, which is not among the tasks ({', '.join(tasks)})"
            )
        if not isinstance(reference, (str, PathLike)):
            raise CircuitxError(
                f"the reference of {task} takes a name or a graph file, not "
                f"a {type(reference).__name__}"
            )
        check_reference(fspath(reference), get_task(task).name)
        checked[task] = fspath(reference)
    return checked


# Rows ``--methods all`` adds to each method at its defaults: a method with options that
# make a different published method (AtP*'s QK fix on EAP's edges; MIB's EAP-IG over the
# activations)
STANDARD_VARIANTS = ("eap[qk-fix=on]", "eap-ig[ig-mode=activations]")


@dataclass(frozen=True)
class MethodSpec:
    """A leaderboard row's method: a registered method and options of its own (a variant,
    written ``eap[qk-fix=on]``), which its cells' requests take over ``--option``'s."""

    method: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        """The row's name: the method's, with its options in brackets."""
        if not self.options:
            return self.method
        shown = ",".join(f"{name.replace('_', '-')}={value}" for name, value in self.options)
        return f"{self.method}[{shown}]"


VARIANT = re.compile(r"^([A-Za-z0-9_-]+)(?:\[([^\[\]]*)\])?$")


def parse_method(text: str) -> MethodSpec:
    """``NAME`` or ``NAME[OPTION=VALUE,...]``, each option parsed and checked by the
    method's declaration."""
    match = VARIANT.match(text.strip())
    settings = [] if match is None else [s for s in (match.group(2) or "").split(",") if s]
    if match is None or any("=" not in setting for setting in settings):
        raise CircuitxError(f"--methods takes NAME or NAME[OPTION=VALUE,...], not {text!r}")
    if match.group(2) is not None and not settings:
        raise CircuitxError(f"--methods: {text!r} sets no option; write {match.group(1)}")
    method = get_method(match.group(1))
    options: dict[str, Any] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        key, parsed = method_option(method.name, name.strip(), value.strip(), text)
        if key in options:
            raise CircuitxError(f"--methods: {text!r} sets {name.strip()} twice")
        options[key] = parsed
    return MethodSpec(method.name, tuple(options.items()))


def method_option(method_name: str, name: str, text: str, where: str = "") -> tuple[str, Any]:
    """The option ``name`` (dashes or underscores) of a method and the value ``text``
    gives it, parsed and checked by the method's declaration; ``where``: the setting it
    came from, named in the error."""
    declared = {option.name: option for option in get_method(method_name).options}
    key = name.replace("-", "_")
    if key not in declared:
        known = ", ".join(declared) or "none"
        within = f" in {where!r}" if where else ""
        raise CircuitxError(f"{method_name} has no option {name!r}{within} (its options: {known})")
    return key, declared[key].parse(text)


def parse_methods(spec: str) -> list[MethodSpec]:
    """``all`` (every registered method, then :data:`STANDARD_VARIANTS`) or a comma-separated
    list of methods and variants (commas inside brackets separate a variant's options)."""
    if spec.strip() == "all":
        return [MethodSpec(name) for name in METHODS] + [parse_method(v) for v in STANDARD_VARIANTS]
    items = [item for item in re.split(r",(?![^\[]*\])", spec) if item.strip()]
    if not items:
        raise CircuitxError(f"unknown method {spec!r}; choose from all, {', '.join(METHODS)}")
    return list(dict.fromkeys(parse_method(item) for item in items))


def make_grid(
    tasks: list[str],
    methods: Sequence[str | MethodSpec],
    model: str,
    seeds: list[int],
    n_prompts: int = 50,
    ablation: str = "corrupted",
    device: str | None = None,
    dtype: str = "float32",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | None = None,
    max_memory: int | None = None,
    backup_rounds: int = 0,
    positions: str = "none",
    references: Mapping[str, str] | None = None,
) -> list[Cell]:
    """Every (task, model, method, seed) cell. A family (``planted``, ``tracr``) stands for
    its models for each task; a task the family has no model for makes error cells.
    ``methods``: names or :class:`MethodSpec` (variants); ``options`` maps a method to its
    non-default options (a variant's own win). Cells of one model are adjacent, so a
    process loads it once. ``backup_rounds`` applies to the methods that score through
    the engine (see :class:`circuitx.methods.Method`); the others run without.
    ``positions``: circuits over token positions (a method that cannot score them makes
    error cells). ``references`` maps a task to its reference (default ``auto``)."""
    options = options or {}
    references = references or {}
    specs = [m if isinstance(m, MethodSpec) else parse_method(m) for m in methods]
    cells = []
    for task in tasks:
        try:
            names = builtin.resolve_all(model, task)
        except CircuitxError:
            names = (model,)  # the family: the cells' requests fail with its error
        for name, spec, seed in itertools.product(names, specs, seeds):
            request = DiscoveryRequest(
                task,
                spec.method,
                name,
                n_prompts,
                seed,
                ablation=ablation,
                options={**options.get(spec.method, {}), **dict(spec.options)},
                device=device,
                dtype=dtype,
                cache_dir=cache_dir,
                max_memory=max_memory,
                backup_rounds=backup_rounds if get_method(spec.method).holds_circuits else 0,
                positions=positions,
                reference=references.get(task, "auto"),
            )
            cells.append(Cell(request, spec.label if spec.options else None))
    return cells


def check_grid(
    model: str,
    tasks: Sequence[str],
    seeds: int,
    seed: int,
    n_prompts: int,
    jobs: int,
    ablation: str,
    positions: str,
    backup_rounds: int,
) -> None:
    """Refuse, before any cell runs, a setting every cell shares that cannot run (each
    cell would fail with it), and a task named that a model family has no model for."""
    counts = (
        ("--seeds", seeds, 1, MAX_SEED),
        ("--seed", seed, 0, MAX_SEED),
        ("--n-prompts", n_prompts, 1, None),
        ("--jobs", jobs, 1, MAX_JOBS),
        ("--backup-rounds", backup_rounds, 0, MAX_BACKUP_ROUNDS),
    )
    for flag, value, low, high in counts:
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise CircuitxError(f"{flag} takes a whole number, not {value!r}")
        if value < low:
            raise CircuitxError(f"{flag} must be at least {low}, not {value}")
        if high is not None and value > high:
            raise CircuitxError(f"{flag} must be at most {high}, not {value}")
    if seed + seeds - 1 > MAX_SEED:
        raise CircuitxError(f"--seed {seed} and --seeds {seeds} go past the last seed, {MAX_SEED}")
    if ablation not in ABLATIONS:
        raise CircuitxError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    if positions not in POSITION_MODES:
        raise CircuitxError(
            f"unknown --positions {positions!r}; choose from {', '.join(POSITION_MODES)}"
        )
    named: dict[str, str] = {}
    for task in tasks:  # a task file that cannot be read fails every cell of its task
        name = get_task(task).name
        if name in named:
            raise CircuitxError(
                f"task files {named[name]} and {task} both name their task {name!r}, "
                "which would make one row of the table: rename one"
            )
        named[name] = task
    family = builtin.FAMILIES.get(model)
    for task in tasks if family is not None else ():
        if task not in family.members:
            raise CircuitxError(
                f"no {family.name} model for task {task}: the family has models for "
                f"{', '.join(family.members)}; name one model with --model"
            )


def parse_options(specs: list[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``METHOD.NAME=VALUE`` settings (``--option``) as {method: {name: value}}, each
    value parsed and checked by the method's declaration of the option."""
    parsed: dict[str, dict[str, Any]] = {}
    for spec in specs:
        target, equals, text = spec.partition("=")
        method_name, dot, name = target.partition(".")
        if not equals or not dot:
            raise CircuitxError(f"--option takes METHOD.NAME=VALUE, not {spec!r}")
        get_method(method_name)  # an unknown method says so first
        if method_name not in methods:
            raise CircuitxError(f"--option {spec!r} names {method_name}, which is not in --methods")
        key, value = method_option(method_name, name, text)
        if key in parsed.get(method_name, {}):
            raise CircuitxError(f"--option sets {method_name}.{key} twice")
        parsed.setdefault(method_name, {})[key] = value
    return parsed


def run_leaderboard(
    cells: list[Cell],
    out_dir: str | Path,
    jobs: int = 1,
    executor: str = "local",
    threads: int = 1,
    settings: dict[str, Any] | None = None,
) -> Leaderboard:
    """Run the cells not finished in ``out_dir`` already, then write results.json/.csv/.md
    and the plots there. ``settings`` (the command's options) go into results.json."""
    if not cells:
        raise CircuitxError("the leaderboard has no cells to run")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CircuitxError(f"--out must be a directory: {out_dir}")
    check_parent_directory(out_dir)
    check_cells(cells)
    first = cells[0].request
    for name in dict.fromkeys(cell.model for cell in cells):  # unknown models fail here, once
        if name not in builtin.FAMILIES:
            load_cached(name, first.device, first.dtype, first.cache_dir)
    made = not out_dir.exists()
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise CircuitxError(f"cannot write the results directory {out_dir}: {error}") from None
    try:
        return _run(cells, out_dir, jobs, executor, threads, settings)
    except BaseException:
        if made:  # an interrupted first run that finished no cell leaves nothing behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise


def check_cells(cells: list[Cell]) -> None:
    """Refuse a grid none of whose cells can run, with the first cell's error; a grid with
    some such cells runs the rest, and the table shows the errors."""
    errors = []
    for cell in cells:
        try:
            cell.request.validated()
            return
        except CircuitxError as error:
            errors.append((cell, error))
    cell, error = errors[0]
    raise CircuitxError(f"no cell can run; {cell.task} / {cell.method}: {first_line(error)}")


def _run(
    cells: list[Cell],
    out_dir: Path,
    jobs: int,
    executor: str,
    threads: int,
    settings: dict[str, Any] | None,
) -> Leaderboard:
    store = CellStore(out_dir / "cells")
    records = {cell.key: store.get(cell.key) for cell in cells}
    pending = [cell for cell in cells if records[cell.key] is None]
    running: list[str] = []

    with progress_bar("leaderboard", len(cells)) as advance:
        advance(len(cells) - len(pending))

        def on_start(cell: Cell) -> None:
            running.append(cell.label)
            advance(0, description=f"running {', '.join(running)}")

        def on_done(cell: Cell, record: dict[str, Any]) -> None:
            store.put(record)
            records[cell.key] = record
            running.remove(cell.label)
            advance(1, description=f"running {', '.join(running)}" if running else "done")

        execute(pending, jobs, executor, threads, on_start, on_done)

    rows = leaderboard_rows(cells, records)
    board = Leaderboard(
        rows, [records[cell.key] for cell in cells], resumed=len(cells) - len(pending)
    )
    board.files = write_results(out_dir, cells, board, settings or {})
    return board


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
    return (
        f"circuitx {__version__} leaderboard on {', '.join(models)}: {cells[0].n_prompts} "
        f"prompts, {seed_text}{settings}; node P/R/F1 at each method's default selection; "
        f"runtime is the discovery's wall time per cell. Cells run {when} on "
        f"{'; '.join(machines) or 'no machine'}."
    )


def non_defaults(cells: list[Cell]) -> list[str]:
    """The settings the cells ran with that the table's rows do not show: an ablation
    other than the corrupted run, positions, backup rounds, a task's reference other
    than ``auto``, and each row's options beyond those its label names (``--option``)."""
    first = cells[0].request
    texts = [] if first.ablation == "corrupted" else [f"{first.ablation} ablation"]
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
        shown = [f"{key}={value}" for key, value in options if key not in own]
        if shown:
            texts.append(f"{label} with {', '.join(shown)}")
    return texts


GRAPH_KEYS = ("graph", "reference_circuit")  # what a cell's record keeps for its drawing


def write_results(
    out_dir: Path, cells: list[Cell], board: Leaderboard, settings: dict[str, Any]
) -> dict[str, str]:
    """Write results.json, results.csv, results.md, the per-task plots, each cell's
    circuit page and index.html; return their paths (the pages' folder as ``circuits``)."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    files = {
        "json": out_dir / "results.json",
        "csv": out_dir / "results.csv",
        "markdown": out_dir / "results.md",
    }
    document = {
        "circuitx": __version__,
        "date": date,
        "settings": settings,
        "rows": board.rows,
        # the graphs stay in the cells' own files: results.json is the numbers
        "cells": [{k: v for k, v in r.items() if k not in GRAPH_KEYS} for r in board.records],
    }
    title = caption(cells, board, date)
    write_text(files["json"], json_text(document, indent=1))
    write_text(files["csv"], csv_text(board.rows))
    write_text(files["markdown"], markdown(board.rows, title))
    # a figure per task, or per task and model where a task runs on several models
    shared = tasks_on_several_models(cells)
    for task, model in dict.fromkeys((cell.task, cell.model) for cell in cells):
        name, label = task, task
        if task in shared:
            name, label = f"{task}-{model}", f"{task} ({model})"
        roc: dict[str, dict[str, list]] = {}
        faith: dict[str, list] = {}
        for cell, record in zip(cells, board.records):
            if (cell.task, cell.model) != (task, model) or record["status"] != "ok":
                continue
            result = record["result"]
            for level, curve in (result["roc"] or {}).items():
                if curve:
                    roc.setdefault(cell.method, {}).setdefault(level, []).append(curve)
            if result["faithfulness_curve"]:
                faith.setdefault(cell.method, []).append(result["faithfulness_curve"])
        if roc_figure(label, roc, out_dir / f"roc-{name}.png"):
            files[f"roc-{name}"] = out_dir / f"roc-{name}.png"
        if faithfulness_figure(label, faith, out_dir / f"faithfulness-{name}.png"):
            files[f"faithfulness-{name}"] = out_dir / f"faithfulness-{name}.png"
    figures = [path.name for name, path in files.items() if name.startswith(("roc-", "faith"))]
    pages = write_circuit_pages(out_dir, cells, board.records)
    if pages:
        files[PAGES] = out_dir / PAGES
    files["html"] = out_dir / "index.html"
    write_report(files["html"], cells, board.rows, title, figures, pages)
    remove_stale(out_dir, {out_dir / name for name in [*figures, *pages.values()]})
    return {name: str(path) for name, path in files.items()}


def remove_stale(out_dir: Path, written: set[Path]) -> None:
    """Remove the figures and circuit pages an earlier run into ``out_dir`` wrote and this
    one did not (a task or method no longer in the grid), so that nothing there is older
    than the table."""
    earlier = [*out_dir.glob("roc-*.png"), *out_dir.glob("faithfulness-*.png")]
    earlier += (out_dir / PAGES).glob("*.html")
    for path in earlier:
        if path not in written:
            path.unlink(missing_ok=True)
