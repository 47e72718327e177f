"""Planted-circuit models: the certificate of every model, discovery against the ground
truth, deterministic builds, and the CLI paths that use them."""

import json

import pytest
import torch
from conftest import assert_one_line_error, find, run
from safetensors.torch import load_file

from circuitx.builtin import (
    BUILTIN_MODELS,
    ground_truth,
    model_dir,
    resolve,
    resolve_all,
    torch_threads,
)
from circuitx.builtin import load as load_model
from circuitx.builtin.planted import PLANTED
from circuitx.certificate import certify
from circuitx.discovery import DiscoveryRequest, reference_for_model, report
from circuitx.errors import CircuitxError
from circuitx.scoring import overlap
from circuitx.tasks import TASKS


def discover_cli(task, model, *args):
    """``circuitx discover`` with activation patching on ``model``."""
    return run(
        "discover", "--task", task, "--method", "activation-patching", "--model", model, *args
    )


CASES = [(name, task) for name, spec in PLANTED.items() for task in spec.circuits()]
CLEAN_TASKS = list(dict.fromkeys(spec.task for spec in PLANTED.values() if not spec.hard))


@pytest.fixture(scope="module")
def models():
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_model(name)
        return loaded[name]

    return get


@pytest.mark.parametrize("name,task", CASES)
def test_certificate(models, name, task):
    cert = certify(models(name), task, ground_truth(name, task), n_prompts=20)
    assert cert.clean_accuracy >= 0.95
    assert cert.clean_metric > 0.5
    assert cert.corrupted_metric < 0.1 * cert.clean_metric  # at or below chance
    assert cert.complement_faithfulness >= 0.95
    assert cert.circuit_patched <= 0.05
    assert cert.max_outside_effect < 0.01
    # every circuit node matters, ten times more than any node outside it (the smallest:
    # the two parallel layer-1 heads of planted-greater-than-hard, 0.097 each)
    assert cert.min_inside_effect >= 0.05
    assert bool(cert.backups) == PLANTED[name].hard
    # distractors are active: comparable output norms, larger in the hard variants
    assert cert.norm_ratio > (1.0 if PLANTED[name].hard else 0.3)


def test_backup_heads_repair_the_behaviour(models):
    """Patching the main name mover hurts less when the backup can take over."""
    clean = certify(models("planted-ioi"), "ioi", ground_truth("planted-ioi", "ioi"), 20)
    hard = certify(models("planted-ioi-hard"), "ioi", ground_truth("planted-ioi-hard", "ioi"), 20)
    assert hard.effects["a3.h0"] < 0.5 * clean.effects["a3.h0"]
    assert abs(hard.effects["a4.h1"]) < 0.02  # the backup alone: no effect (documented)


@pytest.mark.parametrize("task", CLEAN_TASKS)
def test_activation_patching_finds_the_planted_circuit(models, task):
    name = resolve("planted", task)
    graph = find(models(name), task, "activation-patching", n_prompts=20, faithfulness=False)
    summary = report(graph, ground_truth(name, task), "truth")
    assert summary["metrics"]["node_auc"] == 1.0
    assert summary["metrics"]["node_precision"] == summary["metrics"]["node_recall"] == 1.0


@pytest.mark.parametrize("method", ["activation-patching", "eap-ig", "acdc", "cdt"])
def test_methods_find_the_circuit_planted_in_a_llama_model(models, method):
    graph = find(models("planted-ioi-llama"), "ioi", method, n_prompts=10, faithfulness=False)
    summary = report(graph, ground_truth("planted-ioi-llama", "ioi"), "truth")
    assert summary["metrics"]["node_auc"] == 1.0


