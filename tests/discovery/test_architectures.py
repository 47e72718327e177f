"""Every method on every architecture family, as a user runs it: a tiny random model of
each family saved with ``transformers``, and ``circuitx discover`` with each method
either gives strict JSON or refuses in one line naming what it does not support."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run

from circuitx.builtin.hf import CAUSAL_LM_FAMILIES, save_causal_lm, word_level_tokenizer
from circuitx.methods import METHODS
from circuitx.tasks import task_vocabulary

NOT_GPT2 = "is not GPT-2-style"  # CD-T and transcoders compute GPT-2's forward pass
POST_NORM = "normalises its heads' summed output"  # Gemma-2: no edge out of one head
EDGE_METHODS = {name for name, method in METHODS.items() if method.granularity == "edge"}


def refusal(family: str, method: str) -> str | None:
    """The one-line refusal expected of ``method`` on ``family``, or None if it runs."""
    if method in ("cdt", "transcoder") and family != "gpt2":
        return NOT_GPT2
    if method == "transcoder":
        return "no transcoders known"  # none trained for this model
    if method in EDGE_METHODS and family == "gemma2":
        return POST_NORM
    return None


@pytest.fixture(scope="module", params=sorted(CAUSAL_LM_FAMILIES))
def family_dir(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    tokenizer = word_level_tokenizer(task_vocabulary())
    save_causal_lm(directory, request.param, tokenizer, 2, 4, 32, seed=1, initializer_range=0.2)
    return request.param, directory


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_or_refuses_in_one_line(family_dir, method):
    family, directory = family_dir
    result = run(
        "discover", "--task", "ioi", "--method", method, "--model", directory,
        "--reference", "none", "--n-prompts", "10", "--seed", "3", "--json",
    )  # fmt: skip
    expected = refusal(family, method)
    if expected is not None:
        assert_one_line_error(result, expected)
        return
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == method and report["n_prompts"] == 10
