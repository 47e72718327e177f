"""Transcoders (Dunefsky, Chlenski & Nanda 2024): wide sparse MLPs trained to imitate a
model's MLPs; authors' code jacobdunefsky/transcoder_circuits.

A transcoder for layer L reads what the MLP reads, ``blocks.L.ln2.hook_normalized`` (the
residual stream centred and scaled by LayerNorm; TransformerLens folds the LayerNorm gain
into the MLP), and predicts what it writes, ``blocks.L.hook_mlp_out``:

    f = ReLU((x - b_dec) @ W_enc + b_enc),    out = f @ W_dec + b_dec_out

with unit-norm decoder rows. Files follow the authors' layout (the one of the pretrained
GPT-2 small transcoders, ``pchlenski/gpt2-transcoders``): one
``final_sparse_autoencoder_{model}_blocks.{L}.ln2.hook_normalized_{n_features}.pt`` per
layer holding ``{"cfg": ..., "state_dict": {W_enc, b_enc, W_dec, b_dec, b_dec_out}}``.
Here ``cfg`` is a plain dict; the authors' pickled config class is read without importing it.
"""

from __future__ import annotations

import math
import pickle
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from circuitx.errors import CircuitxError
from circuitx.models import Model, canonical_model_name, local_model_hub_id, mlp_output_hook
from circuitx.progress import Advance, no_progress, progress_bar

PRETRAINED = {"gpt2": "pchlenski/gpt2-transcoders"}  # canonical model name -> hub repo
FILE_RE = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized_(\d+)\.pt$")
PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")
BUILTIN_CORPUS = "tasks"  # text generated from every task's prompts


def input_hook(layer: int) -> str:
    """Where a layer's transcoder reads: the MLP's normalised input."""
    return f"blocks.{layer}.ln2.hook_normalized"


@dataclass
class Transcoder:
    """One layer's transcoder: encoder [d_in, n_features], decoder [n_features, d_out]."""

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor  # subtracted from the input before encoding [d_in]
    b_dec_out: torch.Tensor  # added to the output [d_out]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., n_features] of normalised MLP inputs x [..., d_in]."""
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.W_dec + self.b_dec_out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.features(x))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).detach().cpu().contiguous() for name in PARAMETERS}

    def to(self, device: torch.device, dtype: torch.dtype) -> Transcoder:
        moved = {name: getattr(self, name).to(device, dtype) for name in PARAMETERS}
        return Transcoder(**moved, config=dict(self.config))


Transcoders = dict[int, Transcoder]  # layer -> transcoder


# ---------------------------------------------------------------------------- files


def file_name(model_name: str, layer: int, n_features: int) -> str:
    return f"final_sparse_autoencoder_{model_name}_{input_hook(layer)}_{n_features}.pt"


def save_transcoders(
    transcoders: Transcoders, directory: str | os.PathLike, model_name: str
) -> None:
    """Write each layer's file into ``directory`` (created if missing), atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for layer, transcoder in transcoders.items():
        path = directory / file_name(_file_safe(model_name), layer, transcoder.n_features)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            payload = {"cfg": _config_for(transcoder, layer), "state_dict": transcoder.state_dict()}
            torch.save(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name if os.sep in name else name)


def _config_for(transcoder: Transcoder, layer: int) -> dict[str, Any]:
    return {
        **transcoder.config,
        "is_transcoder": True,
        "hook_point": input_hook(layer),
        "out_hook_point": mlp_output_hook(layer),
        "hook_point_layer": layer,
        "d_in": transcoder.d_in,
        "d_out": transcoder.d_out,
        "d_sae": transcoder.n_features,
    }


def load_transcoders(source: str, layers: Sequence[int] | None = None) -> Transcoders:
    """Transcoders from a local directory in the authors' layout, or from a hub repo
    (e.g. ``pchlenski/gpt2-transcoders``); only ``layers`` if given."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = _layer_files(path)
        where = str(path)
    elif path.exists():
        raise CircuitxError(f"transcoders must be a directory, not a file: {source}")
    elif source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CircuitxError(f"transcoder directory not found: {source}")
    else:
        files = _hub_files(source, layers)
        where = source
    if not files:
        raise CircuitxError(f"no transcoder files (*blocks.L.ln2.hook_normalized_N.pt) in {where}")
    wanted = sorted(files) if layers is None else list(layers)
    missing = [layer for layer in wanted if layer not in files]
    if missing:
        have = ", ".join(map(str, sorted(files)))
        raise CircuitxError(
            f"no transcoder for layer {', '.join(map(str, missing))} in {where} (it has layers {have})"
        )
    return {layer: read_transcoder(files[layer]) for layer in wanted}