def test_the_planted_llama_model_is_a_llama_model_whose_positions_are_rotary(models):
    config = json.loads((model_dir("planted-ioi-llama") / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    model = models("planted-ioi-llama")
    data = TASKS["ioi"].make_data(model, 10, 0)
    _, cache = model.bridge.run_with_cache(
        data.clean, names_filter=lambda name: name == "blocks.0.attn.hook_pattern"
    )
    pattern = cache["blocks.0.attn.hook_pattern"]  # [prompt, head, query, key]
    queries = torch.arange(1, pattern.shape[-1])
    # with no position embedding, rotary alone points the previous-token head one back
    # and keeps the duplicate-token head off its own position
    assert pattern[:, 1, queries, queries - 1].min() > 0.99
    assert pattern[:, 3].diagonal(dim1=-2, dim2=-1)[:, 1:].max() < 0.01


def test_planted_names_the_gpt2_model_and_its_leaderboard_takes_the_llama_one_too():
    assert resolve("planted", "ioi") == "planted-ioi"
    assert resolve_all("planted", "ioi") == ("planted-ioi", "planted-ioi-llama")


def test_colored_objects_reuses_the_ioi_heads():
    truths = PLANTED["planted-colored-objects"].circuits()
    heads = overlap(truths["colored-objects"], truths["ioi"])["heads"]
    assert (heads["a"], heads["b"], heads["shared"]) == (4, 6, 3)


def test_building_twice_gives_identical_weights(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        PLANTED["planted-docstring-hard"].save(directory)
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].equal(b[k]) for k in a)
    assert (first / "circuit.json").read_text() == (second / "circuit.json").read_text()


def test_the_process_thread_count_does_not_change_a_build(tmp_path):
    # planted-docstring's fitted weights differed between a 1- and a 2-thread process
    # before builds ran on a fixed thread count
    builds = []
    for threads in (1, 2):
        with torch_threads(threads):
            directory = model_dir("planted-docstring", tmp_path / str(threads))
        builds.append(load_file(directory / "model.safetensors"))
    assert all(builds[0][k].equal(builds[1][k]) for k in builds[0])


@pytest.mark.parametrize("task", CLEAN_TASKS)
def test_cli_discover_on_planted(task):
    result = discover_cli(task, "planted", "--n-prompts", "10", "--no-faithfulness", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == f"planted-{task}"
    assert summary["reference"] == f"planted-{task} ground truth"
    assert summary["metrics"]["node_auc"] == 1.0


def test_cli_score_finds_the_planted_ground_truth(tmp_path):
    out = tmp_path / "g.json"
    result = discover_cli("docstring", "planted-docstring", "--n-prompts", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    scored = run("score", str(out), "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["reference"] == "planted-docstring ground truth"


def test_reference_planted_needs_a_planted_model():
    result = discover_cli("ioi", "planted-docstring", "--reference", "planted")
    assert_one_line_error(result, "needs a planted model with a circuit for ioi")


def test_models_lists_planted_models_with_task_and_circuit():
    result = run("models", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["planted-greater-than"]["task"] == "greater-than"
    assert rows["planted-greater-than"]["circuits"]["greater-than"]["mlps"] == ["m0", "m2"]
    assert set(rows["planted-colored-objects"]["circuits"]) == {"ioi", "colored-objects"}
    # a family says which model discover takes and what the leaderboard adds
    assert (
        "ioi -> planted-ioi (the leaderboard adds planted-ioi-llama)"
        in (rows["planted"]["description"])
    )
    assert "tracr -> one of tracr-reverse," in rows["tracr"]["description"]
    assert "1 head, " in rows["trained-tracr-proportion"]["circuit"]


def test_cache_dir_flag(tmp_path):
    """The model is built into --cache-dir, saying so on stderr the first time only."""
    args = ("--n-prompts", "3", "--cache-dir", str(tmp_path / "c"), "--json")
    result = discover_cli("docstring", "planted", *args)
    assert result.exit_code == 0, result.output
    identity = BUILTIN_MODELS["planted-docstring"].identity
    target = tmp_path / "c" / "models" / f"planted-docstring-{identity}"
    assert (target / "circuit.json").is_file()
    built = f"building planted-docstring (first use; cached in {target})"
    assert built in result.stderr
    again = discover_cli("docstring", "planted", *args)
    assert again.exit_code == 0 and "building" not in again.stderr


def test_an_empty_cache_dir_argument_is_refused(tmp_path, monkeypatch):
    """A library caller's empty cache_dir built the model in the working directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CircuitxError, match="the cache directory is empty"):
        load_model("planted-ioi", cache_dir="")
    assert list(tmp_path.iterdir()) == []


def test_a_cache_dir_argument_reaches_every_builder(tmp_path, monkeypatch):
    """A library caller's cache_dir is where the model and its ground truth are built; the
    environment's default cache is not touched."""
    default, chosen = tmp_path / "default", tmp_path / "chosen"
    monkeypatch.setenv("CIRCUITX_CACHE_DIR", str(default))
    request = DiscoveryRequest(
        "greater-than", "eap", "planted", n_prompts=3, cache_dir=str(chosen)
    ).validated()
    model = load_model(request.model, cache_dir=request.cache_dir)
    reference, label, _ = reference_for_model(model, request)
    assert label == "planted-greater-than ground truth" and reference is not None
    built = [p.name for p in (chosen / "models").iterdir()]
    assert built == [f"planted-greater-than-{BUILTIN_MODELS['planted-greater-than'].identity}"]
    assert not default.exists()
