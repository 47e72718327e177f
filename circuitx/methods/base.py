"""The method interface: a method scores the nodes (and edges) of a model's layout.

A method is one module with a :class:`Method` subclass: its name, title, granularity
(what the selection ranks), default threshold and :class:`Option` declarations.
``score(engine, run)`` returns :class:`Scores`; :mod:`circuitx.discovery` turns them into
the circuit graph, selects the circuit and measures it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.models import Model
from circuitx.patching import NO_KEPT_HOOKS, KeptHooks
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task

OPTION_TYPES = {"int": int, "float": float, "str": str}
ON_OFF = {"on", "off"}
# The bound of an int option that declares none: a count past it is a typo, and would fail
# deep inside (a list of 10^20 steps, a tensor of 10^12 codes) instead of in one line
INT_OPTION_LIMIT = 1_000_000


@dataclass(frozen=True)
class Option:
    """A method option: its name (``ig_steps``, flag ``--ig-steps``), type (``int``,
    ``float`` or ``str``), default, help, and the values allowed: at least ``low``
    (above it with ``low_open``) and at most ``high`` (below it with ``high_open``), or
    one of ``choices``. A default of None means "not set" (the method decides)."""

    name: str
    type: str
    default: Any
    help: str
    low: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] | None = None
    high: float | None = None
    high_open: bool = False
    # (another option, the values of it under which this one does anything); None: always
    only_with: tuple[str, tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if self.type == "int" and self.high is None:
            object.__setattr__(self, "high", INT_OPTION_LIMIT)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def article(self) -> str:
        return "an" if self.type[0] in "aeiou" else "a"

    def parse(self, text: str) -> Any:
        """The value of ``text`` (as typed on a command line), checked."""
        try:
            value = OPTION_TYPES[self.type](text)
        except ValueError:
            raise CircuitxError(
                f"{self.flag} takes {self.article} {self.type}, not {text!r}"
            ) from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """``value`` as the option's type, or a one-line error when it is not allowed."""
        if value is None and self.default is None:
            return None
        kind = OPTION_TYPES[self.type]
        if isinstance(value, bool) and self.choices is not None and set(self.choices) == ON_OFF:
            value = "on" if value else "off"  # a switch given as Python's True or False
        elif kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)  # an int, a numpy float
        elif kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)  # a numpy integer
        if not isinstance(value, kind) or isinstance(value, bool):
            if self.choices is not None:
                raise CircuitxError(
                    f"{self.flag} takes one of {', '.join(self.choices)}, not {value!r}"
                )
            raise CircuitxError(f"{self.flag} takes {self.article} {self.type}, not {value!r}")
        if kind is float and not math.isfinite(value):
            raise CircuitxError(f"{self.flag} must be a finite number, not {value}")
        if self.choices is not None and value not in self.choices:
            raise CircuitxError(
                f"unknown {self.flag} {value!r}; choose from {', '.join(self.choices)}"
            )
        if self.low is not None:
            if self.low_open and not value > self.low:
                raise CircuitxError(f"{self.flag} must be greater than {self.low:g}, not {value}")
            if not self.low_open and not value >= self.low:
                raise CircuitxError(f"{self.flag} must be at least {self.low:g}, not {value}")
        if self.high is not None:
            high = f"{self.high:g}" if kind is float else str(int(self.high))
            if self.high_open and not value < self.high:
                raise CircuitxError(f"{self.flag} must be below {high}, not {value}")
            if not self.high_open and not value <= self.high:
                raise CircuitxError(f"{self.flag} must be at most {high}, not {value}")
        return value

    def describe(self) -> dict[str, Any]:
        """The declaration as JSON: name, flag, type, default, help, bounds, choices."""
        return {
            "name": self.name,
            "flag": self.flag,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "low": self.low,
            "low_open": self.low_open,
            "high": self.high,
            "high_open": self.high_open,
            "choices": None if self.choices is None else list(self.choices),
        }


@dataclass
class FeatureScores:
    """Scores below the component level (transcoder features): node scores by name, and
    every edge with a feature at one end as ``(sender, receiver, head input, score)``."""

    nodes: dict[str, float]
    edges: list[tuple[str, str, str | None, float]]


GRADIENT_RESOLUTION = 1e-4  # relative to the largest score: below it, rounding
GRADIENT_RESOLUTION_FLOAT64 = 1e-11  # the same for a float64 model


