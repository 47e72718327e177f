"""Transcoders: training, files, the factorised attribution against a direct gradient, the
feature-level graph, the planted greater-than circuit, and bad inputs."""

import json
import pickle
import re
import sys
import time
import types
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, find, pattern_of, random_transcoders, run, tiny_gpt2

from circuitx import transcoders as tc
from circuitx.builtin import ground_truth
from circuitx.builtin import load as load_model
from circuitx.builtin.hf import save_causal_lm, word_level_tokenizer
from circuitx.discovery import DiscoveryRequest, discover, report
from circuitx.errors import CircuitxError
from circuitx.files import claim_directory
from circuitx.graph_files import read_graph
from circuitx.methods import MethodRun, get_method, method_options
from circuitx.methods.transcoder import attribute, greedy_paths, replacement_hooks
from circuitx.models import (
    attention_pattern_hook,
    head_output_hook,
    mlp_output_hook,
    norm_scale_hook,
    transformer_weights,
)
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task, task_vocabulary
from circuitx.transcoders import training

N_FEATURES = 16


def every_feature(transcoders: dict) -> dict:
    """``attribute``'s ``top`` that makes every feature a unit (a number of the strongest
    leaves out those with no attribution)."""
    return {layer: torch.arange(N_FEATURES) for layer in transcoders}


@pytest.fixture(scope="module")
def tiny_transcoders(tiny_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("transcoders")
    tc.save_transcoders(random_transcoders(tiny_model), directory, "tiny")
    return directory


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    text = "When Mary and John went to the store, John gave a drink to Mary. " * 40
    path.write_text(text + "The war lasted from the year 1732 to the year 17. " * 40)
    return path


# ---------------------------------------------------------------- the attribution is exact


def direct_gradients(engine, transcoders, live_patterns=False):
    """d target / d (feature activations, head z, MLP outputs) in the frozen replacement
    model, by autograd through the bridge: attention patterns (unless ``live_patterns``)
    and LayerNorm scales replaced by their clean values, each MLP by its transcoder with
    the clean gates plus the clean transcoder error. With ``live_patterns`` also the
    gradients at each layer's pattern (``A{layer}``) and at its queries and keys before
    rotary positions (``q{layer}``, ``k{layer}``: [n, pos, head, d_head])."""
    model, data = engine.model, engine.data
    end = data.positions["END"]
    names = ["ln_final.hook_scale"]
    for layer in range(model.n_layers):
        names += [f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.ln1.hook_scale"]
        names += [f"blocks.{layer}.ln2.hook_scale", tc.input_hook(layer), mlp_output_hook(layer)]
    _, clean = model.run_with_cache(data.clean, names)
    n, width = data.clean.shape
    deltas = {}
    hooks = []
    for name in names:
        if name.endswith("hook_scale") or (name.endswith("hook_pattern") and not live_patterns):
            hooks.append((name, lambda _, value=clean[name]: value))
    for layer, transcoder in transcoders.items():
        x_clean = clean[tc.input_hook(layer)]
        gate = (transcoder.features(x_clean) > 0).float()
        error = clean[mlp_output_hook(layer)] - transcoder(x_clean)
        delta = deltas[f"f{layer}"] = torch.zeros(n, width, N_FEATURES, requires_grad=True)
        seen = {}

        def read(x, seen=seen):
            seen["x"] = x

        def replace(_, seen=seen, t=transcoder, gate=gate, error=error, delta=delta):
            pre = (seen["x"] - t.b_dec) @ t.W_enc + t.b_enc
            return t.decode(pre * gate + delta) + error

        hooks += [(tc.input_hook(layer), read), (mlp_output_hook(layer), replace)]
    for layer in range(model.n_layers):
        z = deltas[f"z{layer}"] = torch.zeros(
            n, width, model.n_heads, model.d_head, requires_grad=True
        )
        hooks.append((head_output_hook(layer), lambda value, z=z: value + z))
        if live_patterns:
            shape = (n, model.n_heads, width, width)
            a = deltas[f"A{layer}"] = torch.zeros(shape, requires_grad=True)
            hooks.append((attention_pattern_hook(layer), lambda value, a=a: value + a))
            for side in "qk":
                shape = (n, width, model.n_heads, model.d_head)
                x = deltas[f"{side}{layer}"] = torch.zeros(shape, requires_grad=True)
                hooks.append((f"blocks.{layer}.attn.hook_{side}", lambda value, x=x: value + x))
    direction = engine.task.logit_direction(data, model.d_vocab)
    logits = model.run(data.clean, hooks, positions=end, grad=True)
    (logits * direction).sum(-1).mean().backward()
    return {key: value.grad for key, value in deltas.items()}


@pytest.fixture(scope="module", params=["gpt2", "llama", "qwen2", "neox"])
def family_model(request, tiny_model, tmp_path_factory):
    """The tiny GPT-2 model, or a Llama, Qwen2 (RMSNorm, gated MLPs, grouped keys) or
    GPT-NeoX (parallel attention and MLP) one of its size."""
    if request.param == "gpt2":
        return tiny_model
    directory = tmp_path_factory.mktemp(request.param)
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(directory, request.param, tokenizer, 2, 4, 32, 1, initializer_range=0.2)
    return load_model(str(directory), device="cpu")


def test_attribution_reads_the_engines_kept_runs_and_says_when_they_are_missing(tiny_model):
    task = get_task("ioi")
    data = task.make_data(tiny_model, 4, seed=0)
    bare = PatchingEngine(tiny_model, task, data)
    with pytest.raises(CircuitxError, match="did not keep: build it with kept=") as error:
        attribute(bare, random_transcoders(tiny_model))
    assert "\n" not in str(error.value)
    clean_only = replace(replacement_hooks(tiny_model), corrupted=())
    half = PatchingEngine(tiny_model, task, data, kept=clean_only)  # no features' patch values
    with pytest.raises(CircuitxError, match="did not keep: build it with kept="):
        attribute(half, random_transcoders(tiny_model))


@pytest.mark.parametrize("qk", ["off", "linear"])
def test_factorised_attribution_equals_the_direct_gradient(family_model, qk):
    """Every unit's outgoing edges sum to its write times the target's gradient there,
    through frozen patterns (off) or through each head's live softmax (linear)."""
    tiny_model = family_model
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=0)
    engine = PatchingEngine(
        tiny_model, task, data, ablation="zero", kept=replacement_hooks(tiny_model)
    )
    transcoders = random_transcoders(tiny_model)
    result = attribute(engine, transcoders, top=every_feature(transcoders), qk=qk)
    blocks = result.edge_blocks()
    grads = direct_gradients(engine, transcoders, live_patterns=qk == "linear")
    outgoing = {}
    for (s, _), scores in blocks.items():
        for name, total in zip(result.senders[s].names, scores.sum(1).tolist()):
            outgoing[name] = outgoing.get(name, 0.0) + total
    _, cache = tiny_model.run_with_cache(data.clean, [tc.input_hook(0), tc.input_hook(1)])
    for layer, transcoder in transcoders.items():
        acts = transcoder.features(cache[tc.input_hook(layer)])
        direct = (acts * grads[f"f{layer}"]).sum((0, 1))
        mine = torch.tensor([outgoing[f"m{layer}.f{i}"] for i in range(N_FEATURES)])
        assert direct.abs().max() > 1e-3  # the check has something to compare
        torch.testing.assert_close(mine, direct, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result.features[layer], direct, atol=1e-5, rtol=1e-4)
    for layer in range(tiny_model.n_layers):
        z = engine.clean_cache[head_output_hook(layer)]
        direct = (z * grads[f"z{layer}"]).sum((0, 1, 3))
        mine = torch.tensor([outgoing[f"a{layer}.h{h}"] for h in range(tiny_model.n_heads)])
        torch.testing.assert_close(mine, direct, atol=1e-5, rtol=1e-4)
    sides = {
        (order, units.side): units for units, order in zip(result.receivers, result.receiver_order)
    }
    for layer in range(tiny_model.n_layers):  # each head's own query and key reads
        for side in "qk":
            if qk == "off":
                assert (2 * layer, side) not in sides
                continue
            reads = sides[2 * layer, side].fields
            expected = head_input_gradient(tiny_model, engine, layer, side, grads)
            assert expected.abs().max() > 1e-4  # the softmax passes something
            torch.testing.assert_close(reads, expected, atol=1e-5, rtol=1e-4)


def head_input_gradient(model, engine, layer, side, grads):
    """The gradient at each head's query (key) input [n, pos, head, d_model] from the one at
    its queries (keys): back through W_Q (W_K) and the norm with its clean scale."""
    weights = transformer_weights(model, llama=True)
    block = weights.blocks[layer]
    matrix = block.W_Q if side == "q" else block.W_K
    at_normed = torch.einsum("nphe,hde->nphd", grads[f"{side}{layer}"], matrix) * block.ln1[0]
    if not weights.rms:
        at_normed = at_normed - at_normed.mean(-1, keepdim=True)
    _, cache = model.run_with_cache(engine.data.clean, [norm_scale_hook(layer, "ln1")])
    return at_normed / cache[norm_scale_hook(layer, "ln1")].unsqueeze(-1)


def test_the_qk_fix_is_the_pattern_change_of_patching_the_edge_times_its_gradient(tiny_model):
    """``qk fixed``: the estimate of a unit -> head q (k) edge is (A - A') . dT/dA, A' the
    pattern the model computes with that edge patched and dT/dA the replacement model's
    gradient at the pattern; the edges into values keep their products, and a feature-
    level MLP's units add up to the whole MLP's estimate."""
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=0)
    engine = PatchingEngine(
        tiny_model, task, data, ablation="zero", kept=replacement_hooks(tiny_model)
    )
    transcoders = random_transcoders(tiny_model)
    fixed = attribute(engine, transcoders, top=3, qk="fixed")
    linear = attribute(engine, transcoders, top=3, qk="linear")
    grads = direct_gradients(engine, transcoders, live_patterns=True)
    layout, layer, head = engine.layout, 1, 2
    clean = pattern_of(engine, layer)
    at = {(o, u.side): r for r, (u, o) in enumerate(zip(fixed.receivers, fixed.receiver_order))}
    block_of = {u.names[0]: s for s, u in enumerate(fixed.senders)}
    fixed_blocks, linear_blocks = fixed.edge_blocks(), linear.edge_blocks()
    # (sender in the layout, its block and row in the attribution)
    units = [(0, block_of["input"], [0]), (layout.head_sender(0, 1), block_of["a0.h0"], [1])]
    mlp = next(s for s, u in enumerate(fixed.senders) if u.names[-1] == "m0.rest")
    assert len(fixed.senders[mlp].names) == 4  # 3 features and the rest: they add up
    units.append((layout.mlp_sender(0), mlp, None))
    for side in "qk":
        receiver, r = layout.head_receiver(layer, side, head), at[2 * layer, side]
        for sender, s, rows in units:
            mask = torch.ones(1, layout.n_senders, layout.n_receivers)
            mask[0, sender, receiver] = 0.0
            direct = ((clean - pattern_of(engine, layer, mask)) * grads[f"A{layer}"]).sum()
            mine = fixed_blocks[s, r][:, head] if rows is None else fixed_blocks[s, r][rows, head]
            assert float(direct) != 0.0
            assert float(mine.sum()) == pytest.approx(float(direct), abs=1e-5)
    v = at[2 * layer, "v"]
    for (s, r), block in fixed_blocks.items():
        if r == v:
            torch.testing.assert_close(block, linear_blocks[s, r])


