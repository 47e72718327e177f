import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GPT2_TOKENIZER, assert_one_line_error, gpt2_tokenizer, run, tiny_gpt2

from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_causal_lm, save_tl_legacy_attn_only, word_level_tokenizer
from circuitx.errors import CircuitxError
from circuitx.models import head_input_hook
from circuitx.tasks import task_from_pairs, task_vocabulary


def test_bridge_logits_equal_the_hf_model(tiny_dir, tiny_model):
    """Compatibility mode centres the unembedding, so log-probabilities are what must agree.
    GPT-2's gelu_new runs as transformers' fused GELUTanh, the same function."""
    from transformers import GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    hf = GPT2LMHeadModel.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    tokens = torch.randint(
        0, tiny_model.d_vocab, (3, 11), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    got = tiny_model.run(tokens).log_softmax(-1)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert type(hf.transformer.h[0].mlp.act) is NewGELUActivation
    fused = [m for m in tiny_model.bridge.original_model.modules() if type(m) is GELUTanh]
    assert len(fused) == tiny_model.n_layers
    assert not any(type(m) is NewGELUActivation for m in tiny_model.bridge.modules())


def test_a_non_causal_model_attends_both_ways(tmp_path):
    """A config with ``is_causal: false`` (tracr models) gives the bridge bidirectional
    attention: its logits equal the Hugging Face model's, and a later token changes an
    earlier position's logits."""
    from transformers import GPT2LMHeadModel

    def bidirectional(model):
        model.config.is_causal = False

    directory = tiny_gpt2(tmp_path, 2, 4, 32, edit=bidirectional)
    model = load_model(str(directory), device="cpu")
    hf = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="eager").eval()
    tokens = torch.randint(0, 1000, (3, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    got = model.run(tokens).log_softmax(-1)
    assert not model.causal
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    changed_last = tokens.clone()
    changed_last[:, -1] = (tokens[:, -1] + 1) % 1000
    assert not torch.allclose(model.run(changed_last)[:, 0], model.run(tokens)[:, 0])


@pytest.mark.parametrize(
    "name, message",
    [
        ("./no/such/dir", "model directory not found"),
        ("nosuch/", "model directory not found"),  # not the hub's repo-id rules (a trial)
        ("no-such-org/no-such-model", "hub"),
        ("not a repo id!", "unknown model"),
    ],
)
def test_unloadable_models_fail_in_one_line(name, message):
    with pytest.raises(CircuitxError, match=message) as caught:
        load_model(name)
    assert "\n" not in str(caught.value)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(CircuitxError, match="no config.json"):
        load_model(str(tmp_path))


def _words_model(directory, family="llama", **settings):
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(directory, family, tokenizer, 2, 4, 32, seed=5, **settings)
    return directory


def test_a_checkpoint_lacking_weights_is_refused_not_filled_at_random(tmp_path):
    from safetensors.torch import load_file, save_file

    weights = _words_model(tmp_path) / "model.safetensors"
    state = load_file(weights)
    del state["model.layers.1.mlp.down_proj.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(CircuitxError, match="lacks 1 of the model's weights") as caught:
        load_model(str(tmp_path))
    assert "model.layers.1.mlp.down_proj.weight" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("key, value", [("num_attention_heads", 8), ("hidden_size", 64)])
def test_a_config_that_does_not_fit_its_weights_names_one(tmp_path, key, value):
    """It said "ignore_mismatched_sizes is False ... look at the above report", with no
    report shown."""
    _words_model(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CircuitxError, match="weights do not fit config.json") as caught:
        load_model(str(tmp_path))
    assert "the config makes it" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "family, setting, said",
    [
        ("gpt2", {"scale_attn_weights": False}, "GPT-2 models without the attention scale"),
        ("neox", {"attention_bias": False}, "GPT-NeoX models without attention biases"),
    ],
)
def test_a_setting_the_conversion_does_not_follow_is_refused(tmp_path, family, setting, said):
    """A new user's trial: GPT-2 with scale_attn_weights=False loaded and ran as the model
    with the scale (logits 5.3 apart, no word said); GPT-NeoX without attention biases
    failed as "AssertionError" (TransformerLens's conversion asserts them)."""
    _words_model(tmp_path, family)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(setting)
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = run("discover", "--task", "ioi", "--method", "eap", "--model", tmp_path)
    key, value = next(iter(setting.items()))
    assert_one_line_error(result, f"circuitx does not run {said} ({key}={value})")


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    from transformers import GPT2Config

    vocab = len(word_level_tokenizer(task_vocabulary()))
    _words_model(tmp_path)  # Llama's weights under GPT-2's config of the same shape
    GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=vocab).save_pretrained(tmp_path)
    with pytest.raises(CircuitxError, match="lacks .* of the model's weights"):
        load_model(str(tmp_path))


def test_an_unsupported_family_is_refused_before_its_weights_load(tmp_path):
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
        word_embed_proj_dim=16, vocab_size=100,
    )  # fmt: skip
    OPTForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(CircuitxError, match="does not run opt models; it runs GPT-2, Llama") as e:
        load_model(str(tmp_path))
    # a helper's trial: the list left out the attention-only models it runs
    assert "and attention-only models in the legacy TransformerLens format" in str(e.value)


