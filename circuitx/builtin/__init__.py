"""Built-in models, and loading any model by name.

Built-in models are Hugging Face model directories built in code: no download. Each is
built once into the cache (see :mod:`circuitx.builtin.cache`) under a name that holds its
identity, a hash of the code that builds it (its modules' source, the task modules whose
words it knows), so a change to any of them builds a new model instead of reusing a stale
one. Families group built-in models by task: ``planted`` and ``planted-hard`` stand for
the task's own planted model, ``tracr`` for the tracr-compiled programs (task ``tracr``).

:func:`load` is the loader for every model name: a built-in name, a local directory, or a
Hugging Face hub name or alias (see :mod:`circuitx.models`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from importlib import metadata
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from circuitx.builtin import random_model
from circuitx.builtin.cache import (
    BUILD_THREADS,
    BUILT_MARKER,
    build_once,
    cache_root,
    torch_threads,
)
from circuitx.builtin.ground_truth import CIRCUIT_FILE, read_ground_truths
from circuitx.builtin.planted import PLANTED
from circuitx.builtin.tracr import TASK as TRACR_TASK
from circuitx.builtin.tracr import TRACR, truth_names
from circuitx.builtin.trained import (
    SCORES,
    TRAINED,
    WEIGHTS,
    copy_shipped,
    read_training,
    shipped_files,
)
from circuitx.errors import CircuitxError
from circuitx.models import Model, load_model, parse_device, parse_dtype, quiet_loaders
from circuitx.progress import announce
from circuitx.tasks import TASKS

PathLike = str | os.PathLike[str] | None


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    build: Callable[[Path], None]
    sources: tuple[str, ...]  # the modules whose code defines the model
    task: str | None = None  # the task a planted or tracr model is built for
    # ground truth by task, known without building the model (planted models)
    circuits: Callable[[], dict[str, nx.MultiDiGraph]] | None = None
    has_ground_truth: bool = False  # its directory ships circuit.json
    # the names of its ground truths, known before it is built where ``circuits`` is not
    truth_names: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # distributions whose version changes the weights
    files: tuple[Path, ...] = ()  # shipped files the model is copied from (trained models)
    scores: dict[str, float] | None = None  # scores measured when it was trained (_scores)

    @cached_property
    def identity(self) -> str:
        """A hash of the name, the source of every module that defines the model, the
        files it is copied from and the versions of the packages that build it."""
        digest = hashlib.sha256(self.name.encode())
        for module in self.sources:
            digest.update(inspect.getsource(importlib.import_module(module)).encode())
        for path in self.files:
            digest.update(path.name.encode() + path.read_bytes())
        for package in self.packages:
            try:
                digest.update(f"{package}=={metadata.version(package)}".encode())
            except metadata.PackageNotFoundError:
                digest.update(f"{package} absent".encode())
        return digest.hexdigest()[:12]


@dataclass(frozen=True)
class Family:
    """Built-in models of one kind by task: ``models_for(task)`` names them (one per task
    for the planted families; the tracr family has one per compiled program)."""

    name: str
    description: str
    members: dict[str, tuple[str, ...]]  # task -> built-in model names
    # the first member is the one the family's name picks (the rest join leaderboards)
    first_is_default: bool = False

    def models_for(self, task: str) -> tuple[str, ...]:
        if task not in self.members:
            raise CircuitxError(
                f"no {self.name} model for task {task}: the family's models do "
                f"{', '.join(self.members)}; name a model with --model (circuitx models "
                "lists them)"
            )
        return self.members[task]

    def model_for(self, task: str) -> str:
        """The family's model for ``task``, or a one-line error naming its choices."""
        names = self.models_for(task)
        if len(names) > 1 and not self.first_is_default:
            raise CircuitxError(
                f"the {self.name} family has {len(names)} models for task {task} "
                f"({', '.join(names)}); name one with --model"
            )
        return names[0]


_BUILDERS = ("circuitx.builtin.hf", "circuitx.builtin.cache")  # writing files; thread count


