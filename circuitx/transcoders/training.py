"""Training transcoders, and measuring them: reconstruction and the task metric with the
MLPs replaced."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.models import Model
from circuitx.progress import Advance, no_progress
from circuitx.tasks import Task, get_task
from circuitx.transcoders.corpus import Corpus, held_out_split, holds_out
from circuitx.transcoders.files import (
    TRAINING_RECORD,
    layer_files,
    save_transcoders,
    write_training_record,
)
from circuitx.transcoders.model import (
    PARAMETERS,
    Transcoder,
    Transcoders,
    mlp_activations,
    replacement_hooks,
)


@dataclass
class TrainingSettings:
    n_features: int
    l1: float = 1e-3  # weight of the mean L1 norm of features, in units of the output's RMS
    steps: int = 1000
    batch_tokens: int = 512
    lr: float = 3e-3
    seed: int = 0
    buffer_tokens: int = 65536  # activations gathered per refill, shuffled
    refit: bool = True  # least-squares decoder refit on the last buffer after training


@dataclass
class LayerQuality:
    # None where the MLP's output does not vary (an MLP that writes zeros): no variance
    fraction_of_variance_explained: float | None
    l0: float  # mean number of active features per token
    dead_fraction: float  # features never active on the held-out tokens


# the whole training state, saved with each checkpoint, that an interrupted run resumes from
STATE_FILE = Path("checkpoints") / "training-state.pt"

Checkpoint = Callable[[int, Transcoders, dict[str, Any]], None]


def train_transcoders(
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    settings: TrainingSettings,
    advance: Advance = no_progress,
    checkpoint: Checkpoint | None = None,
    checkpoint_every: int = 0,
    resume: dict[str, Any] | None = None,
) -> Transcoders:
    """Train one transcoder per layer on the corpus's tokens, all layers from the same
    model passes. Loss: mean squared error / output variance + l1 * mean L1 / output RMS
    (so ``l1`` does not depend on the model's scale); Adam with warm-up and cosine decay;
    decoder rows kept unit-norm.

    Every ``checkpoint_every`` steps ``checkpoint(step, transcoders, state)`` is called;
    given that ``state`` as ``resume``, training continues from that step and ends with
    exactly the transcoders an uninterrupted run gives."""
    generator = torch.Generator().manual_seed(settings.seed)
    buffer = _ActivationBuffer(model, layers, corpus, settings, generator)
    transcoders: Transcoders = {}
    scales: dict[int, float] = {}
    if resume is None:
        batch = buffer.next_batch()
        for layer, (x, y) in batch.items():
            # each layer's own generator: a layer's transcoder does not depend on the others
            layer_generator = torch.Generator().manual_seed(settings.seed + 7919 * (layer + 1))
            transcoder = _initial_transcoder(x, y, settings.n_features, layer_generator)
            transcoder.config.update(l1=settings.l1, lr=settings.lr, seed=settings.seed)
            transcoders[layer] = transcoder
            scales[layer] = float((y - y.mean(0)).pow(2).sum(-1).mean().sqrt()) or 1.0
    else:
        buffer.restore(resume["buffer"])
        for layer in layers:
            weights = {
                name: tensor.to(model.device) for name, tensor in resume["weights"][layer].items()
            }
            transcoders[layer] = Transcoder(**weights, config=dict(resume["configs"][layer]))
        scales = dict(resume["scales"])
    params = {
        layer: [getattr(t, name).requires_grad_(True) for name in PARAMETERS]
        for layer, t in transcoders.items()
    }
    optimisers = {layer: torch.optim.Adam(params[layer], lr=settings.lr) for layer in layers}
    schedules = {
        layer: torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(settings.steps))
        for layer, optimiser in optimisers.items()
    }
    start = 0
    if resume is not None:
        start = resume["step"]
        advance(start)
        for layer in layers:
            optimisers[layer].load_state_dict(resume["optimisers"][layer])
            schedules[layer].load_state_dict(resume["schedules"][layer])
    for step in range(start, settings.steps):
        if step > start or resume is not None:
            batch = buffer.next_batch()
        for layer in layers:
            x, y = batch[layer]
            _train_step(transcoders[layer], optimisers[layer], x, y, scales[layer], settings.l1)
        for schedule in schedules.values():
            schedule.step()
        advance(1)
        done = step + 1
        if (
            checkpoint
            and checkpoint_every
            and done % checkpoint_every == 0
            and done < settings.steps
        ):
            state = {
                "step": done,
                "weights": {
                    layer: {name: getattr(t, name).detach() for name in PARAMETERS}
                    for layer, t in transcoders.items()
                },
                "configs": {layer: t.config for layer, t in transcoders.items()},
                "scales": scales,
                "optimisers": {layer: o.state_dict() for layer, o in optimisers.items()},
                "schedules": {layer: s.state_dict() for layer, s in schedules.items()},
                "buffer": buffer.state(),
            }
            checkpoint(done, _frozen(transcoders, done, settings, corpus), state)
    final = _frozen(transcoders, settings.steps, settings, corpus)
    if settings.refit:
        for layer, (x, y) in buffer.data.items():
            refit_decoder(final[layer], x, y)
    return final


def _identity(
    model: Model, layers: Sequence[int], corpus: Corpus, settings: TrainingSettings
) -> dict[str, Any]:
    """What a run's result depends on, which a resumed run must share."""
    digest = hashlib.sha256(corpus.tokens.cpu().numpy().tobytes())
    digest.update(corpus.real.cpu().numpy().tobytes())
    return {
        "model": model.source,
        "layers": list(layers),
        "corpus": digest.hexdigest(),
        **dataclasses.asdict(settings),
    }


def load_interrupted(
    state_file: Path,
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    settings: TrainingSettings,
) -> dict[str, Any]:
    """The training state in ``state_file`` (see :func:`interrupted_run`), for
    :func:`train_and_report` to resume; refused in one line where that run had another
    model, layers, corpus or settings."""
    try:
        state = torch.load(state_file, map_location=model.device, weights_only=False)
        was = state["identity"]
    except Exception as error:  # a state file cut short, or not ours
        raise CircuitxError(f"cannot read {state_file}: {error}") from None
    now = _identity(model, layers, corpus, settings)
    changed = [_changed(key, was.get(key), now[key]) for key in now if was.get(key) != now[key]]
    if changed:
        raise CircuitxError(
            f"{state_file.parent.parent} holds a run interrupted at step {state['step']} "
            f"with another {', '.join(changed)}: run it again as it was to resume it, or "
            "choose a new --out"
        )
    return state


# the train-transcoders option that sets each of a run's settings (the rest: the library's)
OPTION_OF = {
    **{key: f"--{key}" for key in ("l1", "steps", "lr", "seed")},
    "n_features": "--features",
    "batch_tokens": "--batch-tokens",
}


def _changed(key: str, was: Any, now: Any) -> str:
    """How a resumed run's setting ``key`` differs, in train-transcoders' option names."""
    if key == "corpus":
        return "corpus (its tokens differ: another --corpus, --context or --max-tokens)"
    if key == "refit" and isinstance(was, bool):
        return f"{'--refit' if was else '--no-refit'} (not {'--refit' if now else '--no-refit'})"
    if key == "model":  # its source: a built-in model's is its cache folder
        return f"model {was} (not {now})"
    if key == "layers" and isinstance(was, list):
        return f"--layers {','.join(map(str, was))} (not {','.join(map(str, now))})"
    return f"{OPTION_OF.get(key, key)} {was} (not {now})"


def refit_decoder(transcoder: Transcoder, x: torch.Tensor, y: torch.Tensor) -> None:
    """Re-solve the decoder and output bias by least squares with the features fixed, undoing
    the L1 penalty's shrinkage; then rescale each feature so its decoder row is unit-norm
    again (ReLU features scale exactly). Which features fire does not change."""
    with torch.no_grad():
        features = transcoder.features(x)
        design = torch.cat([features, torch.ones(len(x), 1, device=x.device)], 1).double()
        gram = design.T @ design
        ridge = 1e-6 * gram.diagonal().mean()
        gram += ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        solution = torch.linalg.solve(gram, design.T @ y.double()).float()
        decoder, bias = solution[:-1], solution[-1]
        norms = decoder.norm(dim=1)
        alive = norms > 1e-8
        transcoder.W_dec[alive] = decoder[alive] / norms[alive, None]
        transcoder.W_enc[:, alive] *= norms[alive]
        transcoder.b_enc[alive] *= norms[alive]
        transcoder.b_dec_out.copy_(bias)


def _schedule(steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over the first 5% of steps, then cosine decay
    to a tenth."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    return factor


def _frozen(
    transcoders: Transcoders, steps: int, settings: TrainingSettings, corpus: Corpus
) -> Transcoders:
    frozen = {}
    for layer, transcoder in transcoders.items():
        weights = {name: getattr(transcoder, name).detach().clone() for name in PARAMETERS}
        config = {
            **transcoder.config,
            "steps": steps,
            "training_tokens": steps * settings.batch_tokens,
            "corpus": corpus.source,
        }
        frozen[layer] = Transcoder(**weights, config=config)
    return frozen


def _initial_transcoder(
    x: torch.Tensor, y: torch.Tensor, n_features: int, generator: torch.Generator
) -> Transcoder:
    """Random unit-norm decoder rows, a random encoder of its own (normal, scaled by
    1/sqrt(d_in)), and the biases the inputs' and outputs' means (the authors' "mean"
    initialisation)."""
    d_in, d_out = x.shape[1], y.shape[1]
    decoder = torch.randn(n_features, d_out, generator=generator)
    decoder /= decoder.norm(dim=1, keepdim=True)
    encoder = torch.randn(d_in, n_features, generator=generator) / math.sqrt(d_in)
    device = x.device
    return Transcoder(
        W_enc=encoder.to(device),
        b_enc=torch.zeros(n_features, device=device),
        W_dec=decoder.to(device),
        b_dec=x.mean(0).detach().clone(),
        b_dec_out=y.mean(0).detach().clone(),
    )


def _train_step(
    transcoder: Transcoder,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    scale: float,
    l1: float,
) -> None:
    features = transcoder.features(x)
    error = (transcoder.decode(features) - y).pow(2).sum(-1).mean() / scale**2
    sparsity = features.sum(-1).mean() / scale
    optimiser.zero_grad(set_to_none=True)
    (error + l1 * sparsity).backward()
    decoder = transcoder.W_dec
    with torch.no_grad():  # keep rows unit-norm: drop the gradient along each row, renormalise
        decoder.grad -= (decoder.grad * decoder).sum(1, keepdim=True) * decoder
    optimiser.step()
    with torch.no_grad():
        decoder /= decoder.norm(dim=1, keepdim=True).clamp_min(1e-12)


class _ActivationBuffer:
    """Shuffled MLP inputs and outputs of many corpus tokens, refilled as batches are drawn.
    Its state is small (the corpus rows it holds and their shuffle, not the activations),
    so that a checkpoint can carry it."""

    def __init__(
        self,
        model: Model,
        layers: Sequence[int],
        corpus: Corpus,
        settings: TrainingSettings,
        generator: torch.Generator,
    ) -> None:
        self.model, self.layers, self.corpus = model, list(layers), corpus
        self.batch_tokens, self.capacity = settings.batch_tokens, settings.buffer_tokens
        self.generator = generator
        self.order = torch.randperm(len(corpus.tokens), generator=generator)
        self.cursor = 0
        self.data: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rows: list[int] = []  # the corpus rows whose tokens the buffer holds
        self.permutation = torch.zeros(0, dtype=torch.long)  # data = their tokens[permutation]
        self.used = 0

    def next_batch(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        if not self.data or self.used + self.batch_tokens > len(self.data[self.layers[0]][0]):
            self._refill()
        start, self.used = self.used, self.used + self.batch_tokens
        return {
            layer: (x[start : self.used], y[start : self.used])
            for layer, (x, y) in self.data.items()
        }

    def state(self) -> dict[str, Any]:
        return {
            "order": self.order,
            "cursor": self.cursor,
            "generator": self.generator.get_state(),
            "rows": self.rows,
            "permutation": self.permutation,
            "used": self.used,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Take ``state`` (from :meth:`state`), recomputing the activations it holds."""
        self.order, self.cursor, self.used = state["order"], state["cursor"], state["used"]
        self.generator.set_state(state["generator"])
        self.rows, self.permutation = list(state["rows"]), state["permutation"]
        self.data = self._shuffled(self._activations(self.rows), self.permutation)

    def _refill(self) -> None:
        corpus = self.corpus
        if self.data and corpus.n_tokens <= self.capacity:  # the whole corpus is in the buffer
            n = len(self.data[self.layers[0]][0])
            shuffle = torch.randperm(n, generator=self.generator)
            self.data = self._shuffled(self.data, shuffle)
            self.permutation = self.permutation[shuffle]
            self.used = 0
            return
        per_row = corpus.real.sum(1).tolist()  # real tokens in each row
        target = max(min(self.capacity, corpus.n_tokens), self.batch_tokens)
        rows: list[int] = []
        gathered = 0
        while gathered < target:  # a batch larger than the corpus repeats its rows
            if self.cursor == len(self.order):
                self.order = torch.randperm(len(corpus.tokens), generator=self.generator)
                self.cursor = 0
            rows.append(int(self.order[self.cursor]))
            gathered += per_row[rows[-1]]
            self.cursor += 1
        activations = self._activations(rows)
        n = len(activations[self.layers[0]][0])
        self.rows, self.permutation = rows, torch.randperm(n, generator=self.generator)
        self.data = self._shuffled(activations, self.permutation)
        self.used = 0

    def _activations(self, rows: list[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """MLP inputs and outputs of the real tokens of corpus ``rows``, in order."""
        corpus = self.corpus
        pieces = []
        for chunk in torch.tensor(rows, dtype=torch.long).split(64):
            pieces.append(
                mlp_activations(self.model, corpus.tokens[chunk], self.layers, corpus.real[chunk])
            )
        return {
            layer: tuple(torch.cat([piece[layer][i] for piece in pieces]) for i in (0, 1))
            for layer in self.layers
        }

    def _shuffled(
        self, data: dict[int, tuple[torch.Tensor, torch.Tensor]], order: torch.Tensor
    ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        order = order.to(self.model.device)
        return {layer: (x[order].float(), y[order].float()) for layer, (x, y) in data.items()}


def layer_quality(
    model: Model, transcoders: Transcoders, tokens: torch.Tensor, real: torch.Tensor
) -> dict[int, LayerQuality]:
    """Fraction of variance explained, L0 and dead features of each transcoder on ``tokens``."""
    quality = {}
    with torch.no_grad():
        acts = mlp_activations(model, tokens, list(transcoders), real)
        for layer, (x, y) in acts.items():
            transcoder = transcoders[layer]
            features = transcoder.features(x.float())
            residual = (transcoder.decode(features) - y).pow(2).sum()
            variance = float((y - y.mean(0)).pow(2).sum())
            quality[layer] = LayerQuality(
                fraction_of_variance_explained=(
                    float(1 - residual / variance) if variance > 1e-12 else None
                ),
                l0=float((features > 0).float().sum(-1).mean()),
                dead_fraction=float(((features > 0).sum(0) == 0).float().mean()),
            )
    return quality


def task_metric_with_replacement(
    model: Model, transcoders: Transcoders, task_name: str | Task, n_prompts: int, seed: int
) -> dict[str, float]:
    """The task's default metric on clean prompts, with the original MLPs and with the
    transcoders in their place; ``relative_change`` = |replaced - original| / |original|,
    None where the original is 0 (a tracr model's l2 is 0 on clean prompts by its making)."""
    task = get_task(task_name)
    data = task.make_data(model, n_prompts, seed)
    at = data.readout_positions
    original = model.run(data.clean, positions=at).flatten(0, 1)
    replaced = model.run(data.clean, replacement_hooks(transcoders), positions=at).flatten(0, 1)
    name = task.default_metric
    before = float(task.metric(name, original, data, original).mean())
    after = float(task.metric(name, replaced, data, original).mean())
    return {
        "metric": name,
        "original": before,
        "replaced": after,
        "relative_change": abs(after - before) / abs(before) if abs(before) > 1e-9 else None,
        "replaced_accuracy": task.accuracy(replaced, data),
    }


def interrupted_run(out: str | Path) -> Path | None:
    """The training state an interrupted run left in ``out`` (a directory with checkpoints
    and no training record), or None."""
    out = Path(out).expanduser()
    state = out / STATE_FILE
    if state.is_file() and not (out / TRAINING_RECORD).exists():
        return state
    return None


def train_and_report(
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    settings: TrainingSettings,
    out: Path,
    tasks: Sequence[str | Task],
    n_prompts: int,
    checkpoint_every: int = 0,
    advance: Advance = no_progress,
    resume: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train, save to ``out`` (checkpoints under ``out/checkpoints/step-N``), and measure:
    per layer FVE, L0 and dead features on held-out corpus sequences; per task the task
    metric with every trained MLP replaced (``tasks``: names, task files or tasks).

    With checkpoints, the whole training state is saved beside them; given as ``resume``
    (see :func:`load_interrupted`), a run continues from the last checkpoint in ``out``. A
    run that fails or is interrupted leaves only its checkpoints: no final transcoders
    without their record."""
    tasks = [get_task(task) for task in tasks]  # an unknown one refused before training
    start_step = resume["step"] if resume else 0
    identity = _identity(model, layers, corpus, settings)
    train, held_out = held_out_split(corpus, settings.seed)

    def checkpoint(step: int, transcoders: Transcoders, state: dict[str, Any]) -> None:
        saved = out / "checkpoints" / f"step-{step}"
        save_transcoders(transcoders, saved, model.name)
        # the model it is for, which --transcoders given this checkpoint checks
        record = {"model": model.name, "model_source": model.source, "step": step}
        write_training_record(saved, {**record, **dataclasses.asdict(settings)})
        with atomic_open(out / STATE_FILE, "wb") as handle:
            torch.save({**state, "identity": identity}, handle)

    made = not out.exists()
    try:
        start = time.perf_counter()
        transcoders = train_transcoders(
            model, layers, train, settings, advance, checkpoint, checkpoint_every, resume
        )
        seconds = time.perf_counter() - start
        save_transcoders(transcoders, out, model.name)
        report = _report(model, layers, corpus, held_out, settings, transcoders, tasks, n_prompts)
        tokens = (settings.steps - start_step) * settings.batch_tokens
        report.update(
            resumed_from_step=start_step or None,
            train_seconds=seconds,
            seconds_per_layer_per_million_tokens=seconds / len(layers) / (tokens / 1e6),
            out=str(out),
        )
        write_training_record(out, report)
    except BaseException:
        if out.is_dir():  # final files in out are this run's: out was new, or held checkpoints
            for path in layer_files(out).values():
                path.unlink(missing_ok=True)
        if made and not (out / STATE_FILE).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    (out / STATE_FILE).unlink(missing_ok=True)  # done: nothing to resume
    return report


def _report(
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    held_out: Corpus,
    settings: TrainingSettings,
    transcoders: Transcoders,
    tasks: Sequence[Task],
    n_prompts: int,
) -> dict[str, Any]:
    quality = layer_quality(model, transcoders, held_out.tokens, held_out.real)
    replaced = {}
    for task in tasks:
        try:
            replaced[task.name] = task_metric_with_replacement(
                model, transcoders, task, n_prompts, settings.seed
            )
        except CircuitxError as error:  # a task this model cannot express
            replaced[task.name] = {"error": str(error)}
    return {
        "model": model.name,
        "model_source": model.source,  # what a later run checks its model against
        "layers": list(layers),
        "corpus": corpus.source,
        "corpus_tokens": corpus.n_tokens,
        "context": int(corpus.tokens.shape[1]),  # tokens a sequence (BOS included)
        "held_out_tokens": held_out.n_tokens,
        "held_out_is_training": not holds_out(corpus),  # one sequence: measured on it
        "n_features": settings.n_features,
        "l1": settings.l1,
        "lr": settings.lr,
        "steps": settings.steps,
        "batch_tokens": settings.batch_tokens,
        "training_tokens": settings.steps * settings.batch_tokens,
        "seed": settings.seed,
        "layers_quality": {str(layer): vars(q) for layer, q in quality.items()},
        "task_metric_replaced": replaced,
    }
