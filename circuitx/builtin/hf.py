"""Saving models built in code as Hugging Face model directories: word-level tokenizers
over a word list, and seeded random GPT-2 weights."""

from __future__ import annotations

import json
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
    save_seeded(directory, tokenizer, lambda: GPT2LMHeadModel(config), seed, edit)


def save_seeded(
    directory: Path,
    tokenizer: Any,
    build: Callable[[], Any],
    seed: int,
    edit: Callable[[Any], None] | None = None,
) -> None:
    """Build a model with torch's generator seeded by ``seed`` (restored after), let
    ``edit(model)`` set weights (under ``torch.no_grad``), and save it and ``tokenizer``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


# Architectures :func:`save_causal_lm` builds: family -> (config class, extra settings).
# Llama, Qwen2 and Gemma-2 share keys and values between pairs of heads (grouped-query
# attention); Mistral has one key/value head (multi-query); GPT-NeoX (Pythia) runs
# attention and MLP in parallel. All but GPT-2 use rotary positions.
CAUSAL_LM_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", {}),
    "llama": ("LlamaConfig", {"kv_heads": 2}),
    "qwen2": ("Qwen2Config", {"kv_heads": 2}),
    # a window shorter than test prompts, so that Gemma-2's sliding layers mask something
    "gemma2": ("Gemma2Config", {"kv_heads": 2, "sliding_window": 4}),
    "mistral": ("MistralConfig", {"kv_heads": 1}),
    "neox": ("GPTNeoXConfig", {}),
}


def save_causal_lm(
    directory: Path,
    family: str,
    tokenizer: Any,
    n_layer: int,
    n_head: int,
    d_model: int,
    seed: int,
    initializer_range: float = 0.05,
    d_mlp: int | None = None,
) -> None:
    """Save a seeded random model of ``family`` (:data:`CAUSAL_LM_FAMILIES`) and
    ``tokenizer`` to ``directory``: MLPs ``d_mlp`` wide (four times ``d_model`` by
    default; GPT-2's are always four times)."""
    import transformers

    if family == "gpt2":
        save_gpt2(directory, tokenizer, n_layer, n_head, d_model, seed, initializer_range)
        return
    config_name, extra = CAUSAL_LM_FAMILIES[family]
    settings: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        intermediate_size=d_mlp or 4 * d_model,
        max_position_embeddings=128,
        initializer_range=initializer_range,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    settings.update({key: value for key, value in extra.items() if key != "kv_heads"})
    if "kv_heads" in extra:
        settings["num_key_value_heads"] = extra["kv_heads"]
    if family == "gemma2":
        settings["head_dim"] = d_model // n_head
    config = getattr(transformers, config_name)(**settings)
    save_seeded(
        directory, tokenizer, lambda: transformers.AutoModelForCausalLM.from_config(config), seed
    )


def save_tl_legacy_attn_only(
    directory: Path,
    tokenizer: Any,
    n_layers: int,
    n_heads: int,
    d_model: int,
    seed: int,
    scale: float = 0.2,
) -> None:
    """Save a seeded random attention-only model in the legacy TransformerLens format the
    hub's ``attn-only-4l`` (``NeelNanda/Attn_Only_4L512W_C4_Code``) uses: a config.json
    of HookedTransformer fields (no ``model_type``) and a ``model_final.pth`` state dict
    in HookedTransformer's parameter names and per-head shapes."""
    d_head, d_vocab, n_ctx = d_model // n_heads, len(tokenizer), 128
    config = dict(
        d_model=d_model, n_layers=n_layers, d_mlp=-1, d_head=d_head, n_heads=n_heads,
        n_ctx=n_ctx, d_vocab=d_vocab, act_fn="gelu", attn_only=True,
        normalization_type="LN", positional_embedding_type="standard",
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    state = {"embed.W_E": rand(d_vocab, d_model), "pos_embed.W_pos": rand(n_ctx, d_model)}
    for layer in range(n_layers):
        block = f"blocks.{layer}"
        state[f"{block}.ln1.w"] = 1.0 + rand(d_model)
        state[f"{block}.ln1.b"] = rand(d_model)
        for name in "QKV":
            state[f"{block}.attn.W_{name}"] = rand(n_heads, d_model, d_head)
            state[f"{block}.attn.b_{name}"] = rand(n_heads, d_head)
        state[f"{block}.attn.W_O"] = rand(n_heads, d_head, d_model)
        state[f"{block}.attn.b_O"] = rand(d_model)
    state.update({"ln_final.w": 1.0 + rand(d_model), "ln_final.b": rand(d_model)})
    state.update({"unembed.W_U": rand(d_model, d_vocab), "unembed.b_U": rand(d_vocab)})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    torch.save(state, directory / "model_final.pth")
    tokenizer.save_pretrained(directory)