def _registry() -> dict[str, BuiltinModel]:
    task_modules = tuple(dict.fromkeys(type(task).__module__ for task in TASKS.values()))
    models = {
        random_model.NAME: BuiltinModel(
            random_model.NAME,
            random_model.DESCRIPTION,
            random_model.build,
            (*_BUILDERS, random_model.__name__, "circuitx.tasks.base", *task_modules),
        )
    }
    descriptions = {
        False: "hand-set weights; its ground-truth circuit ships with it",
        True: "adds a self-repairing backup head and 4x-norm distractors",
    }
    for name, spec in PLANTED.items():
        models[name] = BuiltinModel(
            name,
            f"{spec.architecture}; {descriptions[spec.hard]}",
            spec.save,
            (*_BUILDERS, *spec.sources()),
            spec.task,
            spec.circuits,
            has_ground_truth=True,
        )
    tracr_sources = tuple(
        f"circuitx.builtin.tracr{m}" for m in ("", ".convert", ".circuit", ".programs")
    )
    for name, spec in TRACR.items():
        models[name] = BuiltinModel(
            name,
            spec.description,
            spec.save,
            (*_BUILDERS, "circuitx.builtin.ground_truth", "circuitx.tasks.tracr", *tracr_sources),
            TRACR_TASK,
            has_ground_truth=True,
            truth_names=truth_names(name),
            packages=("tracr-pypi",),
        )
    for name, spec in TRAINED.items():
        record = read_training(WEIGHTS / name)
        models[name] = BuiltinModel(
            name,
            spec.description,
            copy_shipped(name),
            (*_BUILDERS, "circuitx.builtin.trained"),
            spec.task,
            # its ground truth ships beside its weights: known without building it
            partial(read_ground_truths, WEIGHTS / name),
            has_ground_truth=True,
            files=shipped_files(name),
            scores=None if record is None else _scores(record),
        )
    return models


def _scores(record: dict[str, Any]) -> dict[str, float]:
    """A trained model's scores from its training record; ``every_pair`` 1.0 where they
    are measured on every pair of its table, not on held-out pairs."""
    return {
        **{k: record[k] for k in SCORES},
        "every_pair": float(record.get("every_pair_judged", 0)),
    }


BUILTIN_MODELS: dict[str, BuiltinModel] = _registry()


def _planted_members(hard: bool) -> dict[str, tuple[str, ...]]:
    """The planted (or hard planted) models by task, the GPT-2 one first."""
    members: dict[str, list[str]] = {}
    for name, spec in PLANTED.items():
        if spec.hard == hard:
            members.setdefault(spec.task, []).append(name)
    return {task: tuple(names) for task, names in members.items()}


FAMILIES: dict[str, Family] = {
    family: Family(
        family,
        f"each task's own planted-circuit model{' (hard variant)' if hard else ''}",
        _planted_members(hard),
        first_is_default=True,
    )
    for family, hard in (("planted", False), ("planted-hard", True))
}
FAMILIES["tracr"] = Family(
    "tracr", "the built-in tracr-compiled programs", {TRACR_TASK: tuple(TRACR)}
)
FAMILIES["trained"] = Family(
    "trained",
    "models SIIT-trained to implement a task's high-level model",
    {
        task: tuple(name for name, spec in TRAINED.items() if spec.task == task)
        for task in dict.fromkeys(spec.task for spec in TRAINED.values())
    },
)


def resolve(name: str, task: str) -> str:
    """The model ``name`` stands for on ``task``: a family's member, else ``name`` itself."""
    return FAMILIES[name].model_for(task) if name in FAMILIES else name


def resolve_all(name: str, task: str) -> tuple[str, ...]:
    """Every model ``name`` stands for on ``task``: a family's members, else ``name``."""
    return FAMILIES[name].models_for(task) if name in FAMILIES else (name,)


def _cached_dir(name: str, cache_dir: PathLike = None) -> Path:
    """Where built-in model ``name`` is (or will be) cached."""
    return cache_root(cache_dir) / "models" / f"{name}-{BUILTIN_MODELS[name].identity}"


