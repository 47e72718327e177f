"""Fixtures: tiny GPT-2-architecture models built and saved by the tests themselves.

They use the real GPT-2 tokenizer from ../shared/tokenizers/gpt2 and are loaded through
the same loader as the CLI (``circuitx.models.load_model``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circuitx.builtin import save_gpt2

SHARED = Path(os.environ.get("CIRCUITX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
GPT2_TOKENIZER = SHARED / "tokenizers" / "gpt2"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Built-in models go to a temporary cache, and the hub is never contacted."""
    os.environ["CIRCUITX_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"


def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    if not (GPT2_TOKENIZER / "vocab.json").is_file():
        pytest.fail(f"the GPT-2 tokenizer is missing: {GPT2_TOKENIZER} (set CIRCUITX_SHARED)")
    return GPT2TokenizerFast(
        vocab=str(GPT2_TOKENIZER / "vocab.json"), merges=str(GPT2_TOKENIZER / "merges.txt")
    )


def save_tiny_gpt2(
    directory: Path, n_layer: int, n_head: int, d_model: int, seed: int = 0, edit=None
) -> Path:
    """Save a random GPT-2 model with the real GPT-2 tokenizer; ``edit(model)`` may set weights."""
    save_gpt2(directory, gpt2_tokenizer(), n_layer, n_head, d_model, seed, 0.2, edit)
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """2 layers x 4 heads, d_model 32."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny"), 2, 4, 32)


@pytest.fixture(scope="session")
def dir_12x12(tmp_path_factory) -> Path:
    """12 layers x 12 heads (holds the IOI reference), d_model 48."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("m12x12"), 12, 12, 48)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from circuitx.models import load_model

    return load_model(str(tiny_dir), device="cpu")


@pytest.fixture(scope="session")
def model_12x12(dir_12x12):
    from circuitx.models import load_model

    return load_model(str(dir_12x12), device="cpu")


@pytest.fixture(scope="session")
def word_model(tmp_path_factory):
    """2 layers x 4 heads with the built-in word-level tokenizer (a tokenizer we build)."""
    from circuitx.builtin import word_level_tokenizer
    from circuitx.models import load_model
    from circuitx.tasks import task_vocabulary

    directory = tmp_path_factory.mktemp("word")
    save_gpt2(directory, word_level_tokenizer(task_vocabulary()), 2, 4, 32, 0, 0.2)
    return load_model(str(directory), device="cpu")
