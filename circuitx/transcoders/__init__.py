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

import dataclasses
import os
from pathlib import Path

import torch

from circuitx.builtin import BUILD_THREADS, BUILTIN_MODELS, FAMILIES, cache_root, torch_threads
from circuitx.errors import CircuitxError
from circuitx.models import (
    HUB_ALIASES,
    Model,
    canonical_model_name,
    local_model_hub_id,
    looks_like_path,
)
from circuitx.progress import progress_bar
from circuitx.transcoders.corpus import (
    BUILTIN_CORPUS,
    Corpus,
    corpus_file_text,
    held_out_split,
    holds_out,
    load_corpus,
)
from circuitx.transcoders.files import (
    NO_MLPS,
    PRETRAINED,
    check_layers,
    check_transcoders,
    load_transcoders,
    parse_layers,
    read_transcoder,
    save_transcoders,
    trained_for,
    write_training_record,
)
from circuitx.transcoders.model import (
    Transcoder,
    Transcoders,
    input_hook,
    mlp_activations,
    replacement_hooks,
)
from circuitx.transcoders.training import (
    LayerQuality,
    TrainingSettings,
    interrupted_run,
    layer_quality,
    load_interrupted,
    refit_decoder,
    task_metric_with_replacement,
    train_and_report,
    train_transcoders,
)

# how the built-in models' transcoders are trained the first time a method needs them
BUILTIN_SETTINGS = TrainingSettings(n_features=1024)


BUILTIN_CONTEXT = 128


def transcoders_for(
    model: Model, source: str | None, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[Transcoders, str]:
    """Transcoders for every MLP of ``model`` and where they came from: ``source`` (a
    directory or hub repo); without one, the pretrained ones of a known hub model, or, for
    a built-in model, ones trained on the task corpus once and cached in ``cache_dir``."""
    layers = list(range(model.n_layers))
    check_layers(model, layers)
    if source is None:
        if model.builtin:
            return builtin_transcoders(model, cache_dir), f"built-in ({BUILTIN_CORPUS} corpus)"
        source = pretrained_transcoders(model.hub_id or local_model_hub_id(model.source))
        if source is None:
            raise CircuitxError(
                f"no transcoders known for model {model.name!r}: pass --transcoders DIR "
                "(train them with `circuitx train-transcoders`)"
            )
    transcoders = load_transcoders(source, layers)
    check_transcoders(transcoders, model)
    return _on_model(transcoders, model), source


def transcoders_known(model_name: str) -> bool:
    """Whether :func:`transcoders_for` finds transcoders for the model ``model_name``
    names (a built-in model or family, a hub name or a local directory) without a
    source: a built-in model's are trained, a known hub model's downloaded. True for a
    path to no directory: loading it says what is wrong."""
    if model_name in BUILTIN_MODELS or model_name in FAMILIES:
        return True
    path = Path(model_name).expanduser()
    if path.is_dir():
        hub = local_model_hub_id(str(path))
    elif looks_like_path(model_name) or path.is_file():
        return True
    else:
        hub = model_name
    return pretrained_transcoders(hub) is not None


def transcoders_hub_names() -> list[str]:
    """The hub names (ids and their aliases) that have pretrained transcoders."""
    aliases = [name for name, hub in HUB_ALIASES.items() if hub in PRETRAINED]
    return sorted({*PRETRAINED, *aliases})


def pretrained_transcoders(hub: str | None) -> str | None:
    """The hub repo of the pretrained transcoders of the hub model ``hub`` (or an alias
    of it), or None."""
    return PRETRAINED.get(canonical_model_name(hub)) if hub else None


def fitted_elsewhere(source: str, model: Model) -> str | None:
    """Why transcoders in directory ``source`` do not fit ``model`` though their shapes do
    (their training record names another model), or None."""
    fitted = trained_for(source) if os.path.isdir(source) else None
    if fitted is None or _same_model(fitted[1], model):
        return None
    name, trained_source = fitted
    named = name if name == trained_source else f"{name} ({trained_source})"
    return (
        f"the transcoders in {source} were trained for {named}, not this model "
        f"({model.source}); their features are fitted to that model's MLPs"
    )


def _same_model(source: str, model: Model) -> bool:
    """Whether ``source`` (a training record's) is ``model``'s: a built-in model's by its
    build (name and identity, wherever its cache is), another's by its path."""
    if model.builtin:
        return Path(source).name == Path(model.source).name
    return source == model.source


def _on_model(transcoders: Transcoders, model: Model) -> Transcoders:
    """``transcoders`` on the model's device, in its work dtype: that of the activations
    they read (:meth:`Model.run_with_cache`)."""
    return {layer: t.to(model.device, model.work_dtype) for layer, t in transcoders.items()}


def builtin_transcoders(
    model: Model, cache_dir: str | os.PathLike[str] | None = None
) -> Transcoders:
    """A built-in model's transcoders, trained with ``BUILTIN_SETTINGS`` on first use (on
    ``BUILD_THREADS`` threads) and cached in ``cache_dir``."""
    spec = BUILTIN_MODELS[model.builtin]
    s = BUILTIN_SETTINGS
    key = f"{spec.name}-{spec.identity}-f{s.n_features}-l1{s.l1:g}-s{s.steps}-lr{s.lr:g}"
    # trained from the activations of the model in its dtype: another dtype's are others
    dtype = "" if model.dtype == torch.float32 else "-" + str(model.dtype).removeprefix("torch.")
    directory = cache_root(cache_dir) / "transcoders" / f"{key}-b{s.batch_tokens}{dtype}"
    layers = list(range(model.n_layers))
    # the record names the build: --transcoders DIR given this folder checks its model
    record = {
        "model": spec.name,
        "model_source": model.source,
        "corpus": BUILTIN_CORPUS,
        **dataclasses.asdict(s),
    }
    if directory.is_dir():
        try:
            cached = load_transcoders(str(directory), layers)
            if trained_for(directory) is None:  # a cache from before records were kept
                write_training_record(directory, record)
            return _on_model(cached, model)
        except CircuitxError:  # an incomplete or damaged cache: train again
            pass
    corpus = load_corpus(model, BUILTIN_CORPUS, BUILTIN_CONTEXT, s.seed)
    with (
        progress_bar(
            f"training transcoders for {model.name} (first use; cached in {directory})",
            s.steps,
            announced=True,
        ) as advance,
        torch_threads(BUILD_THREADS),  # the same weights in any process
    ):
        transcoders = train_transcoders(model, layers, corpus, s, advance)
    save_transcoders(transcoders, directory, spec.name)
    write_training_record(directory, record)
    return _on_model(transcoders, model)


__all__ = [
    "BUILTIN_CONTEXT",
    "BUILTIN_CORPUS",
    "BUILTIN_SETTINGS",
    "NO_MLPS",
    "PRETRAINED",
    "Corpus",
    "LayerQuality",
    "TrainingSettings",
    "Transcoder",
    "Transcoders",
    "builtin_transcoders",
    "check_layers",
    "check_transcoders",
    "corpus_file_text",
    "held_out_split",
    "holds_out",
    "input_hook",
    "interrupted_run",
    "layer_quality",
    "load_corpus",
    "load_interrupted",
    "load_transcoders",
    "mlp_activations",
    "parse_layers",
    "read_transcoder",
    "refit_decoder",
    "replacement_hooks",
    "save_transcoders",
    "task_metric_with_replacement",
    "train_and_report",
    "train_transcoders",
    "transcoders_for",
]
