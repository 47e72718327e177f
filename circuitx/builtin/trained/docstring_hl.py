"""The high-level model of docstring (Heimersheim & Janiak 2023): the parameter after the
last documented one, found as an induction head finds the token after an earlier copy:

- ``prev_name``: at each position, the most recent name before it. In the def, that is a
  parameter's previous parameter; at the end, it is B, the last name documented;
- ``mover``: at the end, the name whose ``prev_name`` is the end's (C, the parameter
  after B in the def); the output, undefined unless exactly one name matches.

The planted docstring model (:mod:`circuitx.builtin.planted.docstring`) computes the
documented name in a head of its own. Trained so, with the previous parameter two tokens
back, the model never learnt it: the head that found previous parameters also found B at
the end, and the documented-name head was left with nothing to carry (docs/trained.md).

Inputs are docstring prompts (``def m(self, ..., A, B, C, ...)``, A and B documented,
stopping at the third ``:param``), as the docstring task writes them but with four to
eight parameters, A anywhere that leaves room for C. They come in groups: one method, its
parameter names and seven nouns, so one shape; each prompt puts the parameters in its own
order and documents its own consecutive pair. A pair joins two prompts of one group, so
positions align and an intervened value names parameters the base has (taking
``prev_name`` from a source moves the answer to the base's parameter where the source has
its C). Within a group C sits at different positions, and which one is not given by
anything the group's prompts share: a model that learnt C's position per group (a
shortcut that satisfies the task, never the interventions) cannot do so here.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from circuitx.builtin.hf import word_level_tokenizer
from circuitx.builtin.trained.hl import (
    UNDEFINED,
    MoverHighLevel,
    Readout,
    Target,
    group_pairs,
    task_target,
    token_table,
)
from circuitx.graph import INPUT, LOGITS
from circuitx.tasks.docstring import N_DRAWN, NAMES, NOUNS, DocstringTask, prompt_text

PREV_NAME, MOVER = "prev_name", "mover"
DOCSTRING_NAMES = N_DRAWN + 1  # the task draws 15 names a prompt; one more to spare
DOCSTRING_GROUPS = 640  # groups of (method, parameters, seven nouns) in the table
DOCSTRING_ORDERS = 16  # prompts per group: parameter orders and documented pairs
DEF_LENGTHS = (4, 5, 6, 7, 8)  # parameters in the def, one length per group in turn
DOCSTRING_LAYERS = 3
# the planted model's first and last heads: the previous name in layer 0, the mover in 2
DOCSTRING_ALIGNMENT = {PREV_NAME: ("a0.h1",), MOVER: ("a2.h1",)}
DOCSTRING_EDGES = ((INPUT, PREV_NAME), (INPUT, MOVER), (PREV_NAME, MOVER), (MOVER, LOGITS))


def docstring_prompts(
    names: list[str], nouns: list[str], groups: int, orders: int, seed: int
) -> tuple[list[str], list[int]]:
    """Prompts and their group: ``groups`` draws of a method, parameters (as many as
    :data:`DEF_LENGTHS` says, in turn) and seven nouns, each in ``orders`` distinct
    prompts: a parameter order and a documented pair (A, B) with a parameter after it."""
    rng = random.Random(seed)
    prompts, group_of = [], []
    for group in range(groups):
        length = DEF_LENGTHS[group % len(DEF_LENGTHS)]
        method, *params = rng.sample(names, 1 + length)
        words = rng.sample(nouns, 7)
        seen: set[tuple[tuple[str, ...], int]] = set()
        while len(seen) < orders:
            order, a_at = tuple(rng.sample(params, length)), rng.randrange(length - 2)
            if (order, a_at) in seen:
                continue
            seen.add((order, a_at))
            documented = list(order[a_at : a_at + 2])
            prompts.append(prompt_text(method, list(order), documented, words))
            group_of.append(group)
    return prompts, group_of


class DocstringHighLevel(MoverHighLevel):
    """Docstring over a seeded table of prompts, tokenised by ``tokenizer``."""

    def __init__(
        self,
        tokenizer: Any,
        names: list[str],
        alignment: dict[str, tuple[str, ...]],
        groups: int,
        orders: int,
        seed: int,
    ) -> None:
        self.name, self.mover = "docstring", MOVER
        nouns = [n for n in NOUNS if n not in NAMES]
        prompts, group_of = docstring_prompts(names, nouns, groups, orders, seed)
        self.inputs, self.ends = token_table(tokenizer, prompts)
        self.groups = torch.tensor(group_of)
        self.name_ids = torch.tensor(tokenizer.convert_tokens_to_ids(names))
        self.readout = Readout(self.ends[:, None], tuple(self.name_ids.tolist()))
        self.alignment = alignment
        self.is_name = (self.inputs[:, :, None] == self.name_ids).any(-1)  # [n, pos]
        # the variables' values on each input, without intervention
        positions = torch.arange(self.inputs.shape[1])
        last_name = torch.where(self.is_name, positions, -1).cummax(-1).values  # at or before
        before = torch.cat([torch.full_like(last_name[:, :1], -1), last_name[:, :-1]], 1)
        named = self.inputs.gather(1, before.clamp_min(0))
        self.prev_name = torch.where(before >= 0, named, -1)
        self.plain = self._outputs(torch.arange(len(prompts)), self.prev_name)

    def pairs(self) -> torch.Tensor:
        return group_pairs(self.groups)

    def _intervened(self, base: torch.Tensor, source: torch.Tensor, variable: str) -> torch.Tensor:
        return self._outputs(base, self.prev_name[source])  # PREV_NAME

    def _outputs(self, base: torch.Tensor, prev_name: torch.Tensor) -> torch.Tensor:
        """The mover's output [n, 1]: the class of the one name of ``base`` before its end
        whose ``prev_name`` is the one at the end (:data:`UNDEFINED` unless exactly one
        is)."""
        ends = self.ends[base]
        wanted = prev_name[torch.arange(len(base)), ends]
        match = self.is_name[base] & (prev_name == wanted[:, None])
        match &= torch.arange(match.shape[1]) < ends[:, None]  # the end only reads
        tokens = torch.where(match, self.inputs[base], -1).max(-1).values
        classes = (tokens[:, None] == self.name_ids).long().argmax(-1)
        return torch.where(match.sum(-1) == 1, classes, UNDEFINED).unsqueeze(-1)


def docstring_target(name: str) -> Target:
    """The docstring high-level model (:mod:`.docstring_hl`) on the docstring task's
    prompts, in a GPT-2 with a word-level tokenizer over the task's words."""
    names = [n for n in NAMES if n not in NOUNS][:DOCSTRING_NAMES]
    words = [w for w in DocstringTask().vocabulary() if w not in NAMES or w in names]
    tokenizer = word_level_tokenizer(words)
    hl = DocstringHighLevel(
        tokenizer, names, DOCSTRING_ALIGNMENT, DOCSTRING_GROUPS, DOCSTRING_ORDERS, seed=0
    )
    return task_target(name, "docstring", hl, tokenizer, DOCSTRING_LAYERS, DOCSTRING_EDGES)
