"""DiscoveryRequest: every setting checked and every default filled in before a model loads."""

import json

import numpy as np
import pytest

from circuitx.builtin import BUILTIN_MODELS
from circuitx.discovery import DiscoveryRequest
from circuitx.errors import CircuitxError
from circuitx.methods import METHODS
from circuitx.tasks import TASKS


def test_validation_fills_every_default():
    request = DiscoveryRequest("colored-objects", "sae", "planted").validated()
    assert request.model == "planted-colored-objects"
    assert request.corruption == TASKS["colored-objects"].negative_corruption == "absent-object"
    assert request.metric == TASKS["colored-objects"].default_metric
    assert request.options == {o.name: o.default for o in METHODS["sae"].options}
    assert request.validated() == request  # validating twice changes nothing
    plain = DiscoveryRequest("ioi", "sae").validated()
    assert plain.corruption == TASKS["ioi"].corruptions[0] and plain.model == "gpt2"


def test_config_is_json_and_names_the_model_identity():
    config = DiscoveryRequest("greater-than", "acdc", "planted", options={"tau": 0.1}).config()
    assert json.loads(json.dumps(config)) == config
    identity = BUILTIN_MODELS["planted-greater-than"].identity
    assert config["model_identity"] == f"builtin:planted-greater-than-{identity}"
    assert config["options"] == {"tau": 0.1, "input_tests": "on", "tau_sign": "absolute"}
    assert "cache_dir" not in config


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"task": "nope"}, "unknown task 'nope'"),
        ({"method": "magic"}, "unknown method 'magic'"),
        ({"metric": "accuracy"}, "task ioi has no metric 'accuracy'"),
        ({"corruption": "shuffle"}, "task ioi has no corruption 'shuffle'"),
        ({"n_prompts": 0}, "--n-prompts must be at least 1"),
        ({"n_prompts": 10**9}, r"would take about 954 GiB, over the memory budget of .* \(the def"),
        ({"n_prompts": 2049, "max_memory": 2 * 1024**2}, r"budget of 2 MiB \(--max-memory\)"),
        ({"threshold": 0.1, "top_k": 3}, "choose --threshold or --top-k, not both"),
        ({"top_k": 0}, "--top-k must be at least 1"),
        ({"ablation": "resample"}, "unknown ablation 'resample'"),
        ({"dtype": "float8"}, "unknown dtype 'float8'"),
        ({"options": {"tau": -1.0}}, "--tau must be at least 0"),
        ({"options": {"stages": 2}}, "--stages applies to path-patching, not acdc"),
        ({"reference": "ioi:nobody"}, "unknown reference 'ioi:nobody'"),
        ({"reference": "missing.graphml"}, "graph file not found"),
        ({"model": "planted-hard", "task": "ioi"}, None),
        (  # an audit's: it ran, its path ending at the corrupted run, not the ablated one
            {"method": "eap-ig", "ablation": "mean"},
            "--ablation mean: eap-ig's --ig-mode inputs moves the embeddings between",
        ),
        (
            {"method": "eap-ig", "ablation": "zero", "options": {"ig_mode": "clean-corrupted"}},
            "--ablation zero: eap-ig's --ig-mode clean-corrupted moves",
        ),
    ],
)
def test_each_bad_setting_is_one_line(settings, message):
    request = DiscoveryRequest(**{"task": "ioi", "method": "acdc", **settings})
    if message is None:
        assert request.validated().model == "planted-ioi-hard"
        return
    with pytest.raises(CircuitxError, match=message) as caught:
        request.validated()
    assert "\n" not in str(caught.value)


def test_numpy_integers_become_python_integers():
    """A notebook's numpy integers are whole numbers too; the request holds them as ints
    (random.Random refuses a numpy seed, and JSON a numpy value)."""
    request = DiscoveryRequest(
        "ioi", "eap", "planted", n_prompts=np.int64(5), seed=np.int32(1), top_k=np.int64(3)
    ).validated()
    values = (request.n_prompts, request.seed, request.top_k)
    assert values == (5, 1, 3) and all(type(value) is int for value in values)


def test_a_method_that_needs_negatives_names_the_tasks_that_have_them(tmp_path):
    """A helper's trial: sae on a task file was refused without saying where it runs."""
    pairs = tmp_path / "pairs.jsonl"
    row = {"clean": "When Mary and John went, John gave to", "answer": " Mary", "wrong": " John"}
    pairs.write_text(json.dumps({**row, "corrupted": "When Mary and John went, Mary gave to"}))
    with pytest.raises(
        CircuitxError, match="a task file cannot name such\\); the tasks with them: ioi"
    ):
        DiscoveryRequest(str(pairs), "sae", "planted-ioi").validated()
    with pytest.raises(
        CircuitxError, match="valid inputs too\\); the tasks with them: ioi, greater"
    ):
        DiscoveryRequest("tracr", "sae", "tracr-reverse").validated()