def test_a_feature_to_feature_edge_is_activation_times_a_weight(tiny_model, tiny_transcoders):
    """e(f -> g) = sum over prompts and positions of a_f * gate_g dT/da_g / s2 (input-
    dependent) times W_dec[f] . C(W_enc[:, g]) (input-invariant; the gain is folded)."""
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=0)
    engine = PatchingEngine(
        tiny_model, task, data, ablation="zero", kept=replacement_hooks(tiny_model)
    )
    transcoders = tc.load_transcoders(str(tiny_transcoders))
    result = attribute(engine, transcoders, top=every_feature(transcoders))
    s = next(i for i, u in enumerate(result.senders) if u.names[0] == "m0.f0")
    r = next(i for i, u in enumerate(result.receivers) if u.names[0] == "m1.f0")
    block = result.edge_blocks()[s, r]
    grads = direct_gradients(engine, transcoders)
    names = [tc.input_hook(0), tc.input_hook(1), "blocks.1.ln2.hook_scale"]
    _, cache = tiny_model.run_with_cache(data.clean, names)
    first, second = transcoders[0], transcoders[1]
    a_f = first.features(cache[tc.input_hook(0)])  # [n, pos, F]
    gate_g = (second.features(cache[tc.input_hook(1)]) > 0).float()
    read_g = gate_g * grads["f1"] / cache["blocks.1.ln2.hook_scale"]  # [n, pos, F]
    encoder = second.W_enc - second.W_enc.mean(0)  # centred columns
    weights = first.W_dec @ encoder  # [F, F] input-invariant
    expected = torch.einsum("npf,npg->fg", a_f, read_g) * weights
    torch.testing.assert_close(block[:N_FEATURES, :N_FEATURES], expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- files


def test_save_and_load_round_trip(tmp_path, tiny_model):
    original = random_transcoders(tiny_model, seed=3)
    original[1].config["l1"] = 0.001
    tc.save_transcoders(original, tmp_path, "tiny")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        f"final_sparse_autoencoder_tiny_blocks.{layer}.ln2.hook_normalized_{N_FEATURES}.pt"
        for layer in (0, 1)
    ]
    loaded = tc.load_transcoders(str(tmp_path))
    for layer, transcoder in original.items():
        for name, tensor in transcoder.state_dict().items():
            assert torch.equal(loaded[layer].state_dict()[name], tensor)
    assert loaded[1].config["l1"] == 0.001
    assert loaded[1].config["hook_point"] == "blocks.1.ln2.hook_normalized"
    assert list(tc.load_transcoders(str(tmp_path), [1])) == [1]


