"""``circuitx train-ground-truth``: train a model to implement a task's high-level causal
model (SIIT) and save it, with its ground truth, as a model directory."""

from __future__ import annotations

import dataclasses
import time

import click

from circuitx.builtin import build_once
from circuitx.builtin.trained import (
    TRAINED,
    check_max_steps,
    judged_on,
    scores_line,
    train_ground_truth,
)
from circuitx.cli.common import json_option, note, print_json, seed_option
from circuitx.files import check_new_directory
from circuitx.models import quiet_loaders
from circuitx.progress import progress_bar

PREFIX = "trained-"


MAX_STEPS = 1_000_000


@click.command("train-ground-truth")
@click.option(
    "--task",
    "target",
    required=True,
    type=click.Choice([name.removeprefix(PREFIX) for name in TRAINED]),
    help="What to implement: the high-level model of built-in trained-TASK (the "
    "tracr-* ones are discovered with --task tracr --model trained-tracr-*).",
)
@click.option("--out", required=True, type=click.Path(), help="New model directory.")
@seed_option
@click.option(
    "--max-steps",
    type=click.IntRange(1, MAX_STEPS),
    help="Training steps at most (it stops earlier once every held-out score reaches the "
    "threshold); the learning rate decays over them, so another value trains another "
    "model [default: the built-in's]; more than the task's circuit-first steps.",
)
@json_option
def train_ground_truth_command(target, out, seed, max_steps, as_json) -> None:
    """Train a GPT-2 model with strict interchange intervention training to implement
    TASK's high-level causal model in chosen heads and MLPs (the built-in trained-TASK is
    the one seed 0 gives), check it on held-out pairs, and save it with its ground truth.

    A model whose held-out accuracy, IIA or strict-IIA (each node outside the alignment
    patched alone, and all at once) is under 0.95 is not saved. An
    interrupted run resumes from its last evaluation when run again with the same --out.
    Training runs on one thread, so that a seed gives one model on a CPU.
    """
    directory = check_new_directory(out)
    spec = TRAINED[PREFIX + target]
    settings = dataclasses.replace(
        spec.settings, seed=seed, max_steps=max_steps or spec.settings.max_steps
    )
    check_max_steps(spec.name, settings.max_steps)
    # beside the new directory: an interrupted run resumes from it when run again
    checkpoint = directory.parent / f".{directory.name}.siit-checkpoint.pt"
    start = time.perf_counter()
    results = []
    try:
        # the time left is to the last step: training stops sooner once every score is met
        label = f"SIIT {spec.name} (at most {settings.max_steps} steps)"
        with progress_bar(label, settings.max_steps) as advance, quiet_loaders():
            build_once(
                directory,
                lambda staging: results.append(
                    train_ground_truth(spec.name, staging, settings, advance, checkpoint)
                ),
                option="--out",
            )
    except BaseException:  # a trial's Ctrl-C was told "interrupted" alone
        if checkpoint.is_file():
            note(f"the training so far is kept in {checkpoint}: the same command resumes it")
        raise
    trained = results[0]
    summary = {
        "directory": str(directory),
        "model": spec.name,
        "steps": trained.history.steps[-1],
        "seconds": round(time.perf_counter() - start, 1),
        **trained.evaluation.summary(),
        **judged_on(trained),
    }
    if as_json:
        print_json(summary)
        return
    click.echo(f"{spec.name} -> {directory} ({summary['steps']} steps, {summary['seconds']} s)")
    click.echo(scores_line(trained))
