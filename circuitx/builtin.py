"""Built-in models: Hugging Face GPT-2-architecture model directories built in code.

They need no download: the weights come from a seeded builder and the tokenizer is a
word-level vocabulary the package assembles from its task vocabularies. Each model is
built once into the cache directory (``$CIRCUITX_CACHE_DIR``, else ``$XDG_CACHE_HOME/circuitx``,
else ``~/.cache/circuitx``) and loaded from there by the same loader as any local model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from circuitx.errors import CircuitxError

SPECIAL_TOKEN = "<|endoftext|>"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    description: str
    version: int
    build: Callable[[Path], None]
    task: str | None = None  # the task a planted model is built for


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where built-in models are cached."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("CIRCUITX_CACHE_DIR"):
        return Path(os.environ["CIRCUITX_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "circuitx"


def model_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The directory of built-in model ``name``, building it first if it is not cached."""
    spec = BUILTIN_MODELS[name]
    target = cache_root(cache_dir) / "models" / f"{name}-v{spec.version}"
    if (target / "config.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    except OSError as error:
        raise CircuitxError(f"cannot write the model cache {target.parent}: {error}") from None
    try:
        spec.build(staging)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():  # not merely lost a race to another builder
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def word_level_tokenizer(words: list[str]):
    """A GPT-2-style fast tokenizer over ``words``: one token per word, punctuation mark or
    pair of digits."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {SPECIAL_TOKEN: 0}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
            # numbers split into digit pairs, as GPT-2 splits years: 1732 -> 17 32
            pre_tokenizers.Split(Regex(r"\d\d"), behavior="isolated"),
        ]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
    )


def save_gpt2(
    directory: Path,
    tokenizer: Any,
    n_layer: int,
    n_head: int,
    d_model: int,
    seed: int,
    initializer_range: float = 0.05,
    edit: Callable[[Any], None] | None = None,
) -> None:
    """Save a seeded random GPT-2 model and ``tokenizer`` to ``directory``.

    ``edit(model)``, if given, may set weights (under ``torch.no_grad``) before saving.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=d_model,
        n_positions=128,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=initializer_range,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _build_random_12x12(directory: Path) -> None:
    from circuitx.tasks import task_vocabulary

    tokenizer = word_level_tokenizer(task_vocabulary())
    save_gpt2(directory, tokenizer, n_layer=12, n_head=12, d_model=96, seed=0)


def _planted_models() -> dict[str, BuiltinModel]:
    from circuitx.planted import PLANTED

    descriptions = {
        False: "hand-set weights; its ground-truth circuit ships with it",
        True: "adds a self-repairing backup head and 4x-norm distractors",
    }
    return {
        name: BuiltinModel(
            name=name,
            description=descriptions[spec.hard],
            version=1,
            build=spec.save,
            task=spec.task,
        )
        for name, spec in PLANTED.items()
    }


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "random-12x12": BuiltinModel(
        name="random-12x12",
        description="GPT-2 architecture, 12 layers x 12 heads, d_model 96, seeded random "
        "weights, word-level tokenizer over the task vocabularies; holds the IOI, "
        "greater-than and docstring references",
        version=2,
        build=_build_random_12x12,
    )
}
BUILTIN_MODELS.update(_planted_models())