@dataclass
class AuthorsConfig:  # stands in for the authors' pickled LanguageModelSAERunnerConfig
    hook_point: str = "blocks.0.ln2.hook_normalized"
    d_in: int = 32
    is_transcoder: bool = True


def test_reads_the_authors_files_without_their_config_class(tmp_path, tiny_model):
    """The pretrained GPT-2 transcoders pickle a config class from the authors' package;
    the loader reads such a file without that package."""
    module = types.ModuleType("sae_training_standin")
    AuthorsConfig.__module__ = module.__name__
    module.AuthorsConfig = AuthorsConfig
    sys.modules[module.__name__] = module
    weights = random_transcoders(tiny_model)[0].state_dict()
    path = tmp_path / "final_sparse_autoencoder_gpt2-small_blocks.0.ln2.hook_normalized_16.pt"
    try:
        torch.save({"cfg": AuthorsConfig(), "state_dict": weights}, path)
    finally:
        del sys.modules[module.__name__]
    with pytest.raises(pickle.UnpicklingError):  # plain weights-only loading refuses it
        torch.load(path, weights_only=True)
    loaded = tc.load_transcoders(str(tmp_path))[0]
    assert torch.equal(loaded.W_enc, weights["W_enc"])
    assert loaded.config == {
        "hook_point": "blocks.0.ln2.hook_normalized",
        "d_in": 32,
        "is_transcoder": True,
    }


def test_file_and_hub_errors_are_one_line(tmp_path, tiny_model):
    with pytest.raises(CircuitxError, match="no transcoder files"):
        tc.load_transcoders(str(tmp_path))
    tc.save_transcoders(random_transcoders(tiny_model), tmp_path, "tiny")
    with pytest.raises(CircuitxError, match="no transcoder for layer 5 .* has layers 0, 1"):
        tc.load_transcoders(str(tmp_path), [0, 5])
    started = time.perf_counter()
    with pytest.raises(CircuitxError, match="cannot load transcoders 'pchlenski/gpt2-transcoders'"):
        tc.load_transcoders("pchlenski/gpt2-transcoders")  # the hub is unreachable in tests
    assert time.perf_counter() - started < 12  # one request, not the hub client's ~25 s of retries
    for missing in (str(tmp_path / "missing"), "missing/"):  # not the hub's repo-id rules
        with pytest.raises(CircuitxError, match="directory not found"):
            tc.load_transcoders(missing)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "final_sparse_autoencoder_x_blocks.0.ln2.hook_normalized_16.pt").write_text("no")
    with pytest.raises(CircuitxError, match="cannot read transcoder file") as refused:
        tc.load_transcoders(str(broken))
    # a helper's trial: torch's advice, weights_only=False, would run a file's code
    assert "holds neither tensors" in str(refused.value) and "weights_only" not in str(
        refused.value
    )
    twice = tmp_path / "twice"
    twice.mkdir()
    tc.save_transcoders(random_transcoders(tiny_model), twice, "tiny")
    tc.save_transcoders(random_transcoders(tiny_model), twice, "other")
    with pytest.raises(CircuitxError, match="has two transcoder files for layer 0"):
        tc.load_transcoders(str(twice))  # a trial's: the last in sorted order won in silence
    # a trial's fuzz: these bytes made torch raise IndexError and KeyError, tracebacks
    for content in (b"R", b"hello world\n"):
        (broken / "final_sparse_autoencoder_x_blocks.0.ln2.hook_normalized_16.pt").write_bytes(
            content
        )
        with pytest.raises(CircuitxError, match="cannot read transcoder file"):
            tc.load_transcoders(str(broken))


def test_a_hub_dataset_corpus_that_cannot_be_reached_is_one_quick_line(tiny_model):
    """A trial's: the datasets loader retried the unreachable hub for ~30 s, printing
    each retry, before the one-line error."""
    started = time.perf_counter()
    with pytest.raises(CircuitxError, match="no dataset of that name can be reached on the hub"):
        tc.load_corpus(tiny_model, "someone/some-dataset", 32, 0)
    assert time.perf_counter() - started < 12