def test_a_directory_without_a_tokenizer_is_refused(tmp_path):
    _words_model(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(CircuitxError, match="no tokenizer in"):
        load_model(str(tmp_path))


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    tiny_gpt2(tmp_path, 1, 2, 16)
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    model.resize_token_embeddings(1000)
    model.save_pretrained(tmp_path)
    with pytest.raises(
        CircuitxError, match="tokenizer has 50257 tokens but its embedding only 1000"
    ):
        load_model(str(tmp_path))


def test_a_tokenizer_that_reads_no_text_is_refused(tmp_path):
    """transformers 5 builds a fast GPT-2 tokenizer from vocab and merges files as one
    token that encodes every text to nothing: refused at load, not at the first answer."""
    from transformers import GPT2TokenizerFast

    tiny_gpt2(tmp_path, 1, 2, 16)
    empty = GPT2TokenizerFast(
        vocab_file=str(GPT2_TOKENIZER / "vocab.json"),
        merges_file=str(GPT2_TOKENIZER / "merges.txt"),
    )
    assert empty.encode("Paris") == []
    empty.save_pretrained(tmp_path)
    with pytest.raises(CircuitxError, match="its tokenizer has 1 token, so it reads no text"):
        load_model(str(tmp_path))


def test_a_tokenizer_without_bos_or_eos_puts_nothing_first(tmp_path):
    """A trial's word-level tokenizer with an unknown token only: the bridge named
    <|endoftext|> its BOS, read as [UNK], and every prompt began with [UNK], silently."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", *dict.fromkeys(task_vocabulary())]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    save_causal_lm(tmp_path, "llama", tokenizer, 1, 2, 16, seed=0)
    model = load_model(str(tmp_path), device="cpu")
    assert model.bos_token_id is None and model.tokenizer.unk_token_id == 0
    task = task_from_pairs(["When Mary and John went"], ["When Mary and Sarah went"], ["Mary"])
    data = task.build_data(model, 1, 0)
    assert data.clean[0].tolist() == model.encode("When Mary and John went")


def test_tokenizer_files_the_architecture_cannot_read_are_one_line(tmp_path):
    """A trial's: GPT-2's vocab.json and merges.txt beside a Llama; transformers' message
    stopped at a colon."""
    save_causal_lm(tmp_path, "llama", gpt2_tokenizer(), 1, 2, 16, seed=0)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((GPT2_TOKENIZER / name).read_bytes())
    assert_one_line_error(
        run("discover", "--model", tmp_path, "--task", "ioi", "--method", "eap"),
        "transformers cannot build its tokenizer from the files in",
    )


def test_builtin_model_builds_deterministically(tmp_path):
    from circuitx.builtin import model_dir

    first = model_dir("random-12x12", tmp_path / "a")
    second = model_dir("random-12x12", tmp_path / "b")
    digest = lambda d: hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert digest(first) == digest(second)
    model = load_model("random-12x12", device="cpu", cache_dir=str(tmp_path / "a"))
    assert (model.n_layers, model.n_heads, model.builtin) == (12, 12, "random-12x12")
    assert model.decode(model.encode(" Mary")).strip() == "Mary" and len(model.encode(" Mary")) == 1


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2", "mistral", "neox"])
def test_every_family_loads_as_its_hf_model_computes_it(family, tmp_path):
    """Grouped keys are given to each query head (the same function, a k and v input per
    head); a parallel block is recorded; a word-level tokenizer saved beside any
    architecture keeps its words."""
    from transformers import AutoModelForCausalLM

    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(tmp_path, family, tokenizer, 2, 4, 32, seed=5, initializer_range=0.2)
    model = load_model(str(tmp_path), device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = torch.randint(1, model.d_vocab, (3, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(tokens).logits.log_softmax(-1)
    torch.testing.assert_close(model.run(tokens).log_softmax(-1), expected, atol=1e-4, rtol=0)
    model.enable_hooks(["split_qkv"])
    try:
        _, cache = model.run_with_cache(tokens, [head_input_hook(1, "k"), head_input_hook(1, "v")])
    finally:
        model.bridge.set_use_split_qkv_input(False)
    assert cache[head_input_hook(1, "k")].shape[2] == cache[head_input_hook(1, "v")].shape[2] == 4
    assert model.parallel == (family == "neox")
    assert model.post_attention_norm == (family == "gemma2")
    assert model.encode(" Mary") == [tokenizer.convert_tokens_to_ids("Mary")]
    texts = [" Mary", "When John and Sarah went", "Mary  Bartholomew "]
    assert model.encode_many(texts) == [model.encode(text) for text in texts]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "neox"])
def test_a_model_for_another_device_is_processed_on_the_cpu_and_moved_whole(family, tmp_path):
    """The weight processing's copies stay on the CPU; the device gets the processed
    bridge, all of it: on the meta device (no data, so nothing computed), a tensor the
    forward pass reads that stayed on the CPU would fail it ("Tensor on device cpu is
    not on the expected device meta"), as it would on a GPU."""
    from circuitx.models.loading import processed_bridge

    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(tmp_path, family, tokenizer, 2, 4, 32, seed=5)
    for device in ("meta", "meta:0"):  # the config keeps an index the bridge's ``to`` drops
        bridge = processed_bridge(str(tmp_path), torch.device(device), torch.float32)
        tensors = dict(bridge.named_parameters()) | dict(bridge.named_buffers())
        assert tensors and {t.device.type for t in tensors.values()} == {"meta"}
        assert bridge.cfg.device == device
        tokens = torch.randint(1, 50, (2, 7), generator=torch.Generator().manual_seed(0))
        logits = bridge(tokens.to(device))
        assert logits.device.type == "meta" and logits.shape == (2, 7, bridge.cfg.d_vocab)
    on_cpu = processed_bridge(str(tmp_path), torch.device("cpu"), torch.float32)
    assert all(t.device.type == "cpu" for t in on_cpu.parameters())
    assert on_cpu.cfg.device == "cpu"


@pytest.mark.parametrize("d_head", [4, 32])
def test_a_legacy_model_whose_heads_do_not_fill_d_model_is_refused(tmp_path, d_head):
    """TransformerLens allows n_heads x d_head != d_model; read as GPT-2 it cannot be (a
    helper's trial: the loader failed on a tensor size mismatch)."""
    save_tl_legacy_attn_only(tmp_path, word_level_tokenizer(task_vocabulary()), 1, 4, 32, 0)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "d_head": d_head}))
    with pytest.raises(CircuitxError, match=f"4 heads of width {d_head} in d_model 32"):
        load_model(str(tmp_path), device="cpu")