def gradient_resolution(model: Model) -> float:
    """The share of the largest score below which a ``model``'s scores are rounding."""
    float64 = model.work_dtype == torch.float64
    return GRADIENT_RESOLUTION_FLOAT64 if float64 else GRADIENT_RESOLUTION


def above_resolution(
    scores: torch.Tensor, model: Model, resolution: float | None = None
) -> torch.Tensor:
    """``scores`` with entries below :data:`GRADIENT_RESOLUTION` of the largest |score|
    set to 0 (the gradient methods', CD-T's and the transcoder's): a score that is zero in exact
    arithmetic (a receiver whose input does not reach the metric) comes out of float32
    as rounding (on the planted models, whose anchor of 1000 amplifies it, 424 of
    greater-than's edges scored 1e-9 to 1e-6 of the largest), and ranking such scores by
    their rounding would decide an AUC: EAP's moved between 0.80 and 0.90 with the order
    of a sum, CD-T's with the prompts' parts (--max-memory); at this resolution
    the split and unsplit gradient passes give the same numbers. A float64 ``model``'s
    scores are cut at :data:`GRADIENT_RESOLUTION_FLOAT64`, unless ``resolution`` sets
    the share for every dtype."""
    if resolution is None:
        resolution = gradient_resolution(model)
    largest = float(scores.abs().max()) if scores.numel() else 0.0
    return torch.where(scores.abs() <= resolution * largest, 0.0, scores)


def to_host(tensors: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor]:
    """The tensors copied to the host in one transfer per dtype: on a GPU, one
    synchronisation rather than one per tensor."""
    host: dict[Any, torch.Tensor] = {}
    for dtype in {tensor.dtype for tensor in tensors.values()}:
        keys = [key for key, tensor in tensors.items() if tensor.dtype == dtype]
        flat = torch.cat([tensors[key].flatten() for key in keys]).cpu()
        pieces = flat.split([tensors[key].numel() for key in keys])
        host |= {key: piece.view(tensors[key].shape) for key, piece in zip(keys, pieces)}
    return {key: host[key] for key in tensors}


@dataclass
class Scores:
    """What a method finds, over the layout: node scores [n_senders] (the input's entry
    is not used), edge scores [n_senders, n_receivers] or None for a method that scores
    nodes only (entries that are no edge are not used), measured facts for the graph's
    metadata, and optional feature-level scores."""

    nodes: torch.Tensor
    edges: torch.Tensor | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    features: FeatureScores | None = None
    # the edges [n_senders, n_receivers] (bool) a method's own search chose, where its
    # circuit is not a threshold or top k of its scores (None: selected by them)
    chosen: torch.Tensor | None = None

    @classmethod
    def of_edges(
        cls, edges: torch.Tensor, nodes: torch.Tensor | None = None, **rest: Any
    ) -> Scores:
        """Edge scores, with node scores given or, without them, each node's outgoing
        edge score of the largest magnitude."""
        edges = edges.detach().cpu()
        if nodes is None:
            strongest = edges.abs().argmax(1, keepdim=True)
            nodes = edges.gather(1, strongest).squeeze(1)
        return cls(nodes=nodes.detach().cpu(), edges=edges, **rest)


@dataclass
class MethodRun:
    """What a method gets besides the engine: seed, prompt count, selection threshold,
    its options (defaults filled in), the cache directory and a progress hook."""

    seed: int = 0
    threshold: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)
    n_prompts: int = 50
    cache_dir: str | None = None
    advance: Advance = no_progress


