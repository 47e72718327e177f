"""Transcoder files in the authors' layout: save, load (directory or hub), check."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from circuitx.errors import CircuitxError, first_line
from circuitx.files import atomic_open
from circuitx.models import Model, looks_like_path, mlp_output_hook
from circuitx.transcoders.model import PARAMETERS, Transcoder, Transcoders, input_hook

# canonical model name (a hub id, as canonical_model_name gives it) -> hub repo: it was keyed
# "gpt2", which canonical_model_name turns into openai-community/gpt2, so never found
PRETRAINED = {"openai-community/gpt2": "pchlenski/gpt2-transcoders"}
NO_MLPS = "has no MLPs for transcoders to replace"  # a model's refusal, after its name
TRAINING_RECORD = "training.json"  # what train-transcoders writes beside its files


FILE_RE = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized_(\d+)\.pt$")


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
        payload = {"cfg": _config_for(transcoder, layer), "state_dict": transcoder.state_dict()}
        with atomic_open(path, "wb") as handle:
            torch.save(payload, handle)


def write_training_record(directory: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``record`` (with at least ``model`` and ``model_source``) beside the
    transcoders in ``directory``, where :func:`trained_for` reads it."""
    with atomic_open(Path(directory) / TRAINING_RECORD) as handle:
        json.dump(record, handle, indent=1)


def trained_for(directory: str | os.PathLike) -> tuple[str, str] | None:
    """The model (name as given, and its source) that ``train-transcoders`` trained the
    transcoders in ``directory`` for, if its record says so."""
    try:
        record = json.loads((Path(directory) / TRAINING_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("model_source"), str):
        return None
    return str(record.get("model")), record["model_source"]


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
        files = layer_files(path)
        where = str(path)
    elif path.exists():
        raise CircuitxError(f"transcoders must be a directory, not a file: {source}")
    elif looks_like_path(source) or source.count("/") != 1:  # a hub repo is owner/name
        raise CircuitxError(f"transcoder directory not found: {source}")
    else:
        files = _hub_files(source, layers)
        where = source
    if not files and path.is_dir() and (path / "checkpoints").is_dir():
        steps = sorted(
            (p for p in (path / "checkpoints").glob("step-*") if p.name[5:].isdigit()),
            key=lambda p: int(p.name[5:]),
        )
        last = f" (the last: {steps[-1]})" if steps else ""
        raise CircuitxError(
            f"{where} holds only the checkpoints of a train-transcoders run that did not "
            f"finish: run it again to resume it, or pass a checkpoint directory{last}"
        )
    if not files:
        raise CircuitxError(f"no transcoder files (*blocks.L.ln2.hook_normalized_N.pt) in {where}")
    wanted = sorted(files) if layers is None else list(layers)
    missing = [layer for layer in wanted if layer not in files]
    if missing:
        have = ", ".join(map(str, sorted(files)))
        raise CircuitxError(
            f"no transcoder for layer {', '.join(map(str, missing))} in {where} "
            f"(it has layers {have})"
        )
    return {layer: read_transcoder(files[layer]) for layer in wanted}


def layer_files(directory: Path) -> dict[int, Path]:
    """The transcoder files directly in ``directory``, by layer; two for one layer are
    refused (a trial's: the one that sorted last was taken in silence)."""
    found: dict[int, Path] = {}
    for path in sorted(directory.iterdir()):
        match = FILE_RE.search(path.name)
        if match and path.is_file():
            layer = int(match.group(1))
            if layer in found:
                raise CircuitxError(
                    f"{directory} has two transcoder files for layer {layer} "
                    f"({found[layer].name}, {path.name}); keep one"
                )
            found[layer] = path
    return found


def _hub_files(repo_id: str, layers: Sequence[int] | None) -> dict[int, Path]:
    """Download the layer files of hub repo ``repo_id`` (or find them in the local hub cache)."""
    try:
        from huggingface_hub import hf_hub_download, model_info
    except ImportError:  # pragma: no cover - a dependency of transformers
        raise CircuitxError("loading transcoders from the hub needs huggingface_hub") from None

    def wanted(name: str) -> bool:
        match = FILE_RE.search(name)
        return bool(match) and (layers is None or int(match.group(1)) in layers)

    try:  # the repo's file list in one request: no retries (list_repo_files backs off ~25 s)
        siblings = model_info(repo_id, timeout=10).siblings or []
        names = [sibling.rfilename for sibling in siblings if wanted(sibling.rfilename)]
    except Exception as online_error:
        try:  # offline: whatever an earlier download left in the hub cache
            from huggingface_hub import snapshot_download

            snapshot = Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:
            raise CircuitxError(
                f"cannot load transcoders {repo_id!r}: not a local directory, and the hub "
                f"cannot be reached ({first_line(online_error)})"
            ) from None
        return {layer: p for layer, p in layer_files(snapshot).items() if wanted(p.name)}
    files: dict[int, Path] = {}
    for name in names:
        try:
            local = hf_hub_download(repo_id, name)
        except Exception as error:
            raise CircuitxError(f"cannot download {repo_id}/{name}: {first_line(error)}") from None
        files[int(FILE_RE.search(name).group(1))] = Path(local)
    return files


def read_transcoder(path: Path) -> Transcoder:
    """One transcoder file: ours (plain dict config) or the authors' (pickled config class,
    read as a record without importing the class)."""
    try:
        payload = _load_weights_only(path)
    except pickle.UnpicklingError:  # torch's advice (weights_only=False) would run the file
        raise CircuitxError(
            f"cannot read transcoder file {path}: it holds neither tensors and plain values "
            "nor a transcoder's config (a damaged file, or not one torch.save wrote)"
        ) from None
    except Exception as error:  # torch raises many types for a damaged file (a fuzz's:
        # IndexError, KeyError besides OSError, RuntimeError, EOFError and ValueError)
        raise CircuitxError(f"cannot read transcoder file {path}: {first_line(error)}") from None
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


def check_transcoders(transcoders: Transcoders, model: Model) -> None:
    """Fail in one line unless every transcoder maps the model's width to itself (missing
    layers are :func:`load_transcoders`' error)."""
    for layer, transcoder in transcoders.items():
        if (transcoder.d_in, transcoder.d_out) != (model.d_model, model.d_model):
            raise CircuitxError(
                f"the layer-{layer} transcoder maps {transcoder.d_in} -> {transcoder.d_out} "
                f"dimensions; model {model.name!r} has d_model {model.d_model}"
            )


def check_layers(model: Model, layers: Sequence[int]) -> None:
    if not model.has_mlp:
        raise CircuitxError(f"model {model.name!r} {NO_MLPS}")
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise CircuitxError(
            f"layer {', '.join(map(str, bad))} does not exist: model {model.name!r} has "
            f"layers 0-{model.n_layers - 1}"
        )


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
