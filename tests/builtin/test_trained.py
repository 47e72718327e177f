"""The trained family: the shipped weights implement their high-level models on held-out
pairs, the tracr high-level model is RASP's own evaluation, and train-ground-truth refuses
a model that falls short."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import torch
from conftest import assert_one_line_error, run

from circuitx.builtin import BUILTIN_MODELS, FAMILIES, ground_truth, load, model_dir
from circuitx.builtin.ground_truth import CIRCUIT_FILE, write_ground_truth
from circuitx.builtin.trained import (
    EVAL_PAIRS,
    THRESHOLD,
    TRAINED,
    TRAINING_FILE,
    train_ground_truth,
)
from circuitx.builtin.trained.siit import Intervenable, evaluate, evaluation_pairs
from circuitx.graph import component_nodes
from circuitx.patching import PatchingEngine
from circuitx.tasks import get_task

pytest.importorskip("tracr", reason="tracr is in the test extra; this install lacks it")


@pytest.fixture(scope="module", params=sorted(TRAINED))
def shipped(request):
    from transformers import GPT2LMHeadModel

    name = request.param
    directory = model_dir(name)
    target = TRAINED[name].target(name)
    model = GPT2LMHeadModel.from_pretrained(directory).eval()
    return name, directory, target, Intervenable(model)


@pytest.mark.slow
def test_shipped_weights_implement_the_high_level_model(shipped):
    name, directory, target, ll = shipped
    record = json.loads((directory / TRAINING_FILE).read_text())
    judged = evaluation_pairs(target.hl, TRAINED[name].settings, EVAL_PAIRS)
    scores = evaluate(ll, target.hl, judged)
    assert scores.worst >= THRESHOLD
    measured = scores.summary()
    for key, value in measured.items():  # what `circuitx models` reports is this
        assert record[key] == pytest.approx(value, abs=1e-9)
    every_pair = len(judged) == len(target.hl.pairs())
    assert record.get("every_pair_judged", False) == every_pair
    assert BUILTIN_MODELS[name].scores == {
        **{k: record[k] for k in measured},
        "every_pair": float(every_pair),
    }


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_shipped_models_answer_their_tasks_own_prompts(name):
    # the prompts discovery runs on, drawn apart from the table the model was trained on
    model, task = load(name), get_task(TRAINED[name].task)
    data = task.make_data(model, 64, seed=11)
    engine = PatchingEngine(model, task, data, task.default_metric)
    assert task.accuracy(engine.clean_final, data) >= THRESHOLD


def test_the_ground_truth_is_the_aligned_components(shipped):
    name, _, target, ll = shipped
    task = TRAINED[name].task
    truth = ground_truth(name, task)
    in_circuit = {n for n in component_nodes(truth) if truth.nodes[n]["in_circuit"]}
    assert in_circuit == target.hl.aligned_nodes()
    assert truth.graph["n_heads"] == ll.n_heads == 4
    assert name in FAMILIES["trained"].models_for(task)
    listed = BUILTIN_MODELS[name].circuits()[task]  # what `circuitx models` shows, unbuilt
    assert {n for n in component_nodes(listed) if listed.nodes[n]["in_circuit"]} == in_circuit


def test_the_tracr_high_level_model_is_rasps_evaluation():
    from tracr.rasp import rasp

    target = TRAINED["trained-tracr-reverse"].target("trained-tracr-reverse")
    hl = target.hl
    rows = torch.arange(len(hl.inputs))
    want = [[v - 1 for v in reversed(row)] for row in hl.rows]  # output classes are 1, 2, 3
    assert hl.outputs(rows).tolist() == want
    # setting ``reverse`` (the head a3.h0 computes) to its value on the source gives the
    # source's output; RASP labels carry a process-wide counter, so find it by its head
    (reverse,) = [v for v, nodes in hl.alignment.items() if nodes == ("a3.h0",)]
    assert reverse == hl._program.label
    source = rows.roll(1)
    assert hl.outputs(rows, source, reverse).tolist() == [want[i] for i in source.tolist()]
    assert rasp.evaluate(hl._program, list(hl.rows[0])) == [3, 2, 1]


def test_a_model_short_of_the_threshold_is_not_written(tmp_path):
    out = tmp_path / "short"
    result = run(
        "train-ground-truth", "--task", "tracr-reverse", "--out", str(out), "--max-steps", "1",
    )  # fmt: skip
    assert_one_line_error(
        result,
        "trained-tracr-reverse (seed 0, 1 steps) is not a ground truth, so nothing was "
        "written: accuracy",
    )
    assert list(tmp_path.iterdir()) == []  # no model, no staging directory, no checkpoint
    assert result.exit_code == 1  # a run that failed its check, not bad input (2)


def test_an_existing_directory_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    result = run("train-ground-truth", "--task", "tracr-reverse", "--out", str(tmp_path / "x"))
    assert_one_line_error(result, "exists; choose a new directory")
    # a trial's: 100 steps of greater-than's 800 circuit-first ones saved the components
    # outside the circuit at their random weights, and passed every check
    result = run(
        "train-ground-truth", "--task", "greater-than", "--out", str(tmp_path / "y"),
        "--max-steps", 800,
    )  # fmt: skip
    assert_one_line_error(
        result, "--max-steps 800 ends inside trained-greater-than's circuit-first stage"
    )
    assert not (tmp_path / "y").exists()


def test_the_checkpoint_stays_until_the_model_is_saved(tmp_path, monkeypatch):
    """A trial's: the checkpoint was deleted before the final held-out check (8-23 s), so a
    Ctrl-C there lost the whole run."""
    import circuitx.builtin.trained as trained_module

    checkpoint = tmp_path / "c.pt"

    def interrupted(*args, **kwargs):
        assert checkpoint.is_file()  # training saved it at its evaluations
        raise KeyboardInterrupt

    monkeypatch.setattr(trained_module, "evaluate", interrupted)
    settings = dataclasses.replace(TRAINED["trained-tracr-reverse"].settings, max_steps=2)
    with pytest.raises(KeyboardInterrupt):
        train_ground_truth("trained-tracr-reverse", tmp_path / "m", settings, checkpoint=checkpoint)
    assert checkpoint.is_file()


def test_ioi_discovery_runs_on_the_trained_model_against_its_ground_truth():
    result = run(
        "discover", "--task", "ioi", "--method", "eap-ig", "--model", "trained",
        "--n-prompts", "40", "--seed", "7", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "trained-ioi"
    assert report["reference"] == "trained-ioi ground truth"
    assert report["clean_accuracy"] >= THRESHOLD  # the task's own prompts, not the table's
    assert report["metrics"]["node_auc"] > 0.5


def test_sigterm_stops_training_and_leaves_only_the_checkpoint(tmp_path):
    """kill (SIGTERM) unwinds as Ctrl-C does: the staging directory beside --out goes, the
    checkpoint a rerun resumes from may stay, and the exit says so in one line."""
    out = tmp_path / "gt"
    command = [sys.executable, "-m", "circuitx", "train-ground-truth", "--task", "ioi",
               "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if p.is_dir()] and time.monotonic() < deadline:
        time.sleep(0.2)  # until the staging directory exists: training has started
    assert process.poll() is None, process.communicate()
    process.terminate()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143
    assert stderr.strip().splitlines()[-1] == "error: terminated"
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".siit-checkpoint.pt")] == []
    kept = any(tmp_path.iterdir())  # a trial's Ctrl-C was not told of a checkpoint it left
    assert kept == ("the same command resumes it" in stderr)


def test_the_shipped_ground_truth_is_what_a_fresh_build_writes(shipped, tmp_path):
    """circuit.json as train-ground-truth writes it today: the same circuits, roles and
    metadata (the tracr models' ACDC lists had shipped with "acdc" for every role)."""
    name, directory, target, _ = shipped
    write_ground_truth(tmp_path, target.circuits)
    fresh = json.loads((tmp_path / CIRCUIT_FILE).read_text())
    assert json.loads((directory / CIRCUIT_FILE).read_text()) == fresh
