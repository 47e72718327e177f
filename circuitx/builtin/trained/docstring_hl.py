"""The high-level model of docstring (Heimersheim & Janiak 2023), the mechanism the planted
docstring model implements (:mod:`circuitx.builtin.planted.docstring`):

- ``prev_param``: at each position, the token two back (in the def, a parameter's
  previous parameter, skipping the comma);
- ``doc_name``: at the end, the last name documented (B, the most recent name);
- ``mover``: at the end, the name whose ``prev_param`` is ``doc_name`` (C, the
  parameter after B in the def); the output, undefined unless exactly one name matches.

Inputs are docstring prompts (``def m(self, ..., A, B, C, ...)``, A and B documented,
stopping at the third ``:param``), as the docstring task writes them but with four to
eight parameters, A anywhere that leaves room for C. They come in groups: one method, its
parameter names and seven nouns, so one shape; each prompt puts the parameters in its own
order and documents its own consecutive pair. A pair joins two prompts of one group, so
positions align and an intervened value names parameters the base has (taking
``doc_name`` from a source moves the answer to the parameter after the source's B in the
base's def). Within a group C sits at different positions, and which one is not given by
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
    HighLevelModel,
    Readout,
    Target,
    task_target,
    token_table,
)
from circuitx.graph import INPUT, LOGITS
from circuitx.tasks.docstring import N_DRAWN, NAMES, NOUNS, DocstringTask, prompt_text

PREV_PARAM, DOC_NAME, MOVER = "prev_param", "doc_name", "mover"
DOCSTRING_NAMES = N_DRAWN + 1  # the task draws 15 names a prompt; one more to spare
DOCSTRING_GROUPS = 48  # groups of (method, parameters, seven nouns) in the table
DOCSTRING_ORDERS = 16  # prompts per group: parameter orders and documented pairs
DEF_LENGTHS = (4, 5, 6, 7, 8)  # parameters in the def, one length per group in turn
DOCSTRING_LAYERS = 3
# the planted model's heads: previous parameter in layer 0, documented name in 1, mover in 2
DOCSTRING_ALIGNMENT = {PREV_PARAM: ("a0.h1",), DOC_NAME: ("a1.h1",), MOVER: ("a2.h1",)}
DOCSTRING_EDGES = (
    (INPUT, PREV_PARAM),
    (INPUT, DOC_NAME),
    (INPUT, MOVER),
    (PREV_PARAM, MOVER),
    (DOC_NAME, MOVER),
    (MOVER, LOGITS),
)


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


class DocstringHighLevel(HighLevelModel):
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
        self.name = "docstring"
        nouns = [n for n in NOUNS if n not in NAMES]
        prompts, group_of = docstring_prompts(names, nouns, groups, orders, seed)
        self.inputs, self.ends = token_table(tokenizer, prompts)
        self.groups = torch.tensor(group_of)
        self.name_ids = torch.tensor(tokenizer.convert_tokens_to_ids(names))
        self.readout = Readout(self.ends[:, None], tuple(self.name_ids.tolist()))
        self.alignment = alignment
        self.is_name = (self.inputs[:, :, None] == self.name_ids).any(-1)  # [n, pos]
        # the variables' values on each input, without intervention
        self.prev_param = torch.full_like(self.inputs, -1)
        self.prev_param[:, 2:] = self.inputs[:, :-2]
        positions = torch.arange(self.inputs.shape[1])
        before_end = self.is_name & (positions < self.ends[:, None])
        rows = torch.arange(len(prompts))
        self.doc_name = self.inputs[rows, (before_end * positions).argmax(-1)]
        self.plain = self._outputs(rows, self.prev_param, self.doc_name)

    def pairs(self) -> torch.Tensor:
        same = self.groups[:, None] == self.groups[None, :]
        return same.flatten().nonzero().flatten()

    def outputs(
        self, base: torch.Tensor, source: torch.Tensor | None = None, variable: str | None = None
    ) -> torch.Tensor:
        if variable is None or source is None:
            return self.plain[base]
        if variable == MOVER:
            return self.plain[source]
        if variable == PREV_PARAM:
            return self._outputs(base, self.prev_param[source], self.doc_name[base])
        if variable == DOC_NAME:
            return self._outputs(base, self.prev_param[base], self.doc_name[source])
        raise ValueError(f"docstring has no variable {variable!r}")

    def _outputs(
        self, base: torch.Tensor, prev_param: torch.Tensor, doc_name: torch.Tensor
    ) -> torch.Tensor:
        """The mover's output [n, 1]: the class of the one name of ``base`` whose
        ``prev_param`` is ``doc_name`` (:data:`UNDEFINED` unless exactly one is)."""
        match = self.is_name[base] & (prev_param == doc_name[:, None])
        match &= torch.arange(match.shape[1]) < self.ends[base, None]  # the end only reads
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
