"""The high-level model of greater-than (Hanna et al. 2023), the mechanism the planted
greater-than model implements (:mod:`circuitx.builtin.planted.greater_than`):

- ``year``: at each position, the value of its two-digit token (the year encoder);
- ``year_head``: at the end, YY, the value at the start year's last two digits (the year
  heads attend from the end to YY);
- ``comparator``: at the end, YY again; the output is "any year above YY": the low-level
  model must rank every two-digit token above YY over every one up to it (trained towards
  the years above YY, equally likely).

Inputs are the greater-than task's prompts ("The war lasted from the year 1732 to the
year 17"), over its nouns, centuries and YY 03..97 (the task's years under a word-level
tokenizer). Every prompt has the same shape, so any two make a pair; with any variable
taken from the source, the output is the source's YY (a chain: each variable carries YY
to the next).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from circuitx.builtin.hf import word_level_tokenizer
from circuitx.builtin.trained.hl import (
    ABOVE,
    HighLevelModel,
    Readout,
    Target,
    task_target,
    token_table,
)
from circuitx.graph import INPUT, LOGITS
from circuitx.tasks.greater_than import CENTURIES, NOUNS, GreaterThanTask, prompt_text

YEAR, YEAR_HEAD, COMPARATOR = "year", "year_head", "comparator"
GREATER_THAN_PROMPTS = 2048  # prompts in the table
GREATER_THAN_LAYERS = 3
# the planted model's places: the encoder in MLP 0, a year head in layer 1, the comparator
# in MLP 2 (one year head: a second one aligned to the same variable could carry nothing)
GREATER_THAN_ALIGNMENT = {YEAR: ("m0",), YEAR_HEAD: ("a1.h1",), COMPARATOR: ("m2",)}
GREATER_THAN_EDGES = (
    (INPUT, YEAR),
    (INPUT, YEAR_HEAD),
    (YEAR, YEAR_HEAD),
    (YEAR_HEAD, COMPARATOR),
    (COMPARATOR, LOGITS),
)


def greater_than_prompts(count: int, seed: int) -> tuple[list[str], list[int]]:
    """``count`` distinct prompts and their YY, drawn over nouns, centuries and YY 03..97."""
    rng = random.Random(seed)
    years = [century * 100 + yy for century in CENTURIES for yy in range(3, 98)]
    chosen = rng.sample([(noun, year) for noun in NOUNS for year in years], count)
    return [prompt_text(noun, year) for noun, year in chosen], [year % 100 for _, year in chosen]


class GreaterThanHighLevel(HighLevelModel):
    """Greater-than over a seeded table of prompts, tokenised by ``tokenizer``."""

    def __init__(
        self, tokenizer: Any, alignment: dict[str, tuple[str, ...]], count: int, seed: int
    ) -> None:
        self.name = "greater-than"
        prompts, yy = greater_than_prompts(count, seed)
        self.inputs, ends = token_table(tokenizer, prompts, one_length=True)
        self.yy = torch.tensor(yy)
        digits = tokenizer.convert_tokens_to_ids([f"{i:02d}" for i in range(100)])
        self.readout = Readout(ends[:, None], tuple(digits), ABOVE)
        self.alignment = alignment

    def outputs(
        self, base: torch.Tensor, source: torch.Tensor | None = None, variable: str | None = None
    ) -> torch.Tensor:
        if variable is not None and variable not in self.alignment:
            raise ValueError(f"greater-than has no variable {variable!r}")
        rows = base if variable is None or source is None else source
        return self.yy[rows].unsqueeze(-1)


def greater_than_target(name: str) -> Target:
    """The greater-than high-level model (:mod:`.greater_than_hl`) on the task's prompts,
    in a GPT-2 with a word-level tokenizer over the task's words."""
    tokenizer = word_level_tokenizer(GreaterThanTask().vocabulary())
    hl = GreaterThanHighLevel(tokenizer, GREATER_THAN_ALIGNMENT, GREATER_THAN_PROMPTS, seed=0)
    return task_target(name, "greater-than", hl, tokenizer, GREATER_THAN_LAYERS, GREATER_THAN_EDGES)
