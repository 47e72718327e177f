"""The leaderboard's grid: which tasks, methods (with their variants' options), seeds and
references a run has, parsed and checked before any cell runs, and the cells they make."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path
from typing import Any

import networkx as nx

from circuitx import builtin
from circuitx.discovery import DiscoveryRequest, check_reference
from circuitx.errors import (
    MAX_BACKUP_ROUNDS,
    MAX_JOBS,
    MAX_SEED,
    MAX_THREADS,
    CircuitxError,
    a_type,
    check_count,
)
from circuitx.leaderboard.cells import Cell
from circuitx.leaderboard.executors import check_executor
from circuitx.methods import METHODS, Method, get_method, method_options, variant_label
from circuitx.patching import ABLATIONS
from circuitx.tasks import TASKS, file_task_name, get_task
from circuitx.tasks.base import POSITION_MODES
from circuitx.tasks.tracr import read_program


def tasks_for(model: str) -> list[str]:
    """What ``--tasks all`` means on ``model``: a family's tasks; a tracr model's (built in,
    or a directory with its program) ``tracr``; on any other model, every task that does
    not need a model family of its own."""
    if model in builtin.FAMILIES:
        return [task for task in TASKS if task in builtin.FAMILIES[model].members]
    spec = builtin.BUILTIN_MODELS.get(model)  # a built-in model records its task
    if spec is not None and spec.task is not None and TASKS[spec.task].model_family:
        return [spec.task]
    if Path(model).is_dir() and read_program(model) is not None:
        return ["tracr"]
    return [name for name, task in TASKS.items() if task.model_family is None]


def parse_names(
    spec: str,
    known: list[str],
    what: str,
    every: list[str] | None = None,
    also: Callable[[str], bool] | None = None,
) -> list[str]:
    """``all`` (``every``, default ``known``) or a comma-separated list of names from
    ``known`` (or that ``also`` accepts: task files, a comma in whose name is kept), in
    the order given."""
    if spec.strip() == "all":
        return list(known if every is None else every)

    def accepted(name: str) -> bool:
        return name in known or (also is not None and also(name))

    def a_file(name: str) -> bool:
        return also is not None and Path(name).expanduser().is_file()

    pieces, names = spec.split(","), []
    while pieces:  # an existing task file whose name has commas in it is one name
        taken = next(
            (n for n in range(len(pieces), 1, -1) if a_file(",".join(pieces[:n]).strip())), 1
        )
        name, pieces = ",".join(pieces[:taken]).strip(), pieces[taken:]
        if name:
            names.append(name)
    if not names:
        raise CircuitxError(f"no {what} given; choose from all, {', '.join(known)}")
    if "all" in names and "all" not in known:
        raise CircuitxError(f"all is every {what}: give it alone, not with other names")
    unknown = [n for n in names if not accepted(n)]
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
        # at the first '=' after which the name is one of the tasks (a file may hold '=')
        cuts = [i for i, char in enumerate(spec) if char == "="]
        named = ((_one_of(spec[:i], tasks), spec[i + 1 :]) for i in cuts)
        task, reference = next(((t, r) for t, r in named if t is not None and r), (None, ""))
        if task is None and _one_of(spec.rstrip("="), tasks) is not None:  # a task alone
            raise CircuitxError(
                f"--reference {spec!r} names a task and no reference: give "
                f"{spec.rstrip('=')}=REFERENCE (a graph file or a reference's name)"
            )
        if task is None:
            raise CircuitxError(
                f"--reference {spec!r}: give TASK=REFERENCE with TASK one of --tasks "
                f"({', '.join(tasks)})"
            )
        references[task] = reference
    return check_references(references, tasks)


def _one_of(name: str, tasks: Sequence[str]) -> str | None:
    """The task of ``tasks`` that ``name`` names: itself, a task file by another path to
    the same file (``./pairs.jsonl`` for ``pairs.jsonl``), or by the name its rows show
    (``pairs``, where no built-in task has it)."""
    if name in tasks:
        return name
    files = [task for task in tasks if task not in TASKS and Path(task).expanduser().is_file()]
    if name not in TASKS and name in [file_task_name(task) for task in files]:
        return next(task for task in files if file_task_name(task) == name)
    path = Path(name).expanduser()
    if not path.is_file():
        return None
    return next((task for task in files if Path(task).expanduser().samefile(path)), None)


def check_references(references: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, str]:
    """A task -> reference map, each task one of ``tasks`` (a task file by any path to
    it) and each reference checked as ``discover --reference`` checks it; a task not
    named keeps ``auto``."""
    checked = {}
    for named, reference in references.items():
        task = _one_of(fspath(named), tasks) if isinstance(named, (str, PathLike)) else None
        if task is None:
            raise CircuitxError(
                f"references name task {named!r}, which is not among the tasks ({', '.join(tasks)})"
            )
        if not isinstance(reference, (str, PathLike)):
            saved = (  # a graph object: the cells, in their own processes, read files
                ": the cells read references from files; save it with "
                "cx.write_graph(graph, 'reference.graphml') and pass the path"
                if isinstance(reference, nx.Graph)
                else ""
            )
            raise CircuitxError(
                f"the reference of {task} takes a name or a graph file, not "
                f"{a_type(reference)}{saved}"
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
        return variant_label(self.method, self.options)


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


def method_option(method_name: str, name: str, value: Any, where: str = "") -> tuple[str, Any]:
    """The option ``name`` (dashes or underscores) of a method and ``value`` for it,
    parsed (text) and checked by the method's declaration (a value that is not a string,
    given from Python, is checked as discover checks it: True is "on");
    ``where``: the setting it came from, named in the error."""
    declared = {option.name: option for option in get_method(method_name).options}
    key = name.replace("-", "_")
    if key not in declared:
        known = ", ".join(n.replace("_", "-") for n in declared) or "none"
        within = f" in {where!r}" if where else ""
        selection = (
            "; a leaderboard selects each circuit at its method's default, which "
            "discover's --threshold and --top-k change"
            if key in ("threshold", "top_k")
            else ""
        )
        raise CircuitxError(
            f"{method_name} has no option {name!r}{within} (its options: {known}){selection}"
        )
    option = declared[key]
    return key, option.parse(value) if isinstance(value, str) else option.check(value)


def parse_methods(spec: str) -> list[MethodSpec]:
    """``all`` (every registered method, then :data:`STANDARD_VARIANTS`) or a comma-separated
    list of methods and variants (commas inside brackets separate a variant's options)."""
    if spec.strip() == "all":
        return [MethodSpec(name) for name in METHODS] + [parse_method(v) for v in STANDARD_VARIANTS]
    items = [item for item in re.split(r",(?![^\[]*\])", spec) if item.strip()]
    if not items:
        raise CircuitxError(f"no method given; choose from all, {', '.join(METHODS)}")
    if "all" in [item.strip() for item in items]:
        raise CircuitxError("all is every method: give it alone, not with other names")
    return list(dict.fromkeys(parse_method(item) for item in items))


def methods_over_positions(
    specs: list[MethodSpec], positions: str, options: Mapping[str, Mapping[str, Any]], every: bool
) -> tuple[list[MethodSpec], str | None]:
    """The methods of ``specs`` that can score a circuit over ``positions``. Those that
    cannot are refused where named, and left out of ``every`` method (``--methods all``)
    with a note that says so."""
    if positions == "none":
        return specs, None
    return _methods_that_can(
        specs, options, every, f"--positions {positions}",
        lambda method, chosen: method.positions_refusal(chosen),
        lambda refused: f"{_they(refused, 'score')} components over the whole sequence",
    )  # fmt: skip


def methods_under_ablation(
    specs: list[MethodSpec], ablation: str, options: Mapping[str, Mapping[str, Any]], every: bool
) -> tuple[list[MethodSpec], str | None]:
    """The methods of ``specs`` that can score under ``ablation`` (EAP-IG over its inputs
    cannot under mean or zero ablation): as :func:`methods_over_positions`."""
    return _methods_that_can(
        specs, options, every, f"--ablation {ablation}",
        lambda method, chosen: method.ablation_refusal(chosen, ablation),
        lambda refused: f"{_they(refused, 'move')} the embeddings alone, a path that never "
        f"reaches the {ablation}-ablated run",
    )  # fmt: skip


def methods_for_model(
    specs: list[MethodSpec], model: str, options: Mapping[str, Mapping[str, Any]], every: bool
) -> tuple[list[MethodSpec], str | None]:
    """The methods of ``specs`` that can run on ``model`` as far as its name (or a local
    directory's config.json) tells (the transcoder method needs known transcoders: a
    trial's --methods all on a local model ended every run in an error cell and exit 1):
    as :func:`methods_over_positions`, the note giving each refusal."""
    return _methods_that_can(
        specs, options, every, f"--model {model}",
        lambda method, chosen: method.model_refusal(chosen, model),
        lambda refused: "; ".join(refused.values()),
    )  # fmt: skip


def _methods_that_can(
    specs: list[MethodSpec],
    options: Mapping[str, Mapping[str, Any]],
    every: bool,
    setting: str,
    refusal: Callable[[Method, dict[str, Any]], str | None],
    why_left: Callable[[dict[str, str]], str],
) -> tuple[list[MethodSpec], str | None]:
    """``specs`` less those ``refusal`` refuses under ``setting`` (one line where they
    are named; left out of ``every`` method with a note saying ``why_left`` of the
    refusals by method)."""
    refused = {}
    for spec in specs:
        method = get_method(spec.method)
        given = {**options.get(spec.method, {}), **dict(spec.options)}
        why = refusal(method, method_options(method, given))
        if why is not None:
            refused[spec.label] = why
    if not refused:
        return specs, None
    if not every:
        label, why = next(iter(refused.items()))
        raise CircuitxError(
            f"{setting}: {why}; leave {label} out of --methods, or give "
            "--methods all for every method that can"
        )
    kept = [spec for spec in specs if spec.label not in refused]
    return kept, f"note: {setting} leaves out {', '.join(refused)}: {why_left(refused)}"


def _they(refused: dict[str, str], verb: str) -> str:
    """'they VERB' for several methods refused, 'it VERBs' for one."""
    return f"they {verb}" if len(refused) > 1 else f"it {verb}s"


def pairs_that_run(cells: list[Cell]) -> tuple[list[Cell], str | None]:
    """The cells whose method can take their task, and a note naming the (task, method)
    pairs left out: a method that contrasts answered with unanswerable prompts (sae) on a
    task that has none (tracr), a refusal by design that had made every such grid exit 1.
    A grid with no cell left is refused where its cells are checked (check_cells)."""
    kept, left = [], []
    for cell in cells:
        method, request = get_method(cell.request.method), cell.request
        if method.uses_negatives and method.lacks_negatives(
            get_task(request.task, task_format=request.task_format)
        ):
            left.append(f"{cell.method} on {cell.task}")
            continue
        kept.append(cell)
    if not left or not kept:
        return cells, None  # nothing to leave out, or nothing else: each cell says why
    return kept, (
        f"note: {', '.join(dict.fromkeys(left))} left out: the method contrasts prompts the "
        "model answers with prompts it cannot, and the task has none"
    )


def _runs(
    specs: list[MethodSpec], options: Mapping[str, Mapping[str, Any]]
) -> dict[str, MethodSpec]:
    """Each spec's label -> the first spec that runs its method with the same options
    (defaults filled in): itself, or one before it."""
    first: dict[tuple[str, str], MethodSpec] = {}
    runs = {}
    for spec in specs:
        given = {**options.get(spec.method, {}), **dict(spec.options)}
        settings = method_options(get_method(spec.method), given)
        runs[spec.label] = first.setdefault((spec.method, repr(sorted(settings.items()))), spec)
    return runs


def distinct_runs(
    specs: list[MethodSpec], options: Mapping[str, Mapping[str, Any]]
) -> list[MethodSpec]:
    """``specs`` less each one that runs its method with the options (defaults filled in)
    of one before it."""
    return list(dict.fromkeys(_runs(specs, options).values()))


def merged_notes(specs: list[MethodSpec], options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A note for each spec that makes no row of its own (see :func:`distinct_runs`)."""
    return [
        f"note: {label} runs {same.label}'s settings: one row, {same.label}"
        for label, same in _runs(specs, options).items()
        if same.label != label
    ]


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
    error cells). ``references`` maps a task to its reference (default ``auto``). Rows
    that would run a method with the same options (``eap`` and ``eap[qk-fix=off]``) are
    one row, named as the first."""
    options = options or {}
    references = references or {}
    specs = distinct_runs(
        [m if isinstance(m, MethodSpec) else parse_method(m) for m in methods], options
    )
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


@dataclass
class Grid:
    """A leaderboard run's cells, the settings its results record, and the notes to show
    before it runs (methods left out or merged)."""

    cells: list[Cell]
    settings: dict[str, Any]
    notes: list[str]


def plan_grid(
    model: str,
    tasks: list[str],
    specs: list[MethodSpec],
    every_method: bool,
    options: Mapping[str, Mapping[str, Any]],
    references: Mapping[str, str],
    seeds: int = 3,
    seed: int = 0,
    n_prompts: int = 50,
    ablation: str = "corrupted",
    jobs: int = 1,
    threads: int = 1,
    executor: str = "local",
    backup_rounds: int = 0,
    positions: str = "none",
    device: str | None = None,
    dtype: str = "float32",
    cache_dir: str | None = None,
    max_memory: int | None = None,
) -> Grid:
    """The grid ``circuitx leaderboard`` and :func:`circuitx.leaderboard` run, from
    parsed tasks, methods (``every_method``: named as ``all``), options and references;
    refused in one line where a shared setting cannot run (:func:`check_grid`)."""
    check_grid(
        model, tasks, seeds, seed, n_prompts, jobs, ablation, positions, backup_rounds,
        threads, executor,
    )  # fmt: skip
    specs, left_out = methods_over_positions(specs, positions, options, every_method)
    specs, not_ablated = methods_under_ablation(specs, ablation, options, every_method)
    specs, not_for_model = methods_for_model(specs, model, options, every_method)
    seed_list = list(range(seed, seed + seeds))
    cells = make_grid(
        tasks, specs, model, seed_list, n_prompts, ablation, device, dtype, options,
        cache_dir, max_memory, backup_rounds, positions, references,
    )  # fmt: skip
    cells, unpaired = pairs_that_run(cells)
    settings = {
        "tasks": tasks,
        # the rows made: a spec that runs another's settings makes none (its note says so)
        "methods": list(dict.fromkeys(cell.method for cell in cells)),
        "model": model,
        "seeds": seed_list,
        "n_prompts": n_prompts,
        "ablation": ablation,
        "jobs": jobs,
        "threads": threads,
        "executor": executor,
        "device": device,
        "dtype": dtype,
        "options": options,
        **({"backup_rounds": backup_rounds} if backup_rounds else {}),
        **({"positions": positions} if positions != "none" else {}),
        **({"references": references} if references else {}),
    }
    notes = merged_notes(specs, options) + [
        line for line in (left_out, not_ablated, not_for_model, unpaired) if line
    ]
    return Grid(cells, settings, notes)


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
    threads: int = 1,
    executor: str = "local",
) -> None:
    """Refuse, before any cell runs, a setting every cell shares that cannot run (each
    cell would fail with it), and a task named that a model family has no model for."""
    check_executor(executor)
    counts = (
        ("--seeds", seeds, 1, MAX_SEED),
        ("--seed", seed, 0, MAX_SEED),
        ("--n-prompts", n_prompts, 1, None),
        ("--jobs", jobs, 1, MAX_JOBS),
        ("--threads", threads, 1, MAX_THREADS),
        ("--backup-rounds", backup_rounds, 0, MAX_BACKUP_ROUNDS),
    )
    for flag, value, low, high in counts:
        check_count(flag, value, low, high)
    if seed + seeds - 1 > MAX_SEED:
        raise CircuitxError(f"--seed {seed} and --seeds {seeds} go past the last seed, {MAX_SEED}")
    if ablation not in ABLATIONS:
        raise CircuitxError(f"unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    if positions not in POSITION_MODES:
        raise CircuitxError(
            f"unknown --positions {positions!r}; choose from {', '.join(POSITION_MODES)}"
        )
    if positions != "none" and backup_rounds:
        raise CircuitxError("--backup-rounds works on circuits without positions")
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
