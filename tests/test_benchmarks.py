"""The timing benchmarks' steps still run against the package: each script's ``run_step``
on a tiny model and two prompts (cdt.py's and sae.py's steps ran nothing for weeks after
an argument of ``method_step`` changed, and nobody ran them)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import pytest
from conftest import tiny_gpt2

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    """A benchmark script imported as a module (they import one another by file name)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return str(tiny_gpt2(tmp_path_factory.mktemp("bench") / "model", 2, 2, 32, seed=0))


def steps(name: str) -> list[str]:
    module = script(name)
    if name == "edge_methods":  # the whole discover run in its own process: too slow here
        return [s for s in (*module.STEPS, *module.EXTRA_STEPS) if s != "cli"]
    return list(module.STEPS)


@pytest.mark.parametrize(
    "name, step", [(name, step) for name in ("edge_methods", "cdt", "sae") for step in steps(name)]
)
def test_each_step_runs_and_reports_its_time(model_dir: str, name: str, step: str) -> None:
    args = argparse.Namespace(n_prompts=2, device="cpu", path_stages=1)
    result = script(name).run_step(step, model_dir, args)
    assert result["seconds"] > 0
    assert result["shape"][0] == 2  # the prompts it was given
