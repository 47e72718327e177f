"""Saving models built in code as Hugging Face model directories: word-level tokenizers
over a word list, and seeded random GPT-2 weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

SPECIAL_TOKEN = "<|endoftext|>"


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


def token_list_tokenizer(tokens: list[str], bos: str, pad: str):
    """A fast tokenizer whose token ids are the positions of ``tokens``, split on whitespace
    only; an unknown word reads as ``pad``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token=pad))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=bos, unk_token=pad, pad_token=pad
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