def test_a_legacy_transformerlens_model_loads_as_it_computes(tmp_path):
    """attn-only-4l's format (HookedTransformer parameter names in a .pth, no model_type)
    becomes a GPT-2 with per-head q/k/v inputs, no MLP nodes and its unembedding bias,
    computing what the legacy parameters compute (written out here by hand)."""
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_tl_legacy_attn_only(tmp_path, tokenizer, 2, 4, 32, seed=4)
    model = load_model(str(tmp_path), device="cpu")
    assert (model.n_layers, model.n_heads, model.has_mlp) == (2, 4, False)
    state = torch.load(tmp_path / "model_final.pth")
    tokens = torch.randint(1, model.d_vocab, (2, 7), generator=torch.Generator().manual_seed(3))

    def norm(x, name):
        x = x - x.mean(-1, keepdim=True)
        return (
            x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * state[name + ".w"]
            + (state[name + ".b"])
        )

    resid = state["embed.W_E"][tokens] + state["pos_embed.W_pos"][: tokens.shape[1]]
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)
    for layer in range(2):
        at = f"blocks.{layer}."
        x = norm(resid, at + "ln1")
        q, k, v = (
            torch.einsum("bpd,hde->bhpe", x, state[f"{at}attn.W_{n}"])
            + state[f"{at}attn.b_{n}"][:, None]
            for n in "QKV"
        )
        scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(causal, -torch.inf)
        z = scores.softmax(-1) @ v
        resid = resid + torch.einsum("bhpe,hed->bpd", z, state[at + "attn.W_O"])
        resid = resid + state[at + "attn.b_O"]
    logits = norm(resid, "ln_final") @ state["unembed.W_U"] + state["unembed.b_U"]
    got = model.run(tokens).log_softmax(-1)
    torch.testing.assert_close(got, logits.log_softmax(-1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("given", ["gpt2", "./gpt2"])
def test_a_local_directory_named_as_a_hub_model_loads_from_disk(
    tmp_path, monkeypatch, capsys, given
):
    """A directory called gpt2 is read from disk (the bridge took the bare name for the
    hub alias and fetched its tokenizer), and a bare name that a directory shadows is noted."""
    tiny_gpt2(tmp_path / "gpt2", 1, 2, 16)
    monkeypatch.chdir(tmp_path)
    model = load_model(given, device="cpu")
    assert (model.n_layers, model.n_heads, model.hub_id) == (1, 2, None)
    noted = "note: model 'gpt2' is the local directory" in capsys.readouterr().err
    assert noted == (given == "gpt2")
    # a helper's trial: its graphs read as the hub model's; another's: a relative path in a
    # graph lost its reference from another directory
    assert model.name == str(tmp_path / "gpt2")


def test_a_shadowing_directory_that_does_not_load_says_so_in_its_one_line(
    tmp_path, monkeypatch, capsys
):
    """The note that a bare name is a local directory goes into the error, not before it
    (a new user's trial: two lines on stderr)."""
    (tmp_path / "gpt2").mkdir()
    monkeypatch.chdir(tmp_path)
    for config in ('{"model_type": "opt"}', '{"model_type": "gpt2", "n_layer": "two"}'):
        (tmp_path / "gpt2" / "config.json").write_text(config)
        with pytest.raises(CircuitxError) as caught:
            load_model("gpt2", device="cpu")
        assert str(tmp_path / "gpt2") in str(caught.value) and "\n" not in str(caught.value)
        assert "note:" not in capsys.readouterr().err


def test_an_empty_model_name_is_refused():
    with pytest.raises(CircuitxError, match="the model name is empty"):
        load_model(" ")


def test_a_directory_named_as_an_alias_loads_from_disk(tmp_path, monkeypatch):
    """./neox: the bridge took "neox" for a model alias and went to the hub."""
    save_causal_lm(tmp_path / "neox", "neox", gpt2_tokenizer(), 1, 2, 16, 0)
    monkeypatch.chdir(tmp_path)
    assert load_model("./neox", device="cpu").parallel


@pytest.mark.parametrize("device", ["cuda:7", "mps", "xla"])
def test_a_device_this_machine_lacks_is_refused_before_the_model_loads(device):
    """mps was refused only inside the model's loading, in the loader's words (a new
    user's trial), and xla after it; a CUDA device was refused up front."""
    from circuitx.models.loading import parse_device

    available = {
        "cuda:7": torch.cuda.device_count() > 7,
        "mps": torch.backends.mps.is_available(),
        "xla": False,  # torch has no torch.xla: torch_xla's own package gives one
    }
    if available[device]:
        assert parse_device(device) == torch.device(device)
    else:
        with pytest.raises(CircuitxError, match=f"device '{device}' requested but "):
            parse_device(device)


def test_a_models_file_named_for_its_directory_is_told_so(tmp_path, monkeypatch):
    """A helper's trial: `--model m/model.safetensors` was taken for a hub name."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CircuitxError, match="model 'm/config.json' is a file: name the dir"):
        load_model("m/config.json")


def test_the_meta_device_is_refused_before_the_model_loads(tmp_path):
    """A helper's trial: --device meta loaded the model and failed in a traceback."""
    result = run("discover", "--task", "ioi", "--method", "eap", "--model", str(tmp_path),
                 "--device", "meta")  # fmt: skip
    assert_one_line_error(result, "device 'meta' holds shapes, not values")


def test_an_unreachable_hub_alias_is_named_as_the_hub_model_it_is(monkeypatch):
    """A helper's trial: offline, `--model gpt2` (a listed alias) was said to name "no
    built-in model or local directory"."""
    import huggingface_hub

    from circuitx.models.loading import _check_hub_model

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", offline)
    with pytest.raises(CircuitxError, match="it is the Hugging Face hub's openai-community/gpt2"):
        _check_hub_model("gpt2", "openai-community/gpt2")
    with pytest.raises(CircuitxError, match="it names no built-in model or local directory"):
        _check_hub_model("someone/model", "someone/model")


FREEING = """
import torch
from circuitx.models.loading import release_freed_memory

def anonymous_mib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024

base = anonymous_mib()
kept, freed = [], []
for _ in range(2000):  # 100 KB each, below glibc's mmap threshold: on its heap
    freed.append(torch.ones(25_000))
    kept.append(torch.ones(10))
grown = anonymous_mib() - base
del freed
release_freed_memory(torch.device("cpu"))
print(grown, anonymous_mib() - base)
"""


def test_memory_freed_while_loading_goes_back_to_the_system():
    """What the weight processing frees (many tensors between the kept ones) leaves the
    resident size of a fresh process (its heap as loading leaves it) once given back."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("reads the resident size from Linux's /proc")
    done = subprocess.run([sys.executable, "-c", FREEING], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    grown, left = map(int, done.stdout.split())
    assert grown > 100
    assert left < 0.1 * grown


def test_an_index_on_the_one_cpu_is_refused():
    """A helper's trial: --device cpu:1 ran on the CPU, as if it named another."""
    from circuitx.models.loading import parse_device

    assert parse_device("cpu:0") == torch.device("cpu:0")
    with pytest.raises(CircuitxError, match="^device 'cpu:1': there is one cpu device; name cpu$"):
        parse_device("cpu:1")


def test_a_directory_named_as_a_built_in_model_is_noted_and_not_read(tmp_path, monkeypatch, capsys):
    """A helper's trial: a directory called planted-ioi here lost to the built-in in silence
    (usage.md said so; the run did not)."""
    (tmp_path / "planted-ioi").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_model("planted-ioi").builtin == "planted-ioi"
    assert (
        "note: 'planted-ioi' is the built-in model; the directory planted-ioi here is not read "
        "(name it ./planted-ioi)"
    ) in capsys.readouterr().err
