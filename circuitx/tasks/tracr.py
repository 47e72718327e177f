"""tracr: a compiled RASP program's output at every position (ACDC's tracr tasks).

The task works on any tracr model (``circuitx build-tracr`` or a built-in ``tracr-*``): it
reads the program's description from the model directory's ``tracr.json``. Clean inputs
are ``length`` tokens after BOS: every permutation of the vocabulary or every sequence
over it (as the model's ``inputs`` says), all of them when ``--n-prompts`` allows, else
a seeded sample. The corrupted batch is the clean batch reordered with no prompt in its
own place (ACDC's corruption). The metric reads every position after BOS:

- ``l2`` (default; ACDC's for both of its tracr tasks): minus the mean squared difference
  of the output logits from the clean run's (a numerical output has one logit, its value);
- ``kl`` and ``logit-diff`` (categorical outputs): over the output values' logits, the
  answer being the clean run's output.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.tasks import base as _tasks

if TYPE_CHECKING:
    from circuitx.models import Model

PROGRAM_FILE = "tracr.json"
INPUTS = ("permutations", "sequences")
NUMERIC_TOLERANCE = 0.01  # a numerical output within this of the clean one is correct


@dataclass(frozen=True)
class TracrProgram:
    """A compiled program as the task needs it (a tracr model directory's ``tracr.json``)."""

    name: str
    vocab: list[Any]  # input values, in token-id order
    max_seq_len: int
    length: int  # input tokens per prompt (after BOS)
    bos: str
    pad: str
    numerical: bool
    output_values: list[Any]  # categorical output values (empty when numerical)
    output_tokens: list[int]  # their token ids (numerical: the one value token)
    inputs: str  # how inputs are drawn: "permutations" or "sequences"

    def write(self, directory: Path) -> None:
        (directory / PROGRAM_FILE).write_text(json.dumps(asdict(self), indent=1))


def read_program(directory: str | Path) -> TracrProgram | None:
    """The program a tracr model directory describes, or None for any other directory."""
    path = Path(directory) / PROGRAM_FILE
    if not path.is_file():
        return None
    try:
        return TracrProgram(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:
        raise CircuitxError(f"cannot read {path}: {error}") from None


def all_inputs(program: TracrProgram) -> list[tuple[Any, ...]]:
    """Every clean input of ``program``, in a fixed order."""
    if program.inputs == "permutations":
        return list(itertools.permutations(program.vocab, program.length))
    return list(itertools.product(program.vocab, repeat=program.length))


def input_count(program: TracrProgram) -> int:
    """How many clean inputs ``program`` has: len(:func:`all_inputs`), without listing them."""
    n = len(program.vocab)
    if program.inputs == "permutations":
        return math.perm(n, program.length)
    return n**program.length


def input_at(program: TracrProgram, index: int) -> tuple[Any, ...]:
    """``all_inputs(program)[index]``, without listing the others (itertools' order: the
    last position changes fastest)."""
    pool, row = list(program.vocab), []
    for position in range(program.length):
        if program.inputs == "permutations":
            after = math.perm(len(pool) - 1, program.length - position - 1)
            choice, index = divmod(index, after)
            row.append(pool.pop(choice))
        else:
            after = len(pool) ** (program.length - position - 1)
            choice, index = divmod(index, after)
            row.append(pool[choice])
    return tuple(row)


def sampled_inputs(program: TracrProgram, n_prompts: int, rng: random.Random) -> list[tuple]:
    """Every clean input where there are at most ``n_prompts``, else ``n_prompts`` of them
    drawn by ``rng`` (the draw of ``rng.sample`` over the whole list, which is never made:
    11 tokens at 11 positions are 2.9e11 inputs)."""
    count = input_count(program)
    if n_prompts >= count:
        return all_inputs(program)
    if count <= sys.maxsize:
        chosen = rng.sample(range(count), n_prompts)
    else:  # past what range's len takes: distinct indices drawn one by one
        drawn: dict[int, None] = {}
        while len(drawn) < n_prompts:
            drawn[rng.randrange(count)] = None
        chosen = list(drawn)
    return [input_at(program, index) for index in chosen]


def read_outputs(
    model: "Model", program: TracrProgram, inputs: list[tuple[Any, ...]]
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    """``inputs`` as the tracr task reads them: their prompts (BOS first), token ids
    [n, 1 + length], readout positions [n, length] (every one after BOS) and the model's
    logits of the program's output tokens there [n, length, k]."""
    prompts = [" ".join(map(str, [program.bos, *row])) for row in inputs]
    tokens = torch.tensor([model.encode(prompt) for prompt in prompts])
    if tokens.shape[1] != program.length + 1:
        raise CircuitxError(f"the tokenizer of {model.name!r} does not match its tracr.json")
    readout = torch.arange(1, program.length + 1).repeat(len(inputs), 1)
    outputs = torch.tensor(program.output_tokens, device=model.device)
    return prompts, tokens, readout, model.run(tokens, positions=readout)[..., outputs]


def derangement(n: int, rng: random.Random) -> list[int]:
    """A random order of ``range(n)`` that moves every item (n >= 2)."""
    while True:
        order = list(range(n))
        rng.shuffle(order)
        if all(i != j for i, j in enumerate(order)):
            return order


class TracrTask(_tasks.Task):
    name = "tracr"
    title = "tracr program (every position)"
    default_model = "tracr-reverse"
    paper_model = "tracr-reverse"
    metrics = ("l2", "kl", "logit-diff")
    corruptions = ("shuffle",)
    has_negative_prompts = False  # a shuffled batch holds valid inputs too
    answers_are_the_models = True  # the clean run's outputs
    model_family = "tracr"  # tracr models (compiled or trained), or a directory with tracr.json
    reference_variants = {
        "": "the model's ground truth: ACDC's edge list on tracr-reverse and "
        "tracr-proportion (what the ACDC paper scores against), else the weights' circuit",
        "weights": "the circuit read from the compiled weights",
        "acdc": "ACDC's edge list (tracr-reverse and tracr-proportion)",
    }

    def vocabulary(self) -> list[str]:
        return []  # its tokens come with each tracr model

    def check_model(self, model: "Model") -> None:
        self.program(model)

    def program(self, model: "Model") -> TracrProgram:
        program = read_program(model.source)
        if program is None:
            raise CircuitxError(
                "task tracr needs a tracr model (tracr-reverse, tracr-proportion, tracr-sort, "
                "tracr-hist, trained-tracr-reverse, trained-tracr-proportion, or a directory "
                f"from circuitx build-tracr or train-ground-truth); {model.name!r} is not one"
            )
        return program

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> _tasks.TaskData:
        program = self.program(model)
        rng = random.Random(seed)
        inputs = sampled_inputs(program, n_prompts, rng)
        if len(inputs) < 2:
            raise CircuitxError("task tracr needs at least 2 prompts to shuffle")
        clean_prompts, clean, readout, read = read_outputs(model, program, inputs)
        order = derangement(len(inputs), rng)
        corrupted = clean[order]
        n, length = clean.shape[0], program.length
        outputs = torch.tensor(program.output_tokens)
        clean_outputs = read.flatten(0, 1)
        if program.numerical:
            answer = outputs.repeat(n * length)
            wrong = answer
        else:
            best = clean_outputs.argmax(-1).cpu()
            answer = outputs[best]
            others = [[t for t in program.output_tokens if t != a] for a in answer.tolist()]
            wrong = torch.tensor(others) if others[0] else answer
        return _tasks.TaskData(
            clean=clean,
            corrupted=corrupted,
            positions={"END": torch.full((n,), length)},
            answer=answer,
            wrong=wrong,
            clean_prompts=clean_prompts,
            corrupted_prompts=[clean_prompts[i] for i in order],
            extra={
                "output_tokens": outputs,
                "numerical": torch.tensor(program.numerical),
                "clean_values": clean_outputs[:, 0].cpu(),
            },
            readout=readout,
            row_extra=("clean_values",),
        )

    def metric(
        self, name: str, final: torch.Tensor, data: _tasks.TaskData, clean_final: torch.Tensor
    ) -> torch.Tensor:
        self.check_metric(name)
        outputs = data.extra["output_tokens"].to(final.device)
        if name == "l2":
            clean = clean_final[..., outputs].to(final.device)
            return -((final[..., outputs] - clean) ** 2).mean(-1)
        if bool(data.extra["numerical"]):
            raise CircuitxError(f"metric {name} needs a categorical output; use l2 for this model")
        if name == "kl":
            clean = clean_final[..., outputs].to(final.device).log_softmax(-1)
            patched = final[..., outputs].log_softmax(-1)
            return -(clean.exp() * (clean - patched)).sum(-1)
        return super().metric(name, final, data, clean_final)

    def correct(self, final: torch.Tensor, data: _tasks.TaskData) -> torch.Tensor:
        """Per row: the clean run's output (a numerical one to within 0.01)."""
        outputs = data.extra["output_tokens"].to(final.device)
        if bool(data.extra["numerical"]):
            return (
                final[..., outputs[0]] - data.extra["clean_values"].to(final.device)
            ).abs() < NUMERIC_TOLERANCE
        return super().correct(final, data)

    def logit_direction(self, data: _tasks.TaskData, d_vocab: int) -> torch.Tensor:
        """Per row: the value's logit (numerical), else the answer's logit minus the mean of
        the other output values' logits."""
        rows = torch.arange(len(data.answer))
        direction = torch.zeros(len(rows), d_vocab)
        direction[rows, data.answer] = 1.0
        if not bool(data.extra["numerical"]) and data.wrong.dim() == 2:
            direction[rows.unsqueeze(1), data.wrong] -= 1.0 / data.wrong.shape[1]
        return direction

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        raise CircuitxError(
            "the tracr reference is the model's own ground truth: use a tracr model with "
            "--reference auto (tracr:weights for the circuit read from its weights)"
        )