def model_dir(name: str, cache_dir: PathLike = None) -> Path:
    """The directory of built-in model ``name``, built into the cache first if needed
    (the caller's random state kept: a build draws from torch's generator)."""
    target = _cached_dir(name, cache_dir)
    with quiet_loaders(), torch.random.fork_rng(devices=[]):
        return build_once(
            target,
            BUILTIN_MODELS[name].build,
            announcement=f"building {name} (first use; cached in {target})",
        )


def built_model_dir(name: str, cache_dir: PathLike = None) -> Path | None:
    """The directory of built-in model ``name`` if it is already in the cache (nothing is
    built), else None."""
    target = _cached_dir(name, cache_dir)
    return target if (target / BUILT_MARKER).is_file() else None


def load(
    name: str, device: str | None = None, dtype: str = "float32", cache_dir: PathLike = None
) -> Model:
    """Load a built-in model (built into ``cache_dir`` first if needed), a local model
    directory, or a hub model by name or alias."""
    if name in FAMILIES:
        family = FAMILIES[name]
        task, names = next(iter(family.members.items()))
        if len(names) == 1 or family.first_is_default:
            how = f"pass the task that picks its model (task={task!r}) or name a model"
        else:  # the task alone does not pick one
            how = "name one of its models"
        raise CircuitxError(f"{name!r} is a model family: {how} ({names[0]!r}, ...)")
    parse_dtype(dtype)  # an unknown dtype is named as such, before what it would mean here
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise CircuitxError(f"cache_dir takes a directory, not {cache_dir!r}")
    if name not in BUILTIN_MODELS:
        check_model_name(name)
        return load_model(name, device=device, dtype=dtype)
    if name in PLANTED and dtype not in ("float32", "float64"):
        raise CircuitxError(
            f"{name} is built for float32: its features sit beside a constant of 1000, "
            f"below {dtype}'s resolution; use --dtype float32 or float64"
        )
    if Path(name).is_dir():  # a bare name is the built-in model's, as usage.md says
        announce(
            f"note: {name!r} is the built-in model; the directory {name} here is not read "
            f"(name it ./{name})"
        )
    parse_device(device)  # a device's error is no cache entry's
    directory = model_dir(name, cache_dir)
    try:
        model = load_model(str(directory), device=device, dtype=dtype)
    except CircuitxError as error:  # its files damaged since it was built (a trial's)
        raise CircuitxError(
            f"{error} (a built-in model's cache entry: if its files are damaged, remove "
            f"{directory} and the next run builds it again)"
        ) from None
    return dataclasses.replace(model, name=name, builtin=name)


def check_model_name(name: str) -> None:
    """A one-line error, before any hub call, for a name that is no built-in model, family
    or local path but close to a built-in one (a typo): "did you mean planted?"."""
    if not name.strip():
        raise CircuitxError("the model name is empty: name a model or a directory")
    known = [*FAMILIES, *BUILTIN_MODELS]
    if name in known or "/" in name or Path(name).expanduser().exists():
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    if close:
        raise CircuitxError(f"unknown model {name!r}; did you mean {close[0]}?")


def ground_truth(name: str | None, task: str, cache_dir: PathLike = None) -> nx.MultiDiGraph | None:
    """The ground-truth circuit for ``task`` (or ``task:variant``) that model ``name`` ships:
    a built-in model's, or a model directory's ``circuit.json`` (e.g. a built tracr model)."""
    return _ground_truths(name, cache_dir).get(task)


def shipped_ground_truths(name: str, cache_dir: PathLike = None) -> list[str]:
    """The tasks (``task`` or ``task:variant``) model ``name`` ships ground truths for."""
    return sorted(_ground_truths(name, cache_dir))


def _ground_truths(name: str | None, cache_dir: PathLike) -> dict[str, nx.MultiDiGraph]:
    """Model ``name``'s ground truths by task: a planted or trained model's from its
    definition, which its directory's ``circuit.json`` is written from (a reference checked
    against a graph of another shape is refused before the model is built), else from the
    directory (a tracr model, a model directory)."""
    spec = BUILTIN_MODELS.get(name) if name is not None else None
    if spec is not None and spec.has_ground_truth and spec.circuits is not None:
        return spec.circuits()
    directory = _ground_truth_dir(name, cache_dir)
    return {} if directory is None else read_ground_truths(directory)


