"""The engine a method runs on: any number of prompts, in parts that fit a memory budget.

The prompts are cut into parts of at most ``part_size`` prompts, each a
:class:`~circuitx.patching.PatchingEngine` with its own cached runs. Every quantity a
method reads is a mean over prompts, so the engine's answer is the mean of the parts'
answers weighted by their sizes, as one batch would give it (to float rounding). What
ties the parts together is taken over all prompts first: the clean and corrupted
metrics (the gap every effect is divided by) and, for mean ablation, the patch values.

Parts are kept in memory while their caches fit a quarter of the budget; the others are
rebuilt each time a method goes over the prompts again (and released after: one is in
memory at a time). The senders' differences in the residual basis, d_model floats a
sender and token, stay with the kept parts when every part fits the quarter with them;
else they are made from a part's caches for its turn and freed after it. Part
size and how many patched copies one forward pass stacks come from :func:`memory_plan`,
an estimate of the bytes each token costs (the caches, the activation differences, a
pass's working tensors and, for a method that needs it, its own per-token working
memory).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.files import size_text
from circuitx.layout import Layout, PositionLayout
from circuitx.models import Model, head_reads
from circuitx.patching import (
    NO_KEPT_HOOKS,
    TOKENS_PER_PASS,
    KeptHooks,
    Mix,
    PatchingEngine,
    TokenMeans,
    effect_gap,
)
from circuitx.progress import Advance, announce, no_progress, scaled
from circuitx.tasks import Task, TaskData

DEFAULT_MAX_MEMORY = 2 * 1024**3  # on the CPU: at most this, or half the free memory when less
MIN_MEMORY = 1024**2
# relative: a change of the metric below this is rounding, in float32 (and half precision,
# whose metrics are float32) and in float64
METRIC_RESOLUTION = 1e-5
METRIC_RESOLUTION_FLOAT64 = 1e-12
PART_PASSES = 4  # a part holds at most this many stacked passes' tokens (TOKENS_PER_PASS)


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` (for the CPU, the system's available memory); None when
    it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def total_memory() -> int | None:
    """Bytes of the system's memory; None when it cannot be read."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def default_max_memory(device: torch.device) -> int:
    """On the CPU a quarter of the system's memory, at most :data:`DEFAULT_MAX_MEMORY`:
    not what happens to be free, which another job moves, and with it the parts (a
    helper's trial: a budget of 0 bytes, and path patching's scores moving 2e-3 between
    two runs); a plan past what is free is warned of (:class:`Engine`). On a GPU, half
    what is free."""
    if device.type == "cuda":
        return free_memory(device) // 2
    total = total_memory()
    return (
        DEFAULT_MAX_MEMORY
        if total is None
        else max(MIN_MEMORY, min(DEFAULT_MAX_MEMORY, total // 4))
    )


def parse_memory(text: str) -> int:
    """Bytes from ``512M``, ``4G``, ``1.5GB``, ``2GiB`` or a plain number of bytes."""
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    cleaned = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = cleaned[-1:] if cleaned[-1:] in units else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan and inf parse as floats
        raise CircuitxError(f"--max-memory takes a size like 512M or 4G, not {text!r}")
    if not value >= MIN_MEMORY:
        raise CircuitxError(f"--max-memory must be at least 1M, not {text!r}")
    return int(value)


def cache_floats_per_token(model: Model) -> int:
    """Floats a part holds per token between sweeps: its clean and corrupted caches."""
    d, layers = model.d_model, model.n_layers
    outputs = d + layers * (model.n_heads * model.d_head + (d if model.has_mlp else 0))
    clean = outputs + layers * d  # the residual stream entering every block and the last norm
    return clean + outputs


def delta_floats_per_token(model: Model, groups: int = 0) -> int:
    """Floats the senders' clean - patch differences in the residual basis take per token,
    and over ``groups`` position groups once more a group (a sender at a group is a row of
    its own)."""
    return model.d_model * model.layout.n_senders * (1 + groups)


def pass_floats_per_token(model: Model) -> int:
    """Floats a patched forward pass without gradients holds per token at once: one
    block's working tensors, a layer's q, k and v input corrections and the live
    senders' differences."""
    d_mlp = model.d_mlp if model.has_mlp else 0
    heads = 11 * model.n_heads * model.d_model
    return heads + 2 * d_mlp + model.d_model * model.layout.n_senders


def gradient_floats_per_token(model: Model) -> int:
    """Floats a forward pass kept for a backward pass holds per token (every block's
    saved tensors): fitted to EAP's measured peaks on a GPT-2-small shape (12 x 12, 768),
    with split q/k/v inputs (planted-ioi, 5 x 4, d_model 320, too) and, where the heads'
    input gradients come from their q, k and v ones (:func:`circuitx.models.head_reads`),
    without (about 350,000 floats a token measured; counted here with a third more)."""
    d_mlp = model.d_mlp if model.has_mlp else 0
    per_head = 3 if head_reads(model) is not None else 9
    return model.n_layers * (per_head * model.n_heads * model.d_model + 4 * d_mlp)


@dataclass(frozen=True)
class MemoryPlan:
    """Prompts per part, tokens per stacked forward pass, how many parts stay in memory
    between sweeps (besides the one in use; one part alone always stays) and how many
    would with their senders' differences (when that is every part, they keep them)."""

    part_size: int
    tokens_per_pass: int
    resident_parts: int
    part_bytes: int  # the estimate for one part's caches and working memory
    resident_with_deltas: int
    cache_bytes: int = 0  # the estimate for one part's cached runs alone


def memory_plan(
    model: Model,
    n_prompts: int,
    width: int,
    rows_per_prompt: int,
    budget: int,
    working_floats_per_token: int = 0,
    part_size: int | None = None,
    groups: int = 0,
    kept_floats_per_token: int = 0,
) -> MemoryPlan:
    """Split ``budget`` bytes: half for the part in use (its caches and readout logits,
    its senders' differences, the method's own ``working_floats_per_token`` and a patched
    pass over all its prompts), a quarter for a pass that stacks patched copies of a
    small part, a quarter for the caches of other parts kept between sweeps.
    ``part_size``: the parts' size where the caller sets it; ``groups``: the position
    groups of a circuit over positions; ``kept_floats_per_token``: what the method has
    the cached runs keep besides (:class:`circuitx.patching.KeptHooks`)."""
    size = model.work_dtype.itemsize  # caches and differences are in the work dtype
    pass_bytes = size * pass_floats_per_token(model)
    default = TOKENS_PER_PASS.get(model.device.type, TOKENS_PER_PASS["cpu"])
    tokens_per_pass = max(1, min(default, budget // 4 // pass_bytes))
    logits = rows_per_prompt * model.d_vocab
    per_token = cache_floats_per_token(model) + kept_floats_per_token
    cached = size * (width * per_token + 2 * logits)  # per prompt
    deltas = size * width * delta_floats_per_token(model, groups)  # per prompt
    working = size * (width * working_floats_per_token + logits) + width * pass_bytes + deltas
    # more tokens than a few stacked passes' make a part no faster, only larger
    most = max(1, PART_PASSES * default // width)
    part_size = part_size or max(1, min(n_prompts, most, budget // 2 // (cached + working)))
    resident = budget // 4 // (cached * part_size)
    with_deltas = budget // 4 // ((cached + deltas) * part_size)
    part_bytes = (cached + working) * part_size
    return MemoryPlan(
        part_size, tokens_per_pass, int(resident), part_bytes, int(with_deltas), cached * part_size
    )


class Engine:
    """Cached clean and corrupted runs of a task batch of any size, and patched runs on
    them, in parts; see the module's docstring."""

    def __init__(
        self,
        model: Model,
        task: Task,
        data: TaskData,
        metric: str = "logit-diff",
        ablation: str = "corrupted",
        max_memory: int | None = None,
        working_floats_per_token: int = 0,
        part_size: int | None = None,
        tokens_per_pass: int | None = None,
        patch_values: dict[str, torch.Tensor] | None = None,
        held: torch.Tensor | None = None,
        layout: Layout | None = None,
        kept: KeptHooks = NO_KEPT_HOOKS,
        derived: bool = False,
    ) -> None:
        """``layout``: the node universe (default the model's; a :class:`PositionLayout`
        for a circuit over token positions); ``max_memory``: the budget in bytes (default
        :func:`default_max_memory`);
        ``part_size`` and ``tokens_per_pass`` override the plan made from it;
        ``patch_values`` are the senders' patch values when they are not these prompts'
        (a mean ablation's mean over more prompts); ``held`` [n_senders] (bool): senders
        patched in every run, the clean one included (see :meth:`holding`); ``kept``:
        more hook points every part's cached runs keep for the method; ``derived``: made
        from another engine (:meth:`narrowed`, :meth:`holding`), whose budget was checked
        against the free memory."""
        self.model, self.task, self.data, self.metric_name = model, task, data, metric
        self.ablation, self.layout = ablation, layout or model.layout
        self.held, self.working_floats_per_token = held, working_floats_per_token
        self.kept = kept
        if isinstance(self.layout, PositionLayout):
            # a layer's keys and values per query group (the differences per group: the plan)
            working_floats_per_token += self.layout.n_groups * model.d_model * 6
        self.budget = budget = max_memory or default_max_memory(model.device)
        width = int(data.clean.shape[1])
        groups = self.layout.n_groups if isinstance(self.layout, PositionLayout) else 0
        self.plan = memory_plan(
            model, data.n_prompts, width, data.rows_per_prompt, budget,
            working_floats_per_token, part_size, groups,
            kept.floats_per_token + kept.floats_per_key * width,
        )  # fmt: skip
        self.part_size = self.plan.part_size
        self.tokens_per_pass = tokens_per_pass or self.plan.tokens_per_pass
        n = data.n_prompts
        self.ranges = [(a, min(n, a + self.part_size)) for a in range(0, n, self.part_size)]
        if not derived:
            self._check_free_memory(given=bool(max_memory))
        self._kept: dict[int, PatchingEngine] = {}
        self.parts_built = 0
        # what ties the parts together, once measured over all prompts
        self._reference: tuple[float, float, float] | None = None
        self._patch_values: dict[str, torch.Tensor] | None = patch_values
        self._measure()

    @property
    def n_prompts(self) -> int:
        return self.data.n_prompts

    @property
    def n_parts(self) -> int:
        return len(self.ranges)

    @property
    def resident_parts(self) -> int:
        """How many parts' cached runs stay in memory between sweeps (the rest are made
        again at every sweep); one part alone always stays."""
        return self.n_parts if self.n_parts == 1 else min(self.plan.resident_parts, self.n_parts)

    def _check_free_memory(self, given: bool) -> None:
        """Say, before any part is made, when the plan's estimate (the part in use and
        the other parts kept cached) is more than the memory free now: a --max-memory
        (``given``), or the default budget, past what the machine has free."""
        free = free_memory(self.model.device)
        others = max(0, self.resident_parts - 1) * self.plan.cache_bytes
        need = self.plan.part_bytes + others
        if free is None or need <= free:
            return
        kept = f" and {self.resident_parts - 1} more kept cached" if others else ""
        budget = "--max-memory" if given else "the default memory budget"
        announce(
            f"{budget} {size_text(self.budget)}: the plan (a part of {self.part_size} "
            f"prompts in use{kept}) is estimated at {size_text(need)}, more than the "
            f"{size_text(free)} free on the {self.model.device.type}; past what is free "
            f"the run swaps or is killed, so {'lower' if given else 'give a lower'} "
            "--max-memory"
        )

    @property
    def masks_per_pass(self) -> int:
        """How many masks a patched pass stacks over a part's prompts."""
        return max(1, self.tokens_per_pass // (self.part_size * int(self.data.clean.shape[1])))

    def _measure(self) -> None:
        """Build every part once: the clean and corrupted metrics and accuracies over all
        prompts and, for mean ablation, the mean patch values."""
        clean = corrupted = ablated = 0.0
        # the clean and corrupted rows answered right, counted: the accuracy is the one
        # batch's to the bit (the parts' shares, weighted and summed, gave 0.49999999999999994)
        right = [0, 0]
        sums = TokenMeans()
        # a mean in parts: each part's own mean is not the one ablated with, so the ablated
        # metric waits for the mean over all prompts (_whole_ablated_metric)
        mean_in_parts = self.ablation == "mean" and self.n_parts > 1 and self._patch_values is None
        for index, (start, stop) in enumerate(self.ranges):
            part = self._build(index, measure_ablated=not mean_in_parts)
            weight = (stop - start) / self.n_prompts
            clean += weight * part.clean_metric
            corrupted += weight * part.corrupted_metric
            ablated += weight * part.ablated_metric
            rows = (stop - start) * part.data.rows_per_prompt
            right[0] += round(part.accuracy() * rows)
            right[1] += round(part.accuracy(corrupted=True) * rows)
            if mean_in_parts:
                real = part.data.real_tokens
                for name, value in part.corrupted_cache.items():
                    # in float64, so that the mean is the one a single part takes: the
                    # planted models amplify a rounding difference ~500 times
                    sums.add(name, value, real)
            if len(self._kept) < self.resident_parts:
                self._kept[index] = part
            else:
                part.release()
        all_rows = self.n_prompts * self.data.rows_per_prompt
        self._accuracies = (right[0] / all_rows, right[1] / all_rows)
        if mean_in_parts:
            self._patch_values = sums.means(self.model.work_dtype)
            ablated = self._whole_ablated_metric()
        self.clean_metric, self.corrupted_metric, self.ablated_metric = clean, corrupted, ablated
        self._reference = (clean, corrupted, ablated)
        for part in self._kept.values():
            self._settle(part)

    def _whole_ablated_metric(self) -> float:
        """The ablated metric (every sender at its patch value) over all prompts, with the
        patch values taken over all of them: a second sweep over the parts."""
        ablated = 0.0
        for index, (start, stop) in enumerate(self.ranges):
            part = self._kept.get(index)
            if part is not None:
                part.patch_cache = dict(self._patch_values or {})
                value = part.measure_ablated_metric()
            else:  # built with the whole's patch values, it measures them itself
                part = self._build(index)
                value = part.ablated_metric
                part.release()
            ablated += (stop - start) / self.n_prompts * value
        return ablated

    def _build(self, index: int, measure_ablated: bool = True) -> PatchingEngine:
        start, stop = self.ranges[index]
        self.parts_built += 1
        return PatchingEngine(
            self.model,
            self.task,
            self.data.prompts(start, stop),
            self.metric_name,
            self.ablation,
            self.tokens_per_pass,
            self._reference,
            self._patch_values,
            start,
            self.held,
            self.layout,
            measure_ablated,
            self.kept,
        )

    def _settle(self, part: PatchingEngine) -> None:
        """Give a part built before the whole was measured the whole's metrics and patch
        values."""
        part.clean_metric, part.corrupted_metric = self.clean_metric, self.corrupted_metric
        part.ablated_metric = self.ablated_metric
        if self._patch_values is not None:
            part.patch_cache = dict(self._patch_values)

    def parts(self) -> Iterator[tuple[PatchingEngine, float]]:
        """Each part and its share of the prompts (the shares sum to 1). A part not kept
        is released once the next is asked for: one is in memory at a time."""
        for index, (start, stop) in enumerate(self.ranges):
            part = self._kept.get(index) or self._build(index)
            yield part, (stop - start) / self.n_prompts
            if index not in self._kept:
                part.release()
            elif self.n_parts > 1 and self.plan.resident_with_deltas < self.n_parts:
                part.forget_deltas()  # its caches stay; its differences are made again

    def release(self) -> None:
        """Free every kept part (the engine is not used after this)."""
        for part in self._kept.values():
            part.release()
        self._kept.clear()

    def narrowed(self, n_prompts: int) -> Engine:
        """The engine on the first ``n_prompts`` prompts, with this one's budget and patch
        values (for the circuit's passes: no method's working memory or kept hooks); this
        one is released first (its memory is the new one's). Itself when it has no more
        prompts than that."""
        if n_prompts >= self.n_prompts:
            return self
        values = self._whole_patch_values()
        self.release()
        data = self.data.prompts(0, n_prompts)
        return Engine(
            self.model, self.task, data, self.metric_name, self.ablation, self.budget,
            patch_values=values, layout=self.layout, derived=True,
        )  # fmt: skip

    def holding(self, held: torch.Tensor) -> Engine:
        """The engine on the same prompts with the senders ``held`` [n_senders] (bool; and
        any this one holds) carrying their patch values in every run, its clean run
        included: scores on it show what takes over when those are gone (backup heads).
        Its clean metric is the held run's, and its corrupted and ablated metrics move with
        it, so effects are measured from the held run in this engine's gap (clean -
        corrupted without the hold); it keeps this engine's patch values."""
        held = held.cpu() if self.held is None else held.cpu() | self.held
        return Engine(
            self.model, self.task, self.data, self.metric_name, self.ablation, self.budget,
            self.working_floats_per_token, self.part_size, self.tokens_per_pass,
            self._whole_patch_values(), held, self.layout, self.kept, derived=True,
        )  # fmt: skip

    def zero_ablated(self) -> Engine:
        """The engine on the same prompts (and held senders) under zero ablation, with its
        own cached runs; itself when it is so already: for a gate that is defined toward
        zero whatever the run's ablation (HISP's)."""
        if self.ablation == "zero":
            return self
        return Engine(
            self.model, self.task, self.data, self.metric_name, "zero", self.budget,
            self.working_floats_per_token, self.part_size, self.tokens_per_pass, None,
            self.held, self.layout, self.kept, derived=True,
        )  # fmt: skip

    def _whole_patch_values(self) -> dict[str, torch.Tensor] | None:
        """The patch values over all prompts, for an engine on some or all of them: the
        mean a mean ablation took over the parts, or with one part its own mean (None:
        each prompt's own corrupted run or zero)."""
        if self._patch_values is None and self.ablation == "mean":
            return dict(next(iter(self._kept.values())).patch_cache)
        return self._patch_values

    # ------------------------------------------------------------------ the whole

    def accuracy(self, corrupted: bool = False) -> float:
        """Share of all prompts the model answers right, clean or corrupted."""
        return self._accuracies[1 if corrupted else 0]

    @property
    def gap(self) -> float:
        """clean - ablated metric over all prompts (see :class:`PatchingEngine`); an error
        when there is no effect."""
        return effect_gap(self.clean_metric, self.ablated_metric, self.metric_name, self.ablation)

    def normalised_effect(self, patched_metric: torch.Tensor) -> torch.Tensor:
        """(clean - patched) / (clean - ablated): 1 where a patch removes the whole effect,
        0 where the change is rounding (:func:`metric_change`)."""
        change = metric_change(self.clean_metric, patched_metric, metric_resolution(self.model))
        return change / self.gap

    def _mean(
        self, compute: Callable[[PatchingEngine, Advance], Any], advance: Advance = no_progress
    ) -> Any:
        """The prompt-weighted mean over parts of ``compute(part, advance)`` (a tensor, a
        float or a tuple of them); a part's progress steps count by its share."""
        total = None
        for part, weight in self.parts():
            value = compute(part, scaled(advance, weight))
            if isinstance(value, tuple):
                value = tuple(weight * v for v in value)
                total = value if total is None else tuple(t + v for t, v in zip(total, value))
            else:
                total = weight * value if total is None else total + weight * value
        return total

    def patch_each_node(self, nodes: Sequence[str], advance: Advance = no_progress) -> torch.Tensor:
        """Mean metric [len(nodes)] when each node alone carries its patch value."""
        return self._mean(lambda part, step: part.patch_each_node(nodes, step), advance)

    def patch_together(self, nodes: Sequence[str]) -> float:
        """Mean metric when all of ``nodes`` carry their patch values at once."""
        return float(self._mean(lambda part, _: part.patch_together(nodes)))

    def patch_each_edge(
        self, groups: Sequence[Sequence[tuple[int, int]]], advance: Advance = no_progress
    ) -> torch.Tensor:
        """Mean metric [len(groups)] when the edges of each group are patched together."""
        return self._mean(lambda part, step: part.patch_each_edge(groups, step), advance)

    def edge_mask_metrics(self, masks: torch.Tensor, complement: bool = False) -> torch.Tensor:
        """Mean metric [k] under each of k edge masks [k, n_senders, n_receivers] (see
        :meth:`PatchingEngine.edge_mask_metrics`)."""
        return self._mean(lambda part, _: part.edge_mask_metrics(masks, complement))

    def gate_gradient_magnitudes(self) -> torch.Tensor:
        """The mean over prompts of |d metric_i / d gate_s| [n_senders] (see
        :meth:`PatchingEngine.gate_gradients`)."""
        return self._mean(lambda part, _: part.gate_gradients().abs().mean(0))

    def mask_gradients(
        self, mixes: Sequence[Mix | None] = (None,), advance: Advance = no_progress
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the mean metric with respect to the node and edge masks, summed over
        ``mixes`` (see :meth:`PatchingEngine.mask_gradients`)."""
        return self._mean(lambda part, step: part.mask_gradients(mixes, step), advance)


def metric_resolution(model: Model) -> float:
    """:data:`METRIC_RESOLUTION`, or :data:`METRIC_RESOLUTION_FLOAT64` for a float64 model."""
    return METRIC_RESOLUTION_FLOAT64 if model.work_dtype == torch.float64 else METRIC_RESOLUTION


def metric_change(
    before: float | torch.Tensor, after: float | torch.Tensor, resolution: float = METRIC_RESOLUTION
) -> torch.Tensor:
    """before - after, or 0 where it is at most ``resolution`` of the larger |metric|
    (:func:`metric_resolution` gives a model's): a patch that changes nothing in exact
    arithmetic moves a planted model's metric by a unit or two in the last place,
    differently on each machine and for each way of summing the same differences, and
    ranking those would decide an AUC. In float64, whatever the metrics' dtype."""
    before = torch.as_tensor(before, dtype=torch.float64)
    after = torch.as_tensor(after, dtype=torch.float64)
    change = before - after
    rounding = change.abs() <= resolution * torch.maximum(before.abs(), after.abs())
    return torch.where(rounding, 0.0, change)
