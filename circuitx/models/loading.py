"""Loading a model: a local directory holding a Hugging Face model and its tokenizer,
or a Hugging Face hub name or alias, through ``TransformerBridge`` in compatibility mode
(built-in model names are resolved to directories by :mod:`circuitx.builtin`, above this
package)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from circuitx.errors import CircuitxError, first_line, listed
from circuitx.models.model import Model
from circuitx.models.weights import config_model_type
from circuitx.progress import announce

HUB_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "attn-only-4l": "NeelNanda/Attn_Only_4L512W_C4_Code",
}
# Repos stored in the pre-Hugging-Face TransformerLens format (no ``model_type``, ``.pth`` weights).
TL_LEGACY_PREFIXES = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
# The Hugging Face model families circuitx runs: each is tested end to end on a tiny
# random model (tests/discovery/test_architectures.py); any other is refused at load.
MODEL_FAMILIES = {
    "gpt2": "GPT-2",
    "llama": "Llama",
    "qwen2": "Qwen2",
    "mistral": "Mistral",
    "gemma2": "Gemma-2",
    "gpt_neox": "GPT-NeoX (Pythia)",
}
# A local model directory holds its tokenizer in one of these.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# A model config's key for what zero ablation leaves of the embeddings (see Model).
ZERO_EMBEDDING_KEY = "circuitx_zero_embedding"
# A model config's key marking an attention-only model (its MLPs output zero; no MLP nodes).
ATTN_ONLY_KEY = "circuitx_attn_only"


def canonical_model_name(name: str) -> str:
    """The hub id an alias stands for; other names are returned unchanged."""
    return HUB_ALIASES.get(name, name)


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise CircuitxError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CircuitxError(f"unknown device {name!r}") from None
    if device.type == "meta":
        raise CircuitxError(
            f"device {name!r} holds shapes, not values: circuitx runs the model, so name "
            "cpu, cuda or mps"
        )
    if device.type in ("cpu", "mps") and device.index:  # torch would run it on the one there is
        raise CircuitxError(
            f"device {name!r}: there is one {device.type} device; name {device.type}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CircuitxError(f"device {name!r} requested but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise CircuitxError(f"device {name!r} requested but this machine has {count} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CircuitxError(f"device {name!r} requested but no MPS (Apple GPU) is available")
    backend = getattr(torch, device.type, None)  # torch.xpu, say; xla has none here
    if device.type not in ("cpu", "cuda", "mps") and not (
        hasattr(backend, "is_available") and backend.is_available()
    ):
        raise CircuitxError(f"device {name!r} requested but no {device.type} device is available")
    return device


def load_model(name: str, device: str | None = None, dtype: str = "float32") -> Model:
    """Load a local model directory, or a hub model by name or alias."""
    torch_device, torch_dtype = parse_device(device), parse_dtype(dtype)
    shadowing = False  # a hub name a directory here shadows
    local = Path(name).expanduser().is_dir()
    if local:
        # absolute: the bridge reads a bare name it knows ("neox", "gpt2") as a hub alias
        source = str(Path(name).expanduser().resolve())
        if not (Path(source) / "config.json").is_file():
            raise CircuitxError(f"not a model directory (no config.json): {name}")
        shadowing = not looks_like_path(name)
    elif Path(name).expanduser().is_file():
        raise CircuitxError(
            f"model {name!r} is a file: name the directory that holds the model's config.json"
        )
    elif looks_like_path(name):
        raise CircuitxError(f"model directory not found: {name}")
    else:
        source = canonical_model_name(name)
        _check_hub_model(name, source)
    said = f"model {name!r} is the local directory {source}"
    try:  # a directory goes by its absolute path: its graphs name it from anywhere, and
        # one that shadows a hub name must not read as the hub model's
        model = _load(source if local else name, source, torch_device, torch_dtype)
    except CircuitxError as error:  # one line: the note goes into it
        if shadowing and source not in str(error):
            raise CircuitxError(f"{error} ({said})") from None
        raise
    if shadowing:
        announce(f"note: {said}")
    return model


def _load(name: str, source: str, torch_device: torch.device, torch_dtype: torch.dtype) -> Model:
    """The model at ``source`` (a directory or a hub id), as :func:`load_model` names it."""
    with quiet_loaders():
        try:
            bridge = processed_bridge(source, torch_device, torch_dtype)
        except CircuitxError:
            raise
        except Exception as error:  # the loaders raise many types; report one line
            said = first_line(error)
            if said.startswith("Couldn't instantiate the backend tokenizer"):  # and stops
                said = (  # a trial's: GPT-2's vocab.json and merges.txt beside a Llama
                    f"transformers cannot build its tokenizer from the files in {source} "
                    "(its architecture's tokenizer class reads other files); save the "
                    "tokenizer the model was trained with beside it (tokenizer.save_pretrained)"
                )
            raise CircuitxError(f"cannot load model {name!r}: {said}") from None
    tokens, rows = len(bridge.tokenizer), int(bridge.cfg.d_vocab)
    if tokens <= 1:  # e.g. a fast tokenizer built from vocab and merges files lost them
        raise CircuitxError(
            f"model {name!r}: its tokenizer has {tokens} token{'s' * (tokens != 1)}, so it "
            "reads no text; save the tokenizer the model was trained with beside it"
        )
    if tokens > rows:  # a token past the embedding would fail in the middle of a run
        raise CircuitxError(
            f"model {name!r}: its tokenizer has {tokens} tokens but its embedding only {rows} "
            "rows; save the model with the tokenizer it was trained with"
        )
    bridge.eval()
    bridge.requires_grad_(False)  # methods differentiate masks and inputs, never weights
    hf_config = getattr(bridge.original_model, "config", None)
    causal = bool(getattr(hf_config, "is_causal", True))
    if not causal:
        # The bridge masks attention itself and ignores the config; a plain assignment
        # would be forwarded to the wrapped Hugging Face module.
        for block in bridge.blocks:
            object.__setattr__(block.attn, "is_causal", False)
    zero = getattr(hf_config, ZERO_EMBEDDING_KEY, None)
    cfg = bridge.cfg
    return Model(
        name=name,
        source=source,
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        has_mlp=not (
            bool(getattr(cfg, "attn_only", False)) or bool(getattr(hf_config, ATTN_ONLY_KEY, False))
        ),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        device=torch_device,
        dtype=torch_dtype,
        hub_id=None if Path(source).is_dir() else source,
        causal=causal,
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        zero_embedding=None
        if zero is None
        else torch.tensor(zero, dtype=torch_dtype).to(torch_device),
    )


def saved_config(directory: str | Path) -> dict[str, Any] | None:
    """A local model directory's config.json, or None where it has none it can read."""
    try:
        config = json.loads((Path(directory) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def hub_config(name: str) -> dict[str, Any] | None:
    """A hub model's config.json from the cache, else what the hub's listing of the model
    shows of it (its model_type, its architectures); None where neither answers (offline
    and not cached, or no such model: loading it says which)."""
    import huggingface_hub

    repo_id = canonical_model_name(name)
    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
        if isinstance(cached, str):
            return saved_config(Path(cached).parent)
        config = huggingface_hub.model_info(repo_id, timeout=10).config
    except Exception:  # an invalid repo id, no connection, no such repository
        return None
    return config if isinstance(config, dict) else None


def local_model_hub_id(directory: str) -> str | None:
    """The hub id a local model directory says it was saved from, if its config records one."""
    recorded = (saved_config(directory) or {}).get("_name_or_path") or ""
    return canonical_model_name(recorded) if isinstance(recorded, str) and recorded else None


def reboot(model: Model, **processing: bool) -> Any:
    """A second bridge of ``model``, loaded again from its source with TransformerLens's
    weight processing ``processing`` (``enable_compatibility_mode``'s flags) in place of
    the defaults. Its forward pass is not circuitx's (no causal override): read weights
    from it."""
    with quiet_loaders():
        bridge = processed_bridge(model.source, model.device, model.dtype, **processing)
    bridge.eval()
    bridge.requires_grad_(False)
    return bridge


def processed_bridge(
    source: str, device: torch.device, dtype: torch.dtype, **processing: bool
) -> Any:
    """The bridge of the model at ``source`` in compatibility mode, with TransformerLens's
    weight processing (``processing``: ``enable_compatibility_mode``'s flags), on
    ``device``. The processing runs on the CPU whatever the device, as HookedTransformer's
    did before it moved a model: it copies the whole state dict at each of its steps, in
    float32, so its peak is several times the weights (5 times them in float32, 11 in
    bfloat16, on the GPT-2-small shape: benchmarks/load_memory.py), which on a GPU would
    have to be free GPU memory; the device then receives only the processed weights."""
    cpu = torch.device("cpu")
    bridge = _boot(source, dtype)
    bridge.enable_compatibility_mode(disable_warnings=True, **processing)
    if device != cpu:
        bridge.to(device, print_details=False)
        # the bridge's ``to`` records the device's type only ("cuda" for "cuda:1"); it
        # moves tokens and attention masks to the device its config names
        bridge.cfg.device = str(device)
    release_freed_memory(cpu)  # the processing's copies, and the weights that moved
    return bridge


def release_freed_memory(device: torch.device) -> None:
    """Give back to the system what loading freed: TransformerLens's weight processing
    copies the whole state dict at each of its steps, and the allocator keeps the freed
    copies: on the CPU glibc's heap (``malloc_trim``; what the 124M-parameter GPT-2 shape
    holds after loading went from 923 to 852 MiB in float32, 800 to 586 in bfloat16:
    benchmarks/load_memory.py), on a GPU torch's cached blocks, which the default memory
    budget would read as used. On the CPU only the two young generations are collected: a
    full collection gave back nothing more there (852 and 586 MiB held either way) and took
    0.13 s in a process holding three graphs of that shape, 0.45 s in a test run's; on a
    GPU (unmeasured) a full one, lest old cycles keep GPU tensors cached."""
    gc.collect(2 if device.type == "cuda" else 1)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl)
        ctypes.CDLL(None).malloc_trim(0)


def _boot(source: str, dtype: torch.dtype) -> Any:
    """The bridge of the model at ``source``, on the CPU. The caller's random state is
    kept: booting draws from torch's generator (a trial's GPT-2 loads moved it; the
    weights are then loaded over what it drew)."""
    from transformer_lens.model_bridge import TransformerBridge

    cpu = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        legacy = source.startswith(TL_LEGACY_PREFIXES) and not Path(source).is_dir()
        if legacy or (Path(source).is_dir() and is_tl_legacy_dir(Path(source))):
            model, tokenizer = gpt2_from_tl_legacy(source, dtype)
        else:  # a tokenizer of None: the bridge loads it
            model = ungrouped_model(pretrained_model(source, dtype))
            tokenizer = saved_tokenizer(source)
        return TransformerBridge.boot_transformers(
            source, device=cpu, dtype=dtype, hf_model=fused_activations(model), tokenizer=tokenizer
        )


def fused_activations(model: Any) -> Any:
    """``model`` with each ``NewGELUActivation`` (GPT-2's ``gelu_new``, four tensor ops
    in Python) replaced by ``GELUTanh``, the same tanh approximation in one fused op:
    transformers' own faster equivalent (equal up to float rounding: 2.4e-7 at most on
    unit-normal inputs). A forward pass of planted IOI on 400 prompts on the CPU spent 1.0
    of its 2.4 s in the Python version."""
    from transformers.activations import GELUTanh, NewGELUActivation

    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model


def pretrained_model(source: str, dtype: torch.dtype) -> Any:
    """The Hugging Face model at ``source`` (a directory or a hub name), with eager
    attention, as the bridge would load it; refused in one line when its family is not one
    of :data:`MODEL_FAMILIES`, when a directory holds no tokenizer, and when the checkpoint
    lacks weights the model has or holds them in other shapes (which transformers would
    fill in at random)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    family = config_model_type(config)
    if family not in MODEL_FAMILIES:
        raise CircuitxError(
            f"{source}: circuitx does not run {family or 'this kind of'} models; it runs "
            f"{', '.join(MODEL_FAMILIES.values())}, and attention-only models in the legacy "
            "TransformerLens format (see docs/usage.md)"
        )
    unsupported = _unsupported_setting(config)
    if unsupported:
        raise CircuitxError(f"{source}: circuitx does not run {unsupported}")
    directory = Path(source)
    if directory.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise CircuitxError(
            f"no tokenizer in {source}: save the model's beside it (tokenizer.save_pretrained)"
        )
    model, loading = AutoModelForCausalLM.from_pretrained(
        source,
        config=config,
        dtype=dtype,
        attn_implementation="eager",
        output_loading_info=True,
        ignore_mismatched_sizes=True,  # named below, not left random
    )
    mismatched = sorted(loading.get("mismatched_keys") or ())
    if mismatched:
        key, saved, wanted = mismatched[0]
        raise CircuitxError(
            f"{source}: {len(mismatched)} of the checkpoint's weights do not fit config.json "
            f"({key} is {tuple(saved)}, the config makes it {tuple(wanted)}); is config.json "
            "the checkpoint's own?"
        )
    missing = sorted(loading["missing_keys"])
    if missing:
        raise CircuitxError(
            f"{source}: the checkpoint lacks {len(missing)} of the model's weights "
            f"({listed(missing, 3)}), which would be random; is config.json the checkpoint's own?"
        )
    return model.eval()


def _unsupported_setting(config: Any) -> str | None:
    """What a config of a family circuitx runs sets that TransformerLens's conversion does
    not follow (a new user's trial: GPT-2 without its attention scale loaded, and ran as
    the model with it), or None."""
    family = config_model_type(config)
    if family == "gpt2" and getattr(config, "scale_attn_weights", True) is False:
        return "GPT-2 models without the attention scale (scale_attn_weights=False)"
    if family == "gpt_neox" and getattr(config, "attention_bias", True) is False:
        return "GPT-NeoX models without attention biases (attention_bias=False)"
    return None


def saved_tokenizer(source: str) -> Any | None:
    """A model directory's tokenizer as saved, where it names the generic fast class:
    ``AutoTokenizer`` would pick the architecture's own class instead (a word-level
    tokenizer saved beside a Qwen2 model loads as Qwen2's BPE and splits every word). It
    adds BOS, as the bridge makes every tokenizer do. None otherwise: the bridge loads it."""
    from transformers import PreTrainedTokenizerFast

    path = Path(source) / "tokenizer_config.json"
    if not path.is_file():
        return None
    saved_class = json.loads(path.read_text()).get("tokenizer_class")
    if saved_class not in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        return None
    return PreTrainedTokenizerFast.from_pretrained(source, add_bos_token=True)


def is_tl_legacy_dir(directory: str | Path) -> bool:
    """A model saved in the pre-Hugging-Face TransformerLens format: a config.json with
    no ``model_type`` and the weights as a ``*.pth`` state dict."""
    config = saved_config(directory)
    if config is None or "model_type" in config:
        return False
    return any(Path(directory).glob("*.pth"))


def tl_legacy_files(source: str) -> tuple[dict[str, Any], Path, Any]:
    """A legacy TransformerLens model's config, final state dict file and tokenizer, from
    a local directory or a hub repo (``NeelNanda/*``)."""
    from transformers import AutoTokenizer

    if Path(source).is_dir():
        directory = Path(source)
        config = json.loads((directory / "config.json").read_text())
        weights = sorted(directory.glob("*final.pth")) or sorted(directory.glob("*.pth"))
        tokenizer = saved_tokenizer(source) or AutoTokenizer.from_pretrained(source)
        return config, weights[-1], tokenizer
    from huggingface_hub import HfApi, hf_hub_download

    config = json.loads(Path(hf_hub_download(source, "config.json")).read_text())
    final = [f for f in HfApi().list_repo_files(source) if f.endswith("final.pth")]
    if not final:
        raise CircuitxError(f"no final weights (*final.pth) in {source}")
    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer_name"])
    return config, Path(hf_hub_download(source, final[0])), tokenizer


def gpt2_from_tl_legacy(source: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """A legacy TransformerLens model (``attn-only-4l``'s format) as a Hugging Face GPT-2
    computing the same function, and its tokenizer. TransformerLens boots such models as
    its native bridge, whose attention has no per-head q/k/v inputs; as GPT-2 they have
    them. Per-head weights become GPT-2's fused projections; an attention-only model gets
    MLPs that output exactly zero and ``circuitx_attn_only`` in its config (no MLP nodes);
    the unembedding keeps its bias."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config, weights, tokenizer = tl_legacy_files(source)
    normalization = config.get("normalization_type", config.get("normalization"))
    if normalization != "LN" or config.get("positional_embedding_type", "standard") != "standard":
        raise CircuitxError(
            f"legacy model {source} uses {normalization} normalisation and "
            f"{config.get('positional_embedding_type')} positions; circuitx reads LayerNorm "
            "and learned positions"
        )
    n_heads, d_model, attn_only = config["n_heads"], config["d_model"], config["attn_only"]
    d_head = config.get("d_head", d_model // n_heads)
    if n_heads * d_head != d_model:  # GPT-2's fused projections are d_model wide
        raise CircuitxError(
            f"legacy model {source} has {n_heads} heads of width {d_head} in d_model "
            f"{d_model}; circuitx reads it as GPT-2, whose heads fill d_model "
            "(n_heads x d_head = d_model)"
        )
    state = torch.load(weights, map_location="cpu", weights_only=True)
    gpt2 = GPT2Config(
        vocab_size=config["d_vocab"], n_positions=config["n_ctx"], n_embd=d_model,
        n_layer=config["n_layers"], n_head=n_heads, layer_norm_epsilon=config.get("eps", 1e-5),
        n_inner=1 if attn_only else config["d_mlp"], activation_function=config["act_fn"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    setattr(gpt2, ATTN_ONLY_KEY, bool(attn_only))
    model = GPT2LMHeadModel(gpt2)  # its random init, overwritten below, under _boot's fork
    with torch.no_grad():
        model.transformer.wte.weight.copy_(state["embed.W_E"])
        model.transformer.wpe.weight.copy_(state["pos_embed.W_pos"])
        for layer, block in enumerate(model.transformer.h):
            tl = f"blocks.{layer}."
            block.ln_1.weight.copy_(state[tl + "ln1.w"])
            block.ln_1.bias.copy_(state[tl + "ln1.b"])
            # [head, d_model, d_head] -> GPT-2's [d_model, head * d_head]
            qkv = [state[f"{tl}attn.W_{x}"].permute(1, 0, 2).flatten(1) for x in "QKV"]
            block.attn.c_attn.weight.copy_(torch.cat(qkv, 1))
            block.attn.c_attn.bias.copy_(
                torch.cat([state[f"{tl}attn.b_{x}"].flatten() for x in "QKV"])
            )
            block.attn.c_proj.weight.copy_(state[tl + "attn.W_O"].flatten(0, 1))
            block.attn.c_proj.bias.copy_(state[tl + "attn.b_O"])
            if attn_only:
                for parameter in block.mlp.parameters():
                    parameter.zero_()
            else:
                block.ln_2.weight.copy_(state[tl + "ln2.w"])
                block.ln_2.bias.copy_(state[tl + "ln2.b"])
                block.mlp.c_fc.weight.copy_(state[tl + "mlp.W_in"])
                block.mlp.c_fc.bias.copy_(state[tl + "mlp.b_in"])
                block.mlp.c_proj.weight.copy_(state[tl + "mlp.W_out"])
                block.mlp.c_proj.bias.copy_(state[tl + "mlp.b_out"])
        model.transformer.ln_f.weight.copy_(state["ln_final.w"])
        model.transformer.ln_f.bias.copy_(state["ln_final.b"])
        unembed = torch.nn.Linear(d_model, config["d_vocab"], bias=True)
        unembed.weight.copy_(state["unembed.W_U"].T)
        unembed.bias.copy_(state.get("unembed.b_U", torch.zeros(config["d_vocab"])))
        model.lm_head = unembed
    return model.to(dtype).eval(), tokenizer


def ungrouped_model(model: Any) -> Any:
    """For a model whose heads share keys and values (grouped- or multi-query attention),
    the same model with each query head given its own copy of its group's key and value
    projections: it computes the same function, and every head has its own q, k and v
    input, as EAP-IG's ``ungroup_grouped_query_attention`` gives. Other models as they
    are."""
    from transformers import AutoModelForCausalLM

    config = model.config
    text = getattr(config, "text_config", None) or config
    n_heads = getattr(text, "num_attention_heads", None)
    n_kv = getattr(text, "num_key_value_heads", None)
    if not n_heads or not n_kv or n_kv == n_heads:
        return model
    dtype = next(model.parameters()).dtype
    state = model.state_dict()
    for name, tensor in state.items():
        if name.endswith(("k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias")):
            per_group = tensor.unflatten(0, (n_kv, -1))
            state[name] = per_group.repeat_interleave(n_heads // n_kv, 0).flatten(0, 1)
    text.num_key_value_heads = n_heads
    with torch.device("meta"):
        ungrouped = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation="eager"
        )
    ungrouped.load_state_dict(state, assign=True, strict=False)
    for name, buffer in model.named_buffers():  # those the state leaves out (rotary tables)
        owner, _, attribute = name.rpartition(".")
        ungrouped.get_submodule(owner)._buffers[attribute] = buffer
    ungrouped.tie_weights()
    return ungrouped.eval()


def _check_hub_model(name: str, repo_id: str) -> None:
    """Fail fast, in one line, when a hub model is neither cached nor reachable."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # a name that is not a valid repo id
        raise CircuitxError(
            f"unknown model {name!r}: not a built-in model, a local directory or a hub name"
        ) from None
    if isinstance(cached, str):
        return
    try:
        huggingface_hub.model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        raise CircuitxError(
            f"unknown model {name!r}: no such repository on the Hugging Face hub"
        ) from None
    except Exception:
        where = (
            f"it is the Hugging Face hub's {repo_id}"
            if repo_id != name  # an alias (gpt2): a hub model, not an unknown name
            else "it names no built-in model or local directory, so it would come from the "
            "Hugging Face hub"
        )
        raise CircuitxError(
            f"cannot load {name!r}: {where}, which is unreachable (and the model is not "
            "cached); pass a local model directory with --model DIR, or "
            "a built-in model such as --model planted (circuitx models lists them)"
        ) from None


def looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``owner/name``; anything else with slashes (``dir/``
    too) is a path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


@contextlib.contextmanager
def quiet_loaders():
    """Silence the loaders' progress bars, warnings and log lines."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
