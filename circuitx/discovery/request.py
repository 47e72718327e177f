"""One discovery request: every setting of a discovery, validated once, before any model
loads. The command line builds it; :func:`circuitx.discovery.discover`, the reference
lookup and the leaderboard's cell key all read the validated request."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from circuitx import builtin
from circuitx.discovery.faithfulness import CURVE_RULE
from circuitx.engine import MIN_MEMORY, default_max_memory
from circuitx.errors import MAX_BACKUP_ROUNDS, MAX_SEED, CircuitxError
from circuitx.files import check_input_file, size_text
from circuitx.methods import METHODS, get_method, method_options
from circuitx.models import parse_device, parse_dtype
from circuitx.patching import ABLATIONS
from circuitx.tasks import TASKS, FileTask, Task, get_task
from circuitx.tasks.base import POSITION_MODES
from circuitx.version import __version__

REFERENCE_WORDS = ("auto", "none", "planted")
FAITHFULNESS_PROMPTS = 1000  # the default sample faithfulness is measured on
GRAPH_SUFFIXES = (".graphml", ".xml", ".json")


# what a prompt pair's text, tokens and answers take before a pass (0.5-0.9 KB measured
# on IOI, rounded up)
PROMPT_BYTES = 1024


@dataclass(frozen=True)
class DiscoveryRequest:
    """What to discover and how. ``model`` None: the task's paper model; a family name
    (``planted``) stands for its model for the task. ``corruption``, ``metric`` and
    ``options`` default to the task's and method's own; :meth:`validated` fills them in."""

    task: str | Task  # a task's short name, a task file, or a task made in Python
    method: str
    model: str | None = None
    n_prompts: int = 50
    seed: int = 0
    threshold: float | None = None
    top_k: int | None = None
    ablation: str = "corrupted"
    corruption: str | None = None
    metric: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    reference: str = "auto"
    device: str | None = None
    dtype: str = "float32"
    cache_dir: str | None = None
    faithfulness: bool = True  # measure the circuit's faithfulness after discovery
    # ... on the first this many prompts (a random sample: the task draws them by the seed)
    faithfulness_prompts: int = FAITHFULNESS_PROMPTS
    max_memory: int | None = None  # bytes for the prompts' caches and passes (None: default)
    task_format: str | None = None  # a task file's format (None: told by suffix and content)
    # rounds of scoring again with the circuit found so far held at its patch values
    backup_rounds: int = 0
    # a circuit over token positions: none, named (the task's) or all (every position)
    positions: str = "none"

    @property
    def task_name(self) -> str:
        """The task as it is named: its short name, a task file's path, or a Python-made
        task's name."""
        return self.task.name if isinstance(self.task, Task) else self.task

    def validated(self, refuse_model: bool = True) -> DiscoveryRequest:
        """This request with every default filled in, or a one-line error for the first
        setting that cannot run; needs no model (a model file or hub name is checked when
        it loads). ``refuse_model``: ask the method whether it takes the model the request
        names, before it loads; False where the model is loaded (the method checks the
        model itself), or the request was validated so before."""
        self._check_types()
        method = get_method(self.method)
        corruption = self.corruption
        if method.uses_negatives:
            named = get_task(self.task, task_format=self.task_format)
            if method.lacks_negatives(named):
                able = [t.name for t in TASKS.values() if t.has_negative_prompts]
                file = ", and a task file cannot name such" if isinstance(named, FileTask) else ""
                raise CircuitxError(
                    f"{method.name} contrasts prompts the model answers with prompts it "
                    f"cannot; task {named.name} has none (its corrupted prompts are valid "
                    f"inputs too{file}); the tasks with them: {', '.join(able)}"
                )
            corruption = corruption or named.negative_corruption
        task = get_task(self.task, corruption, self.task_format)
        metric = task.default_metric if self.metric is None else self.metric
        task.check_metric(metric)
        if self.n_prompts < 1:
            raise CircuitxError(f"--n-prompts must be at least 1, not {self.n_prompts}")
        if self.threshold is not None and self.top_k is not None:
            raise CircuitxError("choose --threshold or --top-k, not both")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise CircuitxError(f"--threshold must be a finite number, not {self.threshold}")
        if self.threshold is not None and self.threshold < 0:
            raise CircuitxError(f"--threshold must be at least 0, not {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise CircuitxError(f"--top-k must be at least 1, not {self.top_k}")
        if not 0 <= self.backup_rounds <= MAX_BACKUP_ROUNDS:
            raise CircuitxError(
                f"--backup-rounds must be from 0 to {MAX_BACKUP_ROUNDS}, not {self.backup_rounds}"
            )
        if self.backup_rounds and not method.holds_circuits:
            raise CircuitxError(
                f"--backup-rounds: {method.name} runs the model itself, outside the engine "
                "that holds a circuit at its patch values"
            )
        if self.positions not in POSITION_MODES:
            raise CircuitxError(
                f"unknown --positions {self.positions!r}; choose from {', '.join(POSITION_MODES)}"
            )
        if self.positions != "none":
            refusal = method.positions_refusal(method_options(method, self.options))
            if refusal is not None:
                able = ", ".join(m.name for m in METHODS.values() if m.scores_positions)
                raise CircuitxError(f"--positions {self.positions}: {refusal}; use {able}")
            if self.backup_rounds:
                raise CircuitxError("--backup-rounds works on circuits without positions")
        if self.faithfulness_prompts < 1:
            raise CircuitxError(
                f"--faithfulness-prompts must be at least 1, not {self.faithfulness_prompts}"
            )
        if self.max_memory is not None and self.max_memory < MIN_MEMORY:
            raise CircuitxError(f"--max-memory must be at least 1M, not {self.max_memory} bytes")
        self._check_prompts_fit()
        if self.ablation not in ABLATIONS:
            raise CircuitxError(
                f"unknown ablation {self.ablation!r}; choose from {', '.join(ABLATIONS)}"
            )
        refusal = method.ablation_refusal(method_options(method, self.options), self.ablation)
        if refusal is not None:
            raise CircuitxError(f"--ablation {self.ablation}: {refusal}")
        parse_dtype(self.dtype)
        parse_device(self.device)
        check_reference(self.reference, task.name)
        if self.model is not None:
            builtin.check_model_name(self.model)
        model = builtin.resolve(self.model or task.default_model, task.name)
        if refuse_model:  # before the model loads (seconds, or minutes)
            refusal = method.model_refusal(method_options(method, self.options), model)
            if refusal is not None:
                raise CircuitxError(refusal)
        return dataclasses.replace(
            self,
            # plain Python numbers from here on (a numpy integer seeds nothing, and its
            # JSON is not)
            n_prompts=int(self.n_prompts),
            seed=int(self.seed),
            faithfulness_prompts=int(self.faithfulness_prompts),
            backup_rounds=int(self.backup_rounds),
            top_k=None if self.top_k is None else int(self.top_k),
            threshold=None if self.threshold is None else float(self.threshold),
            max_memory=None if self.max_memory is None else int(self.max_memory),
            model=model,
            corruption=task.corruption,
            metric=metric,
            options=method_options(method, self.options),
            cache_dir=None if self.cache_dir is None else os.fspath(self.cache_dir),
        )

    def _check_types(self) -> None:
        """A one-line error for a setting of the wrong type (from Python, where nothing
        parsed it), or a negative seed (a seed and its negation draw the same prompts)."""
        whole = {
            "--n-prompts": self.n_prompts,
            "--seed": self.seed,
            "--faithfulness-prompts": self.faithfulness_prompts,
            "--backup-rounds": self.backup_rounds,
            "--top-k": self.top_k,
            "--max-memory": self.max_memory,
        }
        unset = ("--top-k", "--max-memory")  # None: not set
        for flag, value in whole.items():
            if value is None and flag in unset:
                continue
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise CircuitxError(f"{flag} takes a whole number, not {value!r}")
        threshold = self.threshold
        if threshold is not None and (
            isinstance(threshold, bool) or not isinstance(threshold, Real)
        ):
            raise CircuitxError(f"--threshold takes a number, not {threshold!r}")
        if not isinstance(self.faithfulness, bool):
            raise CircuitxError(f"faithfulness takes True or False, not {self.faithfulness!r}")
        words = {
            "--method": self.method,
            "--ablation": self.ablation,
            "--positions": self.positions,
            "--reference": self.reference,
            "--dtype": self.dtype,
        }
        for flag, value in words.items():
            if not isinstance(value, str):
                raise CircuitxError(f"{flag} takes a name, not {value!r}")
        if self.model is not None and not isinstance(self.model, str):
            raise CircuitxError(f"--model takes a name or a directory, not {self.model!r}")
        if not isinstance(self.task, (str, Task)):
            raise CircuitxError(f"--task takes a name, a task file or a task, not {self.task!r}")
        if self.seed < 0:
            raise CircuitxError(
                f"--seed must be at least 0, not {self.seed} (a seed and its negation draw "
                "the same prompts)"
            )
        if self.seed > MAX_SEED:
            raise CircuitxError(f"--seed must be at most {MAX_SEED}, not {self.seed}")

    def _check_prompts_fit(self) -> None:
        """Refuse, before any prompt is made, a prompt count whose prompts alone would
        not fit the memory budget (all are made before the budget splits the work)."""
        budget = self.max_memory or default_max_memory(parse_device(self.device))
        if self.n_prompts * PROMPT_BYTES > budget:
            raise CircuitxError(
                f"--n-prompts {self.n_prompts}: the prompts alone would take about "
                f"{size_text(self.n_prompts * PROMPT_BYTES)}, over the memory budget of "
                f"{size_text(budget)} ({'--max-memory' if self.max_memory else 'the default'}"
                f"); at most {budget // PROMPT_BYTES} fit"
            )

    def settings(self) -> dict[str, Any]:
        """The fields as JSON, the cache directory and the memory budget left out (they do
        not change a result), ``faithfulness`` only where it is off and
        ``faithfulness_prompts`` only where it is not the default (so the settings
        of a default request, and the leaderboard's cell keys, are what they were before
        it existed)."""
        settings = dataclasses.asdict(dataclasses.replace(self, task=self.task_name))
        settings.pop("cache_dir")
        settings.pop("max_memory")
        if self.task_format is None:  # a new field: default requests keep their keys
            settings.pop("task_format")
        if self.faithfulness:
            settings.pop("faithfulness")
        if self.faithfulness_prompts == FAITHFULNESS_PROMPTS:  # the same: a new field
            settings.pop("faithfulness_prompts")
        if not self.backup_rounds:  # a new field
            settings.pop("backup_rounds")
        if self.positions == "none":  # a new field
            settings.pop("positions")
        settings["options"] = dict(self.options)
        return settings

    def config(self) -> dict[str, Any]:
        """Everything a result depends on, as JSON: the validated settings, a task file's
        name and content hash and a reference graph file's content hash (not their paths
        as spelled: ``./t.jsonl`` is ``t.jsonl``), the model's identity, the method's
        default threshold, how the faithfulness curves are drawn and the circuitx version
        (``cache_dir`` and ``device`` excepted: where a model is cached does not change
        it, and the device is kept as given)."""
        request = self.validated(refuse_model=False)
        task = get_task(request.task, task_format=request.task_format)
        settings, file = request.settings(), {}
        if isinstance(task, FileTask):  # its name and content, not how its path is spelled
            settings["task"], file["task_file"] = task.name, task.digest
        if Path(request.reference).is_file():  # a graph file: its content, not its name
            digest = hashlib.sha256(Path(request.reference).read_bytes()).hexdigest()[:16]
            settings["reference"], file["reference_file"] = "file", digest
        return {
            **settings,
            **file,
            "model_identity": builtin.identity(str(request.model)),
            "default_threshold": get_method(request.method).default_threshold,
            "curve_rule": CURVE_RULE,
            "circuitx": __version__,
        }


def reference_to_record(spec: str) -> str | None:
    """What a graph records of the reference its discovery was given, for ``score`` to
    take in place of ``auto``: a name, or a graph file by its absolute path. None for auto
    and none, and for a task whose reference is another task's circuit (made with the
    model, which ``score`` does not load)."""
    if spec in ("auto", "none"):
        return None
    task = TASKS.get(spec.partition(":")[0])
    if task is not None:
        return spec if task.reference_task is None else None
    return spec if builtin.ships_ground_truth(spec) else str(Path(spec).resolve())


def check_reference(spec: str, task_name: str | None = None) -> None:
    """Fail in one line unless ``spec`` can name a reference: auto, none, planted,
    TASK[:VARIANT], a built-in model that ships a ground truth, or an existing graph
    file; and unless it is a task's reference that is the run's own circuit (on task
    ``task_name``, colored-objects' reference is the IOI circuit the same method finds)."""
    if not spec.strip():  # Path("") is the working directory: "not a graph file"
        raise CircuitxError(
            "--reference is empty: give auto, none, planted, a task, a model or a file"
        )
    if spec in REFERENCE_WORDS or builtin.ground_truth_owner(spec.partition(":")[0]):
        return  # a model's ground truth, or one of them (MODEL:VARIANT; a model directory)
    base, _, variant = spec.partition(":")
    if base in TASKS:
        task = TASKS[base]
        if variant not in task.reference_variants:
            choices = ", ".join(f"{base}:{v}" if v else base for v in task.reference_variants)
            raise CircuitxError(f"unknown reference {spec!r}; choose from {choices}")
        if task_name is not None and task.reference_task == task_name:
            raise CircuitxError(
                f"--reference {spec} is the {task_name} circuit the same method finds on the "
                f"same model, so on task {task_name} it is this run's own circuit; pass "
                "another reference (a graph file, a planted model's name) or none"
            )
        return
    path = Path(spec)
    if path.suffix.lower() in GRAPH_SUFFIXES or path.exists():
        check_input_file(path, "graph file")
        return
    raise CircuitxError(
        f"unknown reference {spec!r}: use auto, none, planted, a task name ({', '.join(TASKS)}), "
        "a planted model's name or a graph file"
    )