def _layer_files(directory: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        match = FILE_RE.search(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def _hub_files(repo_id: str, layers: Sequence[int] | None) -> dict[int, Path]:
    """Download the layer files of hub repo ``repo_id`` (or find them in the local hub cache)."""
    try:
        from huggingface_hub import hf_hub_download, list_repo_files
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise CircuitxError("loading transcoders from the hub needs huggingface_hub") from None

    def wanted(name: str) -> bool:
        match = FILE_RE.search(name)
        return bool(match) and (layers is None or int(match.group(1)) in layers)

    try:
        names = [name for name in list_repo_files(repo_id) if wanted(name)]
    except Exception as online_error:
        try:  # offline: whatever an earlier download left in the hub cache
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:
            raise CircuitxError(
                f"cannot load transcoders {repo_id!r}: not a local directory, and the hub "
                f"cannot be reached ({_first_line(online_error)})"
            ) from None
        return {layer: p for layer, p in _layer_files(snapshot).items() if wanted(p.name)}
    files: dict[int, Path] = {}
    for name in names:
        try:
            local = hf_hub_download(repo_id, name)
        except Exception as error:
            raise CircuitxError(f"cannot download {repo_id}/{name}: {_first_line(error)}") from None
        files[int(FILE_RE.search(name).group(1))] = Path(local)
    return files


def read_transcoder(path: Path) -> Transcoder:
    """One transcoder file: ours (plain dict config) or the authors' (pickled config class,
    read as a record without importing the class)."""
    try:
        payload = _load_weights_only(path)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise CircuitxError(f"cannot read transcoder file {path}: {_first_line(error)}") from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or any(name not in state for name in PARAMETERS[:4]):
        raise CircuitxError(
            f"not a transcoder file: {path} (needs a state_dict with {', '.join(PARAMETERS)})"
        )
    config = _config_dict(payload.get("cfg"))
    weights = {name: state[name].float() for name in PARAMETERS[:4]}
    weights["b_dec_out"] = state.get("b_dec_out", torch.zeros(weights["W_dec"].shape[1])).float()
    transcoder = Transcoder(**weights, config=config)
    shapes_agree = (
        transcoder.W_enc.ndim == 2
        and transcoder.W_dec.shape == transcoder.W_enc.shape[::-1]
        and transcoder.b_enc.shape == (transcoder.n_features,)
        and transcoder.b_dec.shape == (transcoder.d_in,)
        and transcoder.b_dec_out.shape == (transcoder.d_out,)
    )
    if not shapes_agree:
        raise CircuitxError(f"transcoder file {path} has inconsistent weight shapes")
    return transcoder


class _Record:
    """Stand-in for a class a checkpoint pickled but this package does not import."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state if isinstance(state, dict) else {"state": state})


def _load_weights_only(path: Path) -> Any:
    """``torch.load`` with ``weights_only``; each foreign class it meets becomes a _Record."""
    stand_ins: list[type] = []
    for _ in range(32):
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            match = re.search(r"GLOBAL ([\w.]+)\.(\w+) was not an allowed global", str(error))
            if not match or match.group(1).split(".")[0] in ("torch", "builtins", "numpy"):
                raise
            stand_ins.append(type(match.group(2), (_Record,), {"__module__": match.group(1)}))
    raise CircuitxError(f"cannot read transcoder file {path}: too many unknown classes")


def _config_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return dict(cfg)
    if cfg is None:
        return {}
    return {key: value for key, value in vars(cfg).items() if _plain(value)}


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def check_transcoders(transcoders: Transcoders, model: Model, layers: Sequence[int]) -> None:
    """Fail in one line unless there is a transcoder of the model's width for each layer."""
    missing = [layer for layer in layers if layer not in transcoders]
    if missing:
        raise CircuitxError(
            f"no transcoder for layer {', '.join(map(str, missing))} "
            f"(have {', '.join(map(str, sorted(transcoders))) or 'none'})"
        )
    for layer in layers:
        transcoder = transcoders[layer]
        if (transcoder.d_in, transcoder.d_out) != (model.d_model, model.d_model):
            raise CircuitxError(
                f"the layer-{layer} transcoder maps {transcoder.d_in} -> {transcoder.d_out} "
                f"dimensions; model {model.name!r} has d_model {model.d_model}"
            )


def check_layers(model: Model, layers: Sequence[int]) -> None:
    if not model.has_mlp:
        raise CircuitxError(f"model {model.name!r} has no MLPs for transcoders to replace")
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise CircuitxError(
            f"layer {', '.join(map(str, bad))} does not exist: model {model.name!r} has "
            f"layers 0-{model.n_layers - 1}"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# ---------------------------------------------------------------------------- corpus


@dataclass
class Corpus:
    """Token sequences [n, context] (BOS first where the model has one) and which of their
    tokens are real [n, context] (False: padding)."""

    tokens: torch.Tensor
    real: torch.Tensor
    source: str

    @property
    def n_tokens(self) -> int:
        return int(self.real.sum())


def load_corpus(
    model: Model, corpus: str, context: int, seed: int, max_tokens: int = 2_000_000
) -> Corpus:
    """``corpus`` as token sequences: ``tasks`` (prompts every task generates for this model,
    each followed by its answer), a local text file, or a Hugging Face dataset name."""
    context = min(context, model.n_ctx)
    if corpus == BUILTIN_CORPUS:
        return _task_corpus(model, context, seed)
    path = Path(corpus).expanduser()
    if path.is_file():
        text = path.read_text(errors="replace")
        if not text.strip():
            raise CircuitxError(f"corpus {corpus} is empty")
        return _chunk(model, [text], context, str(path), max_tokens)
    if path.exists() or corpus.startswith((".", "/", "~")) or corpus.endswith(".txt"):
        raise CircuitxError(f"corpus file not found: {corpus}")
    return _chunk(model, _dataset_texts(corpus, max_tokens), context, corpus, max_tokens)


def _dataset_texts(name: str, max_tokens: int) -> Iterator[str]:
    try:
        import datasets

        stream = datasets.load_dataset(name, split="train", streaming=True)
        first = next(iter(stream))
    except Exception as error:
        raise CircuitxError(
            f"corpus {name!r} is not a file, and no dataset of that name can be loaded "
            f"({_first_line(error)})"
        ) from None
    if "text" not in first:
        raise CircuitxError(f"dataset {name!r} has no 'text' column")
    characters = 0
    for row in stream:
        yield row["text"]
        characters += len(row["text"])
        if characters > 8 * max_tokens:  # comfortably more than max_tokens tokens
            return


def _chunk(
    model: Model, texts: Iterator[str] | list[str], context: int, source: str, max_tokens: int
) -> Corpus:
    bos = [] if model.bos_token_id is None else [model.bos_token_id]
    width = context - len(bos)
    stream: list[int] = []
    for text in texts:
        stream += model.encode(text)
        if len(stream) >= max_tokens:
            break
    stream = stream[:max_tokens]
    if not stream:
        raise CircuitxError(f"corpus {source} has no tokens")
    rows = [bos + stream[i : i + width] for i in range(0, len(stream), width)]
    return _pad(model, rows, context, source)


def _task_corpus(model: Model, context: int, seed: int, per_task: int = 512) -> Corpus:
    from circuitx.tasks import TASKS

    rows: list[list[int]] = []
    for task in TASKS.values():
        try:
            data = task.make_data(model, per_task, seed)
        except CircuitxError:  # a task this model's vocabulary cannot express
            continue
        end = data.positions["END"]
        for batch in (data.clean, data.corrupted):
            for row, last, answer in zip(batch.tolist(), end.tolist(), data.answer.tolist()):
                rows.append((row[: last + 1] + [answer])[:context])
    if not rows:
        raise CircuitxError(f"no task can make prompts for model {model.name!r}")
    return _pad(model, rows, context, BUILTIN_CORPUS)


def _pad(model: Model, rows: list[list[int]], context: int, source: str) -> Corpus:
    width = min(context, max(len(row) for row in rows))
    tokens = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)
    real = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row[:width])
        real[i, : len(row)] = True
    return Corpus(tokens, real, source)


# ---------------------------------------------------------------------------- activations


def mlp_activations(
    model: Model, tokens: torch.Tensor, layers: Sequence[int], real: torch.Tensor | None = None
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the MLP's normalised input and its output at the real tokens:
    ([N, d_model], [N, d_model])."""
    names = [name for layer in layers for name in (input_hook(layer), mlp_output_hook(layer))]
    _, cache = model.run_with_cache(tokens, names)
    keep = torch.ones(tokens.shape, dtype=torch.bool) if real is None else real
    keep = keep.to(model.device)
    return {
        layer: (cache[input_hook(layer)][keep], cache[mlp_output_hook(layer)][keep])
        for layer in layers
    }


def replacement_hooks(transcoders: Transcoders) -> list[tuple[str, Callable]]:
    """Hooks that replace each MLP's output by its transcoder's reconstruction."""
    hooks: list[tuple[str, Callable]] = []
    for layer, transcoder in transcoders.items():
        seen: dict[str, torch.Tensor] = {}

        def read(x: torch.Tensor, seen: dict = seen) -> None:
            seen["x"] = x

        def write(_: torch.Tensor, seen: dict = seen, transcoder: Transcoder = transcoder):
            return transcoder(seen["x"])

        hooks += [(input_hook(layer), read), (mlp_output_hook(layer), write)]
    return hooks


# ---------------------------------------------------------------------------- training


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
    fraction_of_variance_explained: float
    l0: float  # mean number of active features per token
    dead_fraction: float  # features never active on the held-out tokens


def train_transcoders(
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    settings: TrainingSettings,
    advance: Advance = no_progress,
    checkpoint: Callable[[int, Transcoders], None] | None = None,
    checkpoint_every: int = 0,
) -> Transcoders:
    """Train one transcoder per layer on the corpus's tokens, all layers from the same
    model passes. Loss: mean squared error / output variance + l1 * mean L1 / output RMS
    (so ``l1`` does not depend on the model's scale); Adam with warm-up and cosine decay;
    decoder rows kept unit-norm."""
    generator = torch.Generator().manual_seed(settings.seed)
    buffer = _ActivationBuffer(model, layers, corpus, settings, generator)
    first = buffer.next_batch()
    params: dict[int, list[torch.Tensor]] = {}
    scales: dict[int, float] = {}
    for layer, (x, y) in first.items():
        # each layer's own generator: a layer's transcoder does not depend on the others
        layer_generator = torch.Generator().manual_seed(settings.seed + 7919 * (layer + 1))
        transcoder = _initial_transcoder(x, y, settings.n_features, layer_generator)
        transcoder.config.update(l1=settings.l1, lr=settings.lr, seed=settings.seed)
        params[layer] = [getattr(transcoder, name) for name in PARAMETERS]
        scales[layer] = float((y - y.mean(0)).pow(2).sum(-1).mean().sqrt()) or 1.0
    transcoders = {layer: Transcoder(*params[layer]) for layer in layers}
    for layer, tensors in params.items():
        for tensor in tensors:
            tensor.requires_grad_(True)
    optimisers = {layer: torch.optim.Adam(params[layer], lr=settings.lr) for layer in layers}
    schedules = [
        torch.optim.lr_scheduler.LambdaLR(optimiser, _schedule(settings.steps))
        for optimiser in optimisers.values()
    ]
    batch = first
    for step in range(settings.steps):
        if step:
            batch = buffer.next_batch()
        for layer in layers:
            x, y = batch[layer]
            _train_step(transcoders[layer], optimisers[layer], x, y, scales[layer], settings.l1)
        for schedule in schedules:
            schedule.step()
        advance(1)
        done = step + 1
        if (
            checkpoint
            and checkpoint_every
            and done % checkpoint_every == 0
            and done < settings.steps
        ):
            checkpoint(done, _frozen(transcoders, done, settings, corpus))
    final = _frozen(transcoders, settings.steps, settings, corpus)
    if settings.refit:
        for layer, (x, y) in buffer.data.items():
            refit_decoder(final[layer], x, y)
    return final


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
    """Random unit-norm decoder rows, the encoder their transpose scaled to the input, and the
    biases the inputs' and outputs' means (the authors' "mean" initialisation)."""
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
    """Shuffled MLP inputs and outputs of many corpus tokens, refilled as batches are drawn."""

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
        self.used = 0

    def next_batch(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        if not self.data or self.used + self.batch_tokens > len(self.data[self.layers[0]][0]):
            self._refill()
        start, self.used = self.used, self.used + self.batch_tokens
        return {
            layer: (x[start : self.used], y[start : self.used])
            for layer, (x, y) in self.data.items()
        }

    def _refill(self) -> None:
        corpus = self.corpus
        if self.data and corpus.n_tokens <= self.capacity:  # the whole corpus is in the buffer
            n = len(self.data[self.layers[0]][0])
            shuffle = torch.randperm(n, generator=self.generator).to(self.model.device)
            self.data = {layer: (x[shuffle], y[shuffle]) for layer, (x, y) in self.data.items()}
            self.used = 0
            return
        per_row = max(1, int(corpus.real.sum(1).float().mean()))
        target = max(min(self.capacity, corpus.n_tokens), self.batch_tokens)
        rows: list[int] = []
        while len(rows) * per_row < target:
            if self.cursor == len(self.order):
                self.order = torch.randperm(len(corpus.tokens), generator=self.generator)
                self.cursor = 0
            rows.append(int(self.order[self.cursor]))
            self.cursor += 1
        pieces = []
        for chunk in torch.tensor(rows).split(64):
            pieces.append(
                mlp_activations(self.model, corpus.tokens[chunk], self.layers, corpus.real[chunk])
            )
        n = sum(len(piece[self.layers[0]][0]) for piece in pieces)
        shuffle = torch.randperm(n, generator=self.generator).to(self.model.device)
        self.data = {
            layer: tuple(
                torch.cat([piece[layer][i] for piece in pieces])[shuffle].float() for i in (0, 1)
            )
            for layer in self.layers
        }
        self.used = 0


# ---------------------------------------------------------------------------- quality


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
            variance = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
            quality[layer] = LayerQuality(
                fraction_of_variance_explained=float(1 - residual / variance),
                l0=float((features > 0).float().sum(-1).mean()),
                dead_fraction=float(((features > 0).sum(0) == 0).float().mean()),
            )
    return quality


def task_metric_with_replacement(
    model: Model, transcoders: Transcoders, task_name: str, n_prompts: int, seed: int
) -> dict[str, float]:
    """The task's default metric on clean prompts, with the original MLPs and with the
    transcoders in their place; ``relative_change`` = |replaced - original| / |original|."""
    from circuitx.tasks import get_task

    task = get_task(task_name)
    data = task.make_data(model, n_prompts, seed)
    end = data.positions["END"]
    original = model.run(data.clean, positions=end)
    replaced = model.run(data.clean, replacement_hooks(transcoders), positions=end)
    name = task.default_metric
    before = float(task.metric(name, original, data, original).mean())
    after = float(task.metric(name, replaced, data, original).mean())
    return {
        "metric": name,
        "original": before,
        "replaced": after,
        "relative_change": abs(after - before) / max(abs(before), 1e-12),
        "replaced_accuracy": task.accuracy(replaced, data),
    }


def held_out_split(
    corpus: Corpus, seed: int, share: float = 0.1, cap: int = 256
) -> tuple[Corpus, Corpus]:
    """(training, held-out) corpora: a seeded share of the sequences, at most ``cap``, held out."""
    n = len(corpus.tokens)
    if n < 2:
        return corpus, corpus
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_held = min(cap, max(1, int(n * share)))
    held, train = order[:n_held], order[n_held:]
    return (
        Corpus(corpus.tokens[train], corpus.real[train], corpus.source),
        Corpus(corpus.tokens[held], corpus.real[held], corpus.source),
    )


# ---------------------------------------------------------------------------- for a model

# how the built-in models' transcoders are trained the first time a method needs them
BUILTIN_SETTINGS = TrainingSettings(n_features=1024)
BUILTIN_CONTEXT = 128


def transcoders_for(model: Model, source: str | None) -> tuple[Transcoders, str]:
    """Transcoders for every MLP of ``model`` and where they came from: ``source`` (a
    directory or hub repo); without one, the pretrained ones of a known hub model, or, for
    a built-in model, ones trained on the task corpus once and cached."""
    layers = list(range(model.n_layers))
    check_layers(model, layers)
    if source is None:
        if model.builtin:
            return builtin_transcoders(model), f"built-in ({BUILTIN_CORPUS} corpus)"
        hub = model.hub_id or local_model_hub_id(model.source)
        source = PRETRAINED.get(canonical_model_name(hub)) if hub else None
        if source is None:
            raise CircuitxError(
                f"no transcoders known for model {model.name!r}: pass --transcoders DIR "
                "(train them with `circuitx train-transcoders`)"
            )
    transcoders = load_transcoders(source, layers)
    check_transcoders(transcoders, model, layers)
    return {layer: t.to(model.device, model.dtype) for layer, t in transcoders.items()}, source


def builtin_transcoders(model: Model) -> Transcoders:
    """A built-in model's transcoders, trained with ``BUILTIN_SETTINGS`` on first use."""
    from circuitx.builtin import BUILTIN_MODELS, cache_root

    spec = BUILTIN_MODELS[model.builtin]
    s = BUILTIN_SETTINGS
    key = f"{spec.name}-v{spec.version}-f{s.n_features}-l1{s.l1:g}-s{s.steps}-lr{s.lr:g}-b{s.batch_tokens}"
    directory = cache_root() / "transcoders" / key
    layers = list(range(model.n_layers))
    if directory.is_dir() and len(_layer_files(directory)) == len(layers):
        return {
            layer: t.to(model.device, model.dtype)
            for layer, t in load_transcoders(str(directory)).items()
        }
    corpus = load_corpus(model, BUILTIN_CORPUS, BUILTIN_CONTEXT, s.seed)
    with progress_bar(f"training transcoders for {model.name} (first use)", s.steps) as advance:
        transcoders = train_transcoders(model, layers, corpus, s, advance)
    save_transcoders(transcoders, directory, spec.name)
    return transcoders


def parse_layers(spec: str, model: Model) -> list[int]:
    """``all`` or comma-separated layer numbers, checked against the model."""
    if spec == "all":
        layers = list(range(model.n_layers))
    else:
        try:
            layers = sorted({int(part) for part in spec.split(",") if part.strip()})
        except ValueError:
            raise CircuitxError(
                f"--layers must be 'all' or numbers like 0,2,5, not {spec!r}"
            ) from None
        if not layers:
            raise CircuitxError("--layers names no layer")
    check_layers(model, layers)
    return layers


def train_and_report(
    model: Model,
    layers: Sequence[int],
    corpus: Corpus,
    settings: TrainingSettings,
    out: Path,
    tasks: Sequence[str],
    n_prompts: int,
    checkpoint_every: int = 0,
    advance: Advance = no_progress,
) -> dict[str, Any]:
    """Train, save to ``out`` (checkpoints under ``out/checkpoints/step-N``), and measure:
    per layer FVE, L0 and dead features on held-out corpus sequences; per task the task
    metric with every trained MLP replaced."""
    import json

    from circuitx.files import atomic_open

    train, held_out = held_out_split(corpus, settings.seed)

    def checkpoint(step: int, transcoders: Transcoders) -> None:
        save_transcoders(transcoders, out / "checkpoints" / f"step-{step}", model.name)

    start = time.perf_counter()
    transcoders = train_transcoders(
        model, layers, train, settings, advance, checkpoint, checkpoint_every
    )
    seconds = time.perf_counter() - start
    save_transcoders(transcoders, out, model.name)
    quality = layer_quality(model, transcoders, held_out.tokens, held_out.real)
    replaced = {}
    for task in tasks:
        try:
            replaced[task] = task_metric_with_replacement(
                model, transcoders, task, n_prompts, settings.seed
            )
        except CircuitxError as error:  # a task this model cannot express
            replaced[task] = {"error": str(error)}
    tokens = settings.steps * settings.batch_tokens
    report = {
        "model": model.name,
        "layers": list(layers),
        "corpus": corpus.source,
        "corpus_tokens": corpus.n_tokens,
        "held_out_tokens": held_out.n_tokens,
        "n_features": settings.n_features,
        "l1": settings.l1,
        "lr": settings.lr,
        "steps": settings.steps,
        "batch_tokens": settings.batch_tokens,
        "training_tokens": tokens,
        "seed": settings.seed,
        "train_seconds": seconds,
        "seconds_per_layer_per_million_tokens": seconds / len(layers) / (tokens / 1e6),
        "layers_quality": {str(layer): vars(q) for layer, q in quality.items()},
        "task_metric_replaced": replaced,
        "out": str(out),
    }
    with atomic_open(out / "training.json") as handle:
        json.dump(report, handle, indent=1)
    return report