def _ground_truth_dir(name: str | None, cache_dir: PathLike) -> Path | None:
    """Where model ``name``'s ground truths would be: a built-in model's directory (if it
    ships any) or a model directory; None otherwise."""
    if name is None:
        return None
    if name in BUILTIN_MODELS:
        return model_dir(name, cache_dir) if BUILTIN_MODELS[name].has_ground_truth else None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def ground_truths_at_hand(name: str | None, cache_dir: PathLike = None) -> bool:
    """Whether model ``name``'s ground truths (if it has any) are read without building
    it: all but a tracr model not yet compiled."""
    spec = BUILTIN_MODELS.get(name) if name is not None else None
    if spec is None or not spec.has_ground_truth or spec.circuits is not None:
        return True
    return built_model_dir(spec.name, cache_dir) is not None


def ground_truth_owner(name: str) -> str | None:
    """The model whose ground truths ``--reference NAME`` names: a built-in model that
    ships them, or a model directory holding ``circuit.json`` (a built tracr model; the
    file itself names its directory); None otherwise."""
    if ships_ground_truth(name):
        return name
    path = Path(name).expanduser()
    if path.name == CIRCUIT_FILE and path.is_file():
        path = path.parent
    return str(path) if (path / CIRCUIT_FILE).is_file() else None


def ships_ground_truth(name: str) -> bool:
    """Whether ``name`` is a built-in model that ships a ground-truth circuit."""
    return name in BUILTIN_MODELS and BUILTIN_MODELS[name].has_ground_truth


def own_ground_truth(
    name: str, task: str | None, cache_dir: PathLike = None, which: str = ""
) -> nx.MultiDiGraph:
    """Built-in model ``name``'s ground truth for ``task``, or its only one (a planted
    model's circuit, whatever task file its prompts came from); ``which`` names one of
    several (``--reference tracr-reverse:acdc``: the variant, or a plain task's name).
    A choice a tracr model cannot meet is refused before it compiles."""
    spec = BUILTIN_MODELS.get(name)
    if spec is None or not spec.truth_names:  # read them to know their names
        truths = _ground_truths(name, cache_dir)
        return truths[_chosen_truth(name, sorted(truths), task, which)]
    if task in TASKS and task != spec.task:  # said before a tracr model compiles
        raise CircuitxError(
            f"{name}'s ground truths are circuits of task {spec.task} (its own program), and "
            f"the graph's task is {task}"
        )
    key = _chosen_truth(name, sorted(spec.truth_names), task, which)
    return _ground_truths(name, cache_dir)[key]


def _chosen_truth(name: str, known: list[str], task: str | None, which: str) -> str:
    """Which of model ``name``'s ground truths ``known`` :func:`own_ground_truth` gives."""
    names = {key.partition(":")[2] or key: key for key in known}
    if which:
        if which not in names:
            raise CircuitxError(
                f"{name} ships no ground truth {which!r}; choose from "
                + ", ".join(f"{name}:{short}" for short in names)
            )
        return names[which]
    if task in known:
        return task
    if len(known) != 1:
        raise CircuitxError(
            f"{name} ships ground truths for {', '.join(known)}; name one: "
            + ", ".join(f"--reference {name}:{short}" for short in names)
        )
    return known[0]


def identity(name: str) -> str:
    """What distinguishes a model's weights: a built-in's name and identity hash, a local
    directory's path and its files' sizes and modification times, else the hub name."""
    if name in BUILTIN_MODELS:
        return f"builtin:{name}-{BUILTIN_MODELS[name].identity}"
    path = Path(name).expanduser()
    if path.is_dir():
        stats = sorted(
            (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()
        )
        digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
        return f"dir:{path.resolve()}:{digest}"
    return f"hub:{name}"


__all__ = [
    "BUILTIN_MODELS",
    "FAMILIES",
    "BuiltinModel",
    "Family",
    "BUILD_THREADS",
    "build_once",
    "cache_root",
    "check_model_name",
    "torch_threads",
    "ground_truth",
    "identity",
    "load",
    "model_dir",
    "resolve",
    "resolve_all",
]