class Method:
    """Base class: ``score`` returns the :class:`Scores` of every node (and edge)."""

    name: ClassVar[str]
    title: ClassVar[str]
    granularity: ClassVar[str]  # "node" or "edge": what the selection ranks
    # gives edges scores of their own (edge ROC AUC, EAP-IG and auto-circuit export), also
    # where the selection ranks nodes (CD-T, the SAE's and transcoders' edges)
    scores_edges: ClassVar[bool] = False
    default_threshold: ClassVar[float]
    options: ClassVar[tuple[Option, ...]] = ()
    # contrasts clean prompts with prompts the model cannot answer: by default the task's
    # negative corruption instead of its default corruption
    uses_negatives: ClassVar[bool] = False
    # scores every run through the engine, so that scoring again with a circuit held at
    # its patch values (the engine's ``holding``) is what it means (--backup-rounds)
    holds_circuits: ClassVar[bool] = True
    # scores the nodes and edges of a circuit over token positions (--positions named or
    # all) through the engine's position masks
    scores_positions: ClassVar[bool] = False
    # scores from the metric's gradient at the clean run: all 0 for a metric at its
    # optimum there (l2, kl)
    gradient_at_clean: ClassVar[bool] = False
    # its scores are normalised (HISP's per layer): a gradient made small by a saturated
    # softmax still ranks and selects as a large one would
    normalised: ClassVar[bool] = False
    # what the method attributes or trains on instead of --metric, said after its name
    # (None: the metric), which then only faithfulness reads; and the --metric values
    # that are that target (no note for them)
    own_target: ClassVar[str | None] = None
    own_target_metrics: ClassVar[tuple[str, ...]] = ()
    # scores with the run's --ablation values (patches, or their difference from clean);
    # False: the ablation only sets what faithfulness patches with
    reads_ablation: ClassVar[bool] = True
    # the ablation it scores with whatever --ablation is (None: the run's), which then
    # only sets what faithfulness patches with
    own_ablation: ClassVar[str | None] = None
    # facts of its run (graph metadata keys, their labels and, for a float, the decimals
    # shown where not 3) that discover's summary and --json report
    reported_facts: ClassVar[tuple[tuple[str, str] | tuple[str, str, int], ...]] = ()
    # its progress steps cost about the same, so the time left can be told from those
    # done (not ACDC's edges: a later receiver's trial reruns fewer layers, and a
    # disconnected receiver's edges go untried)
    even_steps: ClassVar[bool] = True

    def lacks_negatives(self, task: Task) -> bool:
        """Whether ``task`` cannot run this method by design: the method contrasts prompts
        the model answers with prompts it cannot, and the task has none."""
        return self.uses_negatives and not task.has_negative_prompts

    def ablation_refusal(self, options: dict[str, Any], ablation: str) -> str | None:
        """Why this method with ``options`` cannot score under ``ablation`` (None: it can)."""
        return None

    def model_refusal(self, options: dict[str, Any], model: str) -> str | None:
        """Why this method with ``options`` cannot run on the model ``model`` names, as far
        as the name (or a local directory's config.json) tells (None: it can, or only the
        loaded model tells): discover refuses it before loading the model, and the
        leaderboard leaves such a method out of --methods all."""
        return None

    def positions_refusal(self, options: dict[str, Any]) -> str | None:
        """Why this method with ``options`` cannot score a circuit over token positions
        (None: it can)."""
        if self.scores_positions:
            return None
        return f"{self.name} scores components over the whole sequence"

    def warnings(self, facts: dict[str, Any]) -> list[str]:
        """One line for each reason to distrust a run, from its graph's metadata."""
        return []

    def target(self, options: dict[str, Any]) -> str | None:
        """What it attributes or trains on whatever --metric is, under ``options`` (None:
        the metric): :attr:`own_target`."""
        return self.own_target

    def check(self, model: Model, run: MethodRun) -> None:
        """Raise a CircuitxError for settings this model and prompt count cannot run with
        (each option's own range is checked before, by its :class:`Option`)."""

    def steps(self, layout: Layout, run: MethodRun) -> int:
        """How many progress steps ``score`` reports."""
        raise NotImplementedError

    def working_floats_per_token(self, model: Model, run: MethodRun) -> int:
        """Floats ``score`` holds per prompt token besides the engine's caches and
        passes (see :func:`circuitx.engine.memory_plan`)."""
        return 0

    def kept_hooks(self, model: Model, run: MethodRun) -> KeptHooks:
        """Hook points of the clean and corrupted runs ``score`` reads besides the
        senders' outputs: the engine's cached runs keep them (its parts' ``clean_kept``
        and ``corrupted_kept``)."""
        return NO_KEPT_HOOKS

    def selection_threshold(self, run: MethodRun) -> float:
        """The threshold the circuit is selected with when none is given."""
        return self.default_threshold

    def default_circuit(self) -> str:
        """What the circuit is when no threshold or top k is given, in words."""
        return f"|score| >= {self.default_threshold:g}"

    def default_threshold_selects(self) -> bool:
        """Whether the circuit, with no threshold or top k given, is the scores at least
        :attr:`default_threshold` (False: :meth:`selection_top_k` sizes it)."""
        return type(self).selection_top_k is Method.selection_top_k

    def selection_top_k(self, run: MethodRun, scores: Scores) -> int | None:
        """How many of the ranked nodes or edges the circuit keeps when no threshold or top
        k is given, for a method whose selection is a size (None: by threshold)."""
        return None

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        raise NotImplementedError