def test_a_hub_repo_gives_only_the_layers_asked_for(tmp_path, tiny_model, monkeypatch):
    import huggingface_hub

    tc.save_transcoders(random_transcoders(tiny_model), tmp_path, "tiny")
    files = {path.name: path for path in tmp_path.iterdir()}
    listed = [*files, "README.md", "config.json"]
    fetched = []

    def model_info(repo_id, timeout=None):
        assert repo_id == "someone/transcoders" and timeout
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=n) for n in listed])

    def hf_hub_download(repo_id, name):
        fetched.append(name)
        return str(files[name])

    monkeypatch.setattr(huggingface_hub, "model_info", model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    loaded = tc.load_transcoders("someone/transcoders", [1])
    assert list(loaded) == [1] and fetched == [n for n in files if "blocks.1." in n]
    assert sorted(tc.load_transcoders("someone/transcoders")) == [0, 1]


# ---------------------------------------------------------------- training


def test_an_mlp_that_writes_zeros_has_no_variance_explained(tmp_path, corpus_file):
    """A helper's trial: an MLP whose output is 0 reported FVE -4.8e15 (its variance
    clamped to 1e-12); it has no variance to explain."""

    def silence(model):
        for block in model.transformer.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()

    model = load_model(str(tiny_gpt2(tmp_path / "m", 2, 4, 32, edit=silence)), device="cpu")
    corpus = tc.load_corpus(model, str(corpus_file), 32, 0)
    settings = tc.TrainingSettings(n_features=16, steps=2, batch_tokens=64)
    trained = tc.train_transcoders(model, [0, 1], corpus, settings)
    quality = tc.layer_quality(model, trained, corpus.tokens[:4], corpus.real[:4])
    assert [q.fraction_of_variance_explained for q in quality.values()] == [None, None]


def test_training_learns_and_is_seeded(tiny_model, corpus_file):
    corpus = tc.load_corpus(tiny_model, str(corpus_file), 32, 0)
    settings = tc.TrainingSettings(n_features=64, steps=150, batch_tokens=256, l1=1e-3, lr=1e-2)
    trained = tc.train_transcoders(tiny_model, [0, 1], corpus, settings)
    quality = tc.layer_quality(tiny_model, trained, corpus.tokens[:8], corpus.real[:8])
    assert all(q.fraction_of_variance_explained > 0.8 for q in quality.values()), quality
    assert all(0 < q.l0 < 64 for q in quality.values()), quality
    for transcoder in trained.values():
        norms = transcoder.W_dec.norm(dim=1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    again = tc.train_transcoders(tiny_model, [0], corpus, settings)
    assert torch.equal(again[0].W_enc, trained[0].W_enc)


class _Interrupt:
    """An ``advance`` that presses Ctrl-C (raises ``stop``) after ``steps`` steps."""

    def __init__(self, steps: int, stop: type[BaseException] = KeyboardInterrupt) -> None:
        self.left, self.stop = steps, stop

    def __call__(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise self.stop("stopped")


@pytest.mark.parametrize("buffer_tokens", [512, 65536])  # refilled from rows; the whole corpus
def test_an_interrupted_training_resumes_to_the_uninterrupted_result(
    tmp_path, tiny_model, corpus_file, buffer_tokens
):
    corpus = tc.load_corpus(tiny_model, str(corpus_file), 32, 0)
    settings = tc.TrainingSettings(
        n_features=32, steps=9, batch_tokens=256, buffer_tokens=buffer_tokens
    )

    def train(out, advance=lambda n: None, every=3):
        state = tc.interrupted_run(out)
        resume = state and tc.load_interrupted(state, tiny_model, [0, 1], corpus, settings)
        return tc.train_and_report(
            tiny_model, [0, 1], corpus, settings, out, [], 4, every, advance, resume
        )

    whole = train(tmp_path / "whole")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        train(out, _Interrupt(7))  # after step 7: checkpoints at 3 and 6
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no final files
    assert tc.interrupted_run(out) == out / "checkpoints" / "training-state.pt"
    resumed = train(out)
    assert resumed["resumed_from_step"] == 6 and whole["resumed_from_step"] is None
    assert resumed["layers_quality"] == whole["layers_quality"]
    for layer, path in tc.files.layer_files(out).items():
        assert path.read_bytes() == tc.files.layer_files(tmp_path / "whole")[layer].read_bytes()
    assert tc.interrupted_run(out) is None  # finished: the state is gone
    assert not (out / "checkpoints" / "training-state.pt").exists()

    changed = tmp_path / "changed"
    with pytest.raises(KeyboardInterrupt):
        train(changed, _Interrupt(4))
    settings.l1 *= 2
    with pytest.raises(CircuitxError, match=r"interrupted at step 3 with another --l1 0.001 \(not"):
        train(changed)
    settings.l1 /= 2

    without = tmp_path / "without-checkpoints"
    with pytest.raises(KeyboardInterrupt):
        train(without, _Interrupt(4), every=0)
    assert not without.exists()  # nothing to resume, nothing left


def test_the_command_resumes_an_interrupted_run(tmp_path, tiny_dir, corpus_file, monkeypatch):
    out = tmp_path / "tc"
    args = ["train-transcoders", "--model", tiny_dir, "--corpus", corpus_file, "--layers", "0",
            "--features", 16, "--steps", 6, "--checkpoint-every", 2, "--tasks", "none",
            "--out", out, "--json"]  # fmt: skip
    original = tc.train_and_report
    monkeypatch.setattr(
        tc,
        "train_and_report",
        # not Ctrl-C, which ends the command (and pytest) with os._exit
        lambda *a: original(*a[:8], _Interrupt(3, CircuitxError), *a[9:]),
    )
    assert_one_line_error(run(*args), "stopped")
    monkeypatch.setattr(tc, "train_and_report", original)
    # a helper's trial: "no transcoder files" for an interrupted run's directory
    with pytest.raises(CircuitxError, match=r"only the checkpoints .* \(the last: .*step-2\)$"):
        tc.load_transcoders(str(out))
    other = run(*args[:-1], "--steps", 7)
    assert_one_line_error(other, "interrupted at step 2 with another --steps 6 (not 7): run it")
    # a trial's: the options as typed ("n_features 16 (not 32)" named the library's field)
    wider = run(*args[:-1], "--features", 32, "--no-refit")
    assert_one_line_error(wider, "with another --features 16 (not 32), --refit (not --no-refit):")
    shorter = run(*args[:-1], "--context", 8)  # a helper's trial: "another corpus", no more
    assert_one_line_error(shorter, "another corpus (its tokens differ: another --corpus, --context")
    resumed = run(*args[:-1])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "training.json").read_text())["resumed_from_step"] == 2
    assert "resuming the run interrupted at step 2" in resumed.stderr
    # a helper's trial: the line gave every step's tokens over this run's seconds
    assert re.search(r"^2048 tokens in [\d.]+ s \(.*\), resumed at step 2 \(3072 tokens in all\)$",
                     resumed.stdout, re.M), resumed.stdout  # fmt: skip
    assert_one_line_error(run(*args), "exists; choose a new directory")  # finished
    longer = run(*args[:-3], "--out", tmp_path / "long", "--context", 500)
    assert longer.exit_code == 0, longer.output  # a helper's trial: cut to 128 in silence
    assert "note: --context 500 is more than" in longer.stderr and "context of 128" in longer.stderr


def test_train_transcoders_command(tmp_path, tiny_dir, corpus_file):
    out = tmp_path / "tc"
    result = run(
        "train-transcoders", "--model", tiny_dir, "--corpus", corpus_file, "--layers", "0,1",
        "--features", 32, "--steps", 20, "--checkpoint-every", 10, "--tasks", "ioi",
        "--n-prompts", 8, "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["layers_quality"]) == {"0", "1"}
    assert summary["training_tokens"] == 20 * 512
    assert summary["held_out_is_training"] is False
    assert summary["task_metric_replaced"]["ioi"]["metric"] == "logit-diff"
    assert json.loads((out / "training.json").read_text())["steps"] == 20
    assert summary["context"] <= 128  # the sequences' length (the default --context, 128)
    assert len(list((out / "checkpoints" / "step-10").glob("*.pt"))) == 2
    loaded = tc.load_transcoders(str(out))
    assert set(loaded) == {0, 1}
    assert loaded[0].config["l1"] == 1e-3 and loaded[0].config["steps"] == 20

    def discover_with(model, transcoders=out) -> str:
        found = run(
            "discover", "--task", "ioi", "--method", "transcoder", "--model", model,
            "--transcoders", transcoders, "--reference", "none", "--n-prompts", 4,
            "--no-faithfulness",
        )  # fmt: skip
        assert found.exit_code == 0, found.output
        return found.stderr

    assert "were trained for" not in discover_with(tiny_dir)
    other = tiny_gpt2(tmp_path / "other", 2, 4, 32, seed=1)  # the same shape
    note = discover_with(other)
    # a model named by its directory is named once (a trial's said "for DIR (DIR)")
    assert f"the transcoders in {out} were trained for {tiny_dir}, not this model" in note
    assert f"not this model ({other})" in note
    # a trial: a checkpoint carried no record, so another model's went unremarked
    checkpoint = out / "checkpoints" / "step-10"
    assert json.loads((checkpoint / "training.json").read_text())["step"] == 10
    assert "were trained for" not in discover_with(tiny_dir, checkpoint)
    note = discover_with(other, checkpoint)
    assert f"the transcoders in {checkpoint} were trained for {tiny_dir}, not this" in note


def test_a_built_in_models_cached_transcoders_name_its_build(tmp_path, monkeypatch):
    """--transcoders given a built-in model's cache folder notes a folder made for another
    build of the model (it had no record: nothing was checked), and not a cache elsewhere."""
    settings = tc.TrainingSettings(n_features=16, steps=2, batch_tokens=64, buffer_tokens=256)
    monkeypatch.setattr(tc, "BUILTIN_SETTINGS", settings)
    model = load_model("tracr-reverse")
    tc.builtin_transcoders(model, tmp_path)
    (folder,) = (tmp_path / "transcoders").iterdir()
    assert tc.trained_for(folder) == ("tracr-reverse", model.source)
    record = json.loads((folder / "training.json").read_text())
    record["model_source"] = str(tmp_path / "elsewhere" / Path(model.source).name)
    (folder / "training.json").write_text(json.dumps(record))
    assert tc.fitted_elsewhere(str(folder), model) is None  # the same build, cached elsewhere
    record["model_source"] = str(Path(model.source).with_name("tracr-reverse-000000000000"))
    (folder / "training.json").write_text(json.dumps(record))
    said = tc.fitted_elsewhere(str(folder), model)
    assert said.startswith(f"the transcoders in {folder} were trained for tracr-reverse")
    # a helper's trial: the note was on stderr only, not in --json's warnings
    facts = {"transcoders_fitted_elsewhere": said}
    assert get_method("transcoder").warnings(facts) == [f"transcoder: {said}"]
    (folder / "training.json").unlink()  # a cache from before records: written on its next use
    tc.builtin_transcoders(model, tmp_path)
    assert tc.trained_for(folder) == ("tracr-reverse", model.source)


def test_tasks_a_model_cannot_run_are_one_line_or_refused_when_named(
    tmp_path, tiny_dir, corpus_file
):
    common = ["train-transcoders", "--model", tiny_dir, "--corpus", corpus_file, "--steps", 2]
    every = run(*common, "--out", tmp_path / "a", "--n-prompts", 4)
    assert every.exit_code == 0, every.output
    assert "not measured, as the model cannot run them: tracr (--json says why)" in every.stdout
    assert "needs a tracr model" not in every.stdout  # the reason is in --json, not a column
    named = run(*common, "--out", tmp_path / "b", "--tasks", "ioi,tracr")  # before training
    assert_one_line_error(named, "task tracr needs a tracr model")
    assert not (tmp_path / "b").exists()


def test_a_task_file_is_measured_with_the_mlps_replaced(tmp_path, tiny_dir, corpus_file):
    """A helper's trial: --tasks turned a task file into its name, then looked that name
    up as a built-in task ("unknown task 'copy'; ... or give a task file")."""
    pairs = [
        {"clean": f" {a} {b} {a}", "corrupted": f" {a} {c} {a}", "answer": b, "wrong": c}
        for a, b, c in [("river", "house", "light"), ("cloud", "stone", "green")] * 2
    ]
    task_file = tmp_path / "copy.jsonl"
    task_file.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    result = run(
        "train-transcoders", "--model", tiny_dir, "--corpus", corpus_file, "--steps", 2,
        "--tasks", f"{task_file},ioi", "--n-prompts", 4, "--out", tmp_path / "tc", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    measured = json.loads(result.stdout)["task_metric_replaced"]
    assert list(measured) == ["copy", "ioi"]
    assert measured["copy"]["metric"] == "logit-diff" and measured["copy"]["original"] != 0


@pytest.mark.parametrize("family", ["llama", "neox"])
def test_trained_transcoders_run_discovery_on_other_architectures(tmp_path, corpus_file, family):
    """RMSNorm inputs, gated MLPs (Llama) and parallel blocks (GPT-NeoX): transcoders train
    on what the MLP reads, and discovery attributes through them."""
    model_dir, out = tmp_path / "model", tmp_path / "tc"
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(model_dir, family, tokenizer, 2, 4, 32, 1, initializer_range=0.2)
    trained = run(
        "train-transcoders", "--model", model_dir, "--corpus", corpus_file, "--features", 32,
        "--steps", 20, "--out", out, "--json",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    found = run(
        "discover", "--task", "ioi", "--method", "transcoder", "--model", model_dir,
        "--transcoders", out, "--reference", "none", "--n-prompts", 8,
        "--out", tmp_path / "g.json",
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    graph = read_graph(tmp_path / "g.json")
    scores = [data["score"] for _, _, data in graph.edges(data=True)]
    assert any(score != 0 for score in scores)
    if family == "neox":  # a parallel block's heads do not write into its own MLP
        assert not graph.has_edge("a0.h0", "m0")


def test_training_bad_inputs_end_in_one_line(tmp_path, tiny_dir, corpus_file, tiny_transcoders):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    common = ["train-transcoders", "--model", tiny_dir, "--out", tmp_path / "o", "--steps", 1]
    assert_one_line_error(run(*common, "--corpus", empty), "is empty")
    assert_one_line_error(run(*common, "--corpus", tmp_path / "no.txt"), "corpus file not found")
    # a directory was "not found" too
    assert_one_line_error(run(*common, "--corpus", tmp_path), "is a directory, not a corpus file")
    binary = tmp_path / "weights.pt"  # a helper's trial: trained on as replacement characters
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xb7\xac\xce\x34" * 8)
    assert_one_line_error(run(*common, "--corpus", binary), "is not UTF-8 text (byte 10 is not)")
    unloaded = ["train-transcoders", "--model", tmp_path / "no-model", "--out", tmp_path / "o"]
    for bad, said in ((binary, "is not UTF-8"), (empty, "is empty"), (tmp_path, "a directory")):
        assert_one_line_error(run(*unloaded, "--corpus", bad), said)  # before the model loads
    assert_one_line_error(
        run(*common, "--corpus", corpus_file, "--layers", "0,7"), "layer 7 does not exist"
    )
    assert_one_line_error(run(*common, "--layers", "x"), "--layers must be")
    assert_one_line_error(run(*common, "--corpus", corpus_file, "--threads", 0), "--threads")
    for flag in ("--lr", "--l1"):
        assert_one_line_error(run(*common, flag, "nan"), f"{flag} must be a finite number")
    assert_one_line_error(run(*common, "--features", 10**8), "1<=x<=1048576")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("kept")
    assert_one_line_error(run(*common, "--corpus", corpus_file), "exists; choose a new directory")
    assert (tmp_path / "o" / "mine.txt").read_text() == "kept"
    held = tmp_path / "held"
    with claim_directory(held):  # a helper's trial: two runs into one --out mixed their files
        busy = run(*common[:3], "--out", held, "--steps", 1, "--corpus", corpus_file)
        assert_one_line_error(busy, f"--out {held} is being written by another run")
    assert not held.exists()


def test_a_corpus_of_one_sequence_is_measured_on_its_training_tokens_with_a_note(
    tmp_path, tiny_dir
):
    """A helper's trial: a tiny corpus's held-out tokens were its training tokens, unsaid."""
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("the cat sat on the mat and the dog ran\n")
    result = run("train-transcoders", "--model", tiny_dir, "--corpus", tiny, "--layers", "0",
                 "--features", 8, "--steps", 2, "--batch-tokens", 4, "--tasks", "none",
                 "--out", tmp_path / "o", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["held_out_is_training"] is True
    assert "note: the corpus makes one sequence (" in result.stderr
    assert "measured on the training tokens, none held out" in result.stderr


def test_training_out_of_memory_is_one_line(tmp_path, tiny_dir, corpus_file, monkeypatch):
    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 102400000000 bytes.\nmore")  # fmt: skip

    monkeypatch.setattr(tc, "train_and_report", allocate)
    result = run(
        "train-transcoders", "--model", tiny_dir, "--out", tmp_path / "o", "--corpus", corpus_file
    )
    assert result.exit_code == 3
    assert_one_line_error(result, "out of memory: [enforce fail")


def test_gemma2_transcoders_are_refused_before_training(tmp_path, corpus_file):
    save_causal_lm(tmp_path / "g", "gemma2", word_level_tokenizer(task_vocabulary()), 1, 2, 16, 0)
    result = run(
        "train-transcoders", "--model", tmp_path / "g", "--out", tmp_path / "o",
        "--corpus", corpus_file, "--tasks", "none",
    )  # fmt: skip
    assert_one_line_error(result, "(Gemma-2): transcoder attribution does not take them")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- discovery


def test_bad_transcoders_for_discovery_end_in_one_line(
    tmp_path, tiny_dir, dir_12x12, tiny_transcoders
):
    base = ["discover", "--task", "ioi", "--method", "transcoder", "--n-prompts", 4]
    base += ["--reference", "none"]
    assert_one_line_error(
        run(*base, "--model", dir_12x12, "--transcoders", tiny_transcoders),
        "no transcoder for layer 2",
    )
    wider = tmp_path / "wide"
    model = load_model(str(tiny_dir))
    transcoders = random_transcoders(model)
    transcoders = {l: tc.Transcoder(t.W_enc.repeat(2, 1), t.b_enc, t.W_dec.repeat(1, 2), t.b_dec.repeat(2), t.b_dec_out.repeat(2)) for l, t in transcoders.items()}  # fmt: skip
    tc.save_transcoders(transcoders, wider, "wide")
    assert_one_line_error(run(*base, "--model", tiny_dir, "--transcoders", wider), "model ")
    assert_one_line_error(run(*base, "--model", tiny_dir), "no transcoders known")
    assert get_method("transcoder").model_refusal({"transcoders": None}, str(tiny_dir))
    assert get_method("transcoder").model_refusal({"transcoders": None}, "planted-ioi") is None
    # GPT-2's pretrained ones were keyed "gpt2", which names openai-community/gpt2: unfound
    assert get_method("transcoder").model_refusal({"transcoders": None}, "gpt2") is None
    # a misspelt hub name is refused offline; the refusal names the names that have them
    misspelt = get_method("transcoder").model_refusal({"transcoders": None}, "gpt2-smal")
    assert (
        "'gpt2-smal' (known: the built-in models, gpt2, gpt2-small, openai-community/gpt2)"
        in misspelt
    )
    assert_one_line_error(
        run(*base, "--model", tiny_dir, "--transcoders", tiny_transcoders, "--n-features", 0),
        "'--n-features': 0 is not in the range 1<=x<=1000000",
    )
    eap = ["discover", "--task", "ioi", "--method", "eap", "--model", tiny_dir]
    assert_one_line_error(run(*eap, "--granularity", "feature"), "applies to transcoder")


def test_feature_graph_sums_to_the_component_graph(tmp_path, tiny_dir, tiny_transcoders):
    base = ["discover", "--task", "ioi", "--method", "transcoder", "--model", tiny_dir]
    base += ["--n-prompts", 6, "--transcoders", tiny_transcoders, "--json"]
    nodes_out, features_out = tmp_path / "n.graphml", tmp_path / "f.graphml"
    by_node = run(*base, "--out", nodes_out)
    by_feature = run(*base, "--granularity", "feature", "--n-features", 3, "--out", features_out)
    assert by_node.exit_code == 0 and by_feature.exit_code == 0, by_feature.output
    assert json.loads(by_node.stdout)["metrics"] == json.loads(by_feature.stdout)["metrics"]
    graph = read_graph(features_out)
    features = [n for n, kind in graph.nodes(data="kind") if kind == "feature"]
    assert sorted(n for n in features if n.startswith("m1.")) == sorted(
        [n for n in features if n.startswith("m1.f")] + ["m1.rest"]
    )
    assert len(features) == 2 * (3 + 1)
    # the summary counts them apart from the heads and MLPs (a trial found the two
    # granularities' summaries alike)
    summary, plain = json.loads(by_feature.stdout), json.loads(by_node.stdout)
    assert summary["n_features"] == len(features) and plain["n_features"] is None
    assert summary["n_features_in_circuit"] == sum(
        bool(graph.nodes[n]["in_circuit"]) for n in features
    )
    assert summary["n_nodes"] == plain["n_nodes"]
    shown = run(*base[:-1], "--granularity", "feature", "--n-features", 3).stdout
    assert (
        "features kept" in shown
        and f"/ {len(features)} (each MLP's rest one of them), their edges" in shown
    )
    for mlp in ("m0", "m1"):
        parts = sum(graph.nodes[n]["score"] for n in features if n.startswith(mlp + "."))
        assert parts == pytest.approx(graph.nodes[mlp]["score"], abs=1e-5)
    edge_scores = {k: d["score"] for _, _, k, d in graph.edges(keys=True, data=True)}
    into_m1 = sum(v for k, v in edge_scores.items() if k.startswith("a0.h2->m1."))
    assert into_m1 == pytest.approx(edge_scores["a0.h2->m1"], abs=1e-5)
    scored = run("score", features_out, "--reference", nodes_out, "--json")
    assert json.loads(scored.stdout)["metrics"]["node_recall"] == 1.0  # the same circuit
    compared = json.loads(run("compare", features_out, nodes_out, "--json").stdout)
    assert compared["edges"]["jaccard"] in (1.0, None)
    assert run("export", features_out, "--format", "dot").exit_code == 0


def test_the_memory_plan_counts_only_the_features_kept(tiny_model, tiny_transcoders):
    """--n-features above the transcoders' width keeps them all (it planned memory for a
    million features a layer, and --granularity node for the ten it never keeps)."""
    method = get_method("transcoder")
    width = random_transcoders(tiny_model)[0].n_features

    def floats(**options):
        options = method_options(method, {"transcoders": str(tiny_transcoders), **options})
        return method.working_floats_per_token(tiny_model, MethodRun(options=options))

    assert floats(n_features=10**6) == floats(n_features=3) == floats(n_features=width)
    all_kept = floats(granularity="feature", n_features=width)
    assert floats(granularity="feature", n_features=10**6) == all_kept
    assert floats(granularity="feature", n_features=3) < all_kept


def test_max_tokens_bounds_the_task_corpus_too():
    """It bounded only a text file or dataset: the tasks corpus kept every prompt."""
    model = load_model("planted-greater-than")
    whole = tc.load_corpus(model, tc.BUILTIN_CORPUS, 128, 0)
    capped = tc.load_corpus(model, tc.BUILTIN_CORPUS, 128, 0, max_tokens=300)
    assert whole.n_tokens > 300 >= capped.n_tokens > 250
    again = tc.load_corpus(model, tc.BUILTIN_CORPUS, 128, 0, max_tokens=300)
    assert torch.equal(again.tokens, capped.tokens)


@pytest.mark.slow
def test_recovers_the_planted_greater_than_circuit(tmp_path):
    """Transcoders trained briefly on the planted greater-than model's task text keep the
    task metric and put the planted circuit's nodes first."""
    model = load_model("planted-greater-than")
    corpus = tc.load_corpus(model, tc.BUILTIN_CORPUS, 128, 0)
    settings = tc.TrainingSettings(n_features=512, steps=300, batch_tokens=512, l1=1e-3, lr=3e-3)
    transcoders = tc.train_transcoders(model, range(model.n_layers), corpus, settings)
    replaced = tc.task_metric_with_replacement(model, transcoders, "greater-than", 50, 1)
    assert replaced["relative_change"] < 0.1, replaced
    tc.save_transcoders(transcoders, tmp_path, "planted")
    options = {"transcoders": str(tmp_path)}
    graph = find(model, "greater-than", "transcoder", n_prompts=50, options=options)
    summary = report(graph, ground_truth("planted-greater-than", "greater-than"), "truth")
    assert summary["metrics"]["node_auc"] >= 0.9, summary["metrics"]
    assert summary["metrics"]["node_recall"] == 1.0


def test_a_feature_whose_attribution_is_rounding_is_no_unit(tiny_model):
    """A feature is a unit of its own only above the gradient methods' resolution times
    the target: below it rounding ranks features (on planted docstring, whose MLPs do
    nothing, the features chosen changed with the prompts' parts). An MLP whose
    transcoder writes next to nothing keeps its rest alone."""
    task = get_task("ioi")
    data = task.make_data(tiny_model, 6, seed=0)
    engine = PatchingEngine(tiny_model, task, data, kept=replacement_hooks(tiny_model))
    transcoders = random_transcoders(tiny_model)
    transcoders[0].W_dec.mul_(1e-8)  # m0's features write next to nothing
    result = attribute(engine, transcoders, top=3)
    names = {name for units in result.senders for name in units.names}
    assert {name for name in names if name.startswith("m0.")} == {"m0.rest"}
    assert len([name for name in names if name.startswith("m1.f")]) == 3
    assert 0.0 < float(result.features[0].abs().max()) < 1e-4 * abs(result.target)


def test_greedy_paths_split_each_nodes_attribution_among_its_inputs(tiny_model):
    """From the logits back: a node's share passes to its inputs in proportion to |e|
    (over the larger of their sum and the node's own score); the beam keeps the strongest
    paths above the least share; the circuit is their union."""
    layout = tiny_model.layout
    edges = torch.zeros(layout.n_senders, layout.n_receivers)
    a1h0, m0, a0h1 = layout.head_sender(1, 0), layout.mlp_sender(0), layout.head_sender(0, 1)
    edges[a1h0, layout.logits_receiver] = 3.0
    edges[m0, layout.logits_receiver] = -1.0
    edges[a0h1, layout.head_receiver(1, "q", 0)] = 2.0  # a1.h0's inputs: 2 + 2 = its score 3
    edges[0, layout.head_receiver(1, "v", 0)] = -2.0
    edges[0, layout.mlp_receiver(0)] = 0.5  # m0's inputs explain half its score
    nodes = torch.zeros(layout.n_senders)
    nodes[a1h0], nodes[m0], nodes[a0h1] = 3.0, -1.0, 2.0
    chosen, paths = greedy_paths(layout, edges, nodes, 10, 5)
    shares = {" <- ".join(path.nodes): path.share for path in paths}
    assert shares == pytest.approx(
        {
            "logits <- a1.h0": 0.75,
            "logits <- m0": 0.25,
            "logits <- a1.h0<q> <- a0.h1": 0.375,  # 0.75 x 2 / 4
            "logits <- a1.h0<v> <- input": 0.375,
            "logits <- m0 <- input": 0.125,  # 0.25 x 0.5 / max(0.5, 1)
        }
    )
    assert int(chosen.sum()) == 5 and bool(chosen[a0h1, layout.head_receiver(1, "q", 0)])
    beam, _ = greedy_paths(layout, edges, nodes, 1, 5)  # one path: the strongest each step
    assert int(beam.sum()) == 2 and bool(beam[a1h0, layout.logits_receiver])
    cut, kept = greedy_paths(layout, edges, nodes, 10, 5, min_share=0.3)
    assert all(path.share >= 0.3 for path in kept) and not cut[0, layout.mlp_receiver(0)]


def test_path_search_selects_the_union_of_its_paths(
    tmp_path, tiny_dir, tiny_transcoders, monkeypatch
):
    """``--search paths``: the circuit is the paths' edges (no threshold or top k), the
    graph lists the strongest paths, and each of their edges is in the circuit."""
    out = tmp_path / "paths.graphml"
    args = ["discover", "--task", "ioi", "--method", "transcoder", "--model", tiny_dir]
    args += ["--n-prompts", 6, "--transcoders", tiny_transcoders, "--search", "paths"]
    result = run(*args, "--n-paths", 3, "--out", out, "--no-faithfulness")
    assert result.exit_code == 0, result.output
    graph = read_graph(out)
    kept = {k for _, _, k, inside in graph.edges(keys=True, data="in_circuit") if inside}
    on_paths = set()
    for path in graph.graph["paths"]:
        names = path.rsplit(":", 1)[0].split(" <- ")
        for receiver, sender in zip(names, names[1:]):
            on_paths.add(f"{sender.split('<')[0]}->{receiver}")
    assert on_paths and on_paths <= kept
    assert graph.graph["top_k"] is None and graph.graph["threshold"] is None
    assert len(kept) <= 3 * (2 * 2 + 1)  # at most n_paths new edges per step
    monkeypatch.setenv("COLUMNS", "400")  # a path to a line
    shown = run(*args, "--n-paths", 3, "--no-faithfulness")  # the summary lists them too
    for path in graph.graph["paths"]:
        assert path in shown.stdout
    # a helper's trial: the facts a run has none of were rows of "-"
    threshold = run(*args[:-2], "--no-faithfulness")
    assert "strongest paths" not in threshold.stdout and "fitted on" not in threshold.stdout
    assert "transcoders" in threshold.stdout


def test_a_metric_that_is_zero_on_the_clean_run_has_no_relative_change(tmp_path):
    """A tracr model's l2 is 0 on its clean prompts by its making: the table showed
    |change| / |original| as 121853023767.471 (a helper's trial); now null and '-'."""
    args = ["train-transcoders", "--model", "tracr-hist", "--steps", 5, "--batch-tokens", 64]
    result = run(*args, "--out", tmp_path / "t", "--json")
    assert result.exit_code == 0, result.output
    tracr = json.loads(result.stdout)["task_metric_replaced"]["tracr"]
    assert tracr["original"] == 0.0 and tracr["relative_change"] is None


def test_the_context_note_is_for_a_context_asked_for(tmp_path):
    # a trial: every run on a model of fewer than 128 positions noted the default --context
    common = ["train-transcoders", "--model", "planted-ioi", "--tasks", "none", "--steps", 1]
    common += ["--features", 8, "--layers", "0"]
    quiet = run(*common, "--out", tmp_path / "a")
    assert quiet.exit_code == 0, quiet.stderr
    assert "--context" not in quiet.stderr
    asked = run(*common, "--context", 128, "--out", tmp_path / "b")
    assert asked.exit_code == 0, asked.stderr
    assert "note: --context 128 is more than planted-ioi's context of 96" in asked.stderr


def test_max_tokens_counts_the_bos_of_each_row(tiny_model, corpus_file):
    # a trial: --max-tokens 600 gave a corpus of 607 tokens, a BOS a row on top
    assert tiny_model.bos_token_id is not None
    for max_tokens, context in ((600, 128), (300, 64), (129, 128)):
        corpus = tc.load_corpus(tiny_model, str(corpus_file), context, 0, max_tokens)
        assert max_tokens - context < corpus.n_tokens <= max_tokens


def test_a_batch_larger_than_the_corpus_repeats_its_tokens(tmp_path, tiny_model, corpus_file):
    """A trial: train-transcoders refused its default --batch-tokens 512 on a tracr model (a
    corpus of 48 tokens) where the built-in cache trains the same model with it; and a
    buffer gathered rows by their mean length: short rows gave batches short of
    --batch-tokens (10 tokens for 40 here)."""
    args = ["train-transcoders", "--model", "tracr-hist", "--steps", 2, "--tasks", "none"]
    result = run(*args, "--out", tmp_path / "t")
    assert result.exit_code == 0, result.output
    assert "note: --batch-tokens 512 is more than the corpus's" in result.stderr
    assert "each step's batch repeats them" in result.stderr
    real = torch.zeros(8, 32, dtype=torch.bool)  # one long row, seven of one token each
    real[:, 0] = real[0] = True
    tokens = torch.randint(tiny_model.d_vocab, (8, 32), generator=torch.Generator().manual_seed(0))
    corpus = tc.Corpus(tokens, real, "uneven rows")
    for batch_tokens in (corpus.n_tokens + 1, 3 * corpus.n_tokens, 7):
        settings = tc.TrainingSettings(n_features=8, batch_tokens=batch_tokens, buffer_tokens=8)
        generator = torch.Generator().manual_seed(0)
        buffer = training._ActivationBuffer(tiny_model, [0], corpus, settings, generator)
        for _ in range(5):
            x, y = buffer.next_batch()[0]
            assert len(x) == len(y) == batch_tokens


def test_a_loaded_model_is_not_refused_by_the_tasks_default_model(tiny_model):
    """discover(model, request) with no model named in the request asked the transcoder's
    refusal about the task's default model (docstring's attn-only-4l: "no transcoders
    known for model 'attn-only-4l'", benchmarks/transcoder.py on planted-docstring); the
    loaded model is the one checked."""
    request = DiscoveryRequest("docstring", "transcoder", n_prompts=4, faithfulness=False)
    with pytest.raises(CircuitxError, match="no transcoders known") as raised:
        discover(tiny_model, request)
    assert "attn-only-4l" not in str(raised.value)
    assert tiny_model.name in str(raised.value)
