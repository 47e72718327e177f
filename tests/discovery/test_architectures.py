"""Every method on every architecture family, as a user runs it: a tiny random model of
each family saved with ``transformers`` (and an attention-only model in the legacy
TransformerLens format of ``attn-only-4l``), and ``circuitx discover`` with each method
either gives strict JSON or refuses in one line naming what it does not support."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
from conftest import GPT2_TOKENIZER, SHORT_TRAINING, assert_one_line_error, run

from circuitx import builtin
from circuitx.builtin.hf import (
    CAUSAL_LM_FAMILIES,
    save_causal_lm,
    save_tl_legacy_attn_only,
    word_level_tokenizer,
)
from circuitx.methods import METHODS, get_method
from circuitx.tasks import task_vocabulary


def refusal(family: str, method: str) -> str | None:
    """The one-line refusal expected of ``method`` on ``family``, or None if it runs."""
    if method == "transcoder" and family == "attn-only":
        return "has no MLPs for transcoders to replace"
    if method == "transcoder" and family == "gemma2":
        return "has norms after attention and MLP or soft-capping"
    if method == "transcoder":
        return "no transcoders known"  # none trained for this model
    return None


@pytest.fixture(scope="module", params=[*sorted(CAUSAL_LM_FAMILIES), "attn-only"])
def family_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    tokenizer = word_level_tokenizer(task_vocabulary())
    if request.param == "attn-only":
        save_tl_legacy_attn_only(directory, tokenizer, 2, 4, 32, seed=1)
    else:
        save_causal_lm(directory, request.param, tokenizer, 2, 4, 32, 1, initializer_range=0.2)
    return request.param, directory


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_or_refuses_in_one_line(family_dir, method):
    family, directory = family_dir
    result = run(
        "discover", "--task", "ioi", "--method", method, "--model", directory,
        "--reference", "none", "--n-prompts", "10", "--seed", "3", "--json",
        *(f"--{name.replace('_', '-')}={value}"
          for name, value in SHORT_TRAINING.get(method, {}).items()),
    )  # fmt: skip
    expected = refusal(family, method)
    if expected is not None:
        assert_one_line_error(result, expected)
        return
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == method and report["n_prompts"] == 10


def _saved_without_transcoders(family: str, directory: Path) -> Path:
    """A tiny model transcoders cannot take: a Gemma-2, or an attention-only one in
    TransformerLens's format."""
    tokenizer = word_level_tokenizer(task_vocabulary())
    if family == "attn-only":
        save_tl_legacy_attn_only(directory, tokenizer, 2, 4, 32, seed=1)
    else:
        save_causal_lm(directory, family, tokenizer, 2, 4, 32, 1, initializer_range=0.2)
    return directory


@pytest.mark.parametrize("family", ["gemma2", "attn-only"])
def test_transcoders_on_a_model_they_cannot_take_are_refused_before_it_loads(
    family, tmp_path, monkeypatch
):
    """Its config.json tells (the refusal came after loading the model: a minute and
    more for a real Gemma-2), with a directory of transcoders given too."""
    directory = _saved_without_transcoders(family, tmp_path / "model")

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(builtin, "load", never)
    result = run(
        "discover", "--task", "ioi", "--method", "transcoder", "--model", directory,
        "--transcoders", directory, "--json",
    )  # fmt: skip
    assert_one_line_error(result, refusal(family, "transcoder"))
    # a built-in model's or family's name is its own, whatever directory here has it (a
    # trial's); a directory that cannot load says so when loaded, not as transcoders' advice
    monkeypatch.chdir(tmp_path)
    refusal_of = get_method("transcoder").model_refusal
    for name in ("planted-ioi", "planted"):
        (tmp_path / name).symlink_to(directory)
        assert refusal_of({"transcoders": None}, name) is None
    for config in (None, {"model_type": "bert"}):
        other = tmp_path / f"other-{config is None}"
        other.mkdir()
        if config is not None:
            (other / "config.json").write_text(json.dumps(config))
        assert refusal_of({"transcoders": None}, str(other)) is None
    if family == "attn-only":  # TransformerLens's format without its weights: not a model
        (tmp_path / "no-weights").mkdir()
        shutil.copy(directory / "config.json", tmp_path / "no-weights")
        assert refusal_of({"transcoders": None}, str(tmp_path / "no-weights")) is None


@pytest.mark.parametrize("family", ["gemma2", "attn-only"])
def test_transcoders_on_a_hub_model_they_cannot_take_are_refused_before_it_loads(
    family, tmp_path, monkeypatch
):
    """A hub name is read as a directory is: its config.json from the cache, else the hub's
    listing of the model (a hub Gemma-2 given --transcoders loaded first, minutes)."""
    import huggingface_hub

    directory = _saved_without_transcoders(family, tmp_path / "cached")
    config = json.loads((directory / "config.json").read_text())
    cached = {"value": str(directory / "config.json")}
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: cached["value"])
    listed = types.SimpleNamespace(config={"model_type": config.get("model_type")})

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", offline)
    refusal_of = get_method("transcoder").model_refusal
    given = {"transcoders": str(tmp_path)}
    assert refusal(family, "transcoder") in refusal_of(given, "someone/model")
    cached["value"] = None  # neither cached nor reachable: the loader says so
    assert refusal_of(given, "someone/model") is None
    if family == "gemma2":  # reachable: the hub's listing of the model gives its kind
        monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: listed)
        assert refusal(family, "transcoder") in refusal_of(given, "someone/model")


@pytest.mark.slow
def test_the_docstring_task_runs_on_a_legacy_attention_only_model(tmp_path):
    """The docstring paper's model shape (4 layers of 8 heads, no MLPs), in its format,
    scored against ACDC's docstring graph (found by EAP: ACDC trying each of the 1,281
    edges took 35 s)."""
    save_tl_legacy_attn_only(tmp_path, word_level_tokenizer(task_vocabulary()), 4, 8, 64, 2)
    result = run(
        "discover", "--task", "docstring", "--method", "eap", "--model", tmp_path,
        "--reference", "docstring", "--n-prompts", "10", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference"] == "docstring"
    assert 0.0 <= report["metrics"]["edge_auc"] <= 1.0
    # 32 heads and no MLP; edges: q, k and v of each layer's 8 heads read the input and
    # every earlier head (24 * (1 + 9 + 17 + 25)), the logits read all 33 senders
    assert (report["n_nodes"], report["n_edges"]) == (32, 24 * 52 + 33)


def test_the_usage_pages_own_model_recipe_runs(tmp_path, monkeypatch):
    """docs/usage.md's recipe for bringing your own model, as written (a helper's trial
    found none: GPT2TokenizerFast with vocab_file= builds an empty tokenizer)."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "usage.md").read_text()
    section = page.split("### Bringing your own model", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(code.replace("../shared/tokenizers/gpt2", str(GPT2_TOKENIZER)), {})
    command = section.split("    circuitx ", 1)[1].splitlines()[0].split()
    assert command[:2] == ["discover", "--task"]
    result = run(*command, "--n-prompts", 3, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["n_nodes"] == 2 * 4 + 2  # 2 layers of 4 heads and an MLP
    assert (tmp_path / "mine.graphml").is_file()
