"""The high-level model of docstring (Heimersheim & Janiak 2023), the mechanism the planted
docstring model implements (:mod:`circuitx.builtin.planted.docstring`):

- ``prev_param``: at each position, the token two back (in the def, a parameter's
  previous parameter, skipping the comma);
- ``doc_name``: at the end, the last name documented (B, the most recent name);
- ``mover``: at the end, the name whose ``prev_param`` is ``doc_name`` (C, the
  parameter after B in the def); the output, undefined unless exactly one name matches.

Inputs are the docstring task's prompts (``def m(self, p1, p2, A, B, C, p6)``, A and B
documented, stopping at the third ``:param``). They come in groups: one method, six
parameter names and seven nouns, the parameters in a different order in each prompt.
Every prompt has the same shape, so positions align; a pair joins two prompts of one
group, so an intervened value names parameters the base has (taking ``doc_name`` from a
source moves the answer to the parameter after the source's B in the base's def).
"""

from __future__ import annotations

import random
from typing import Any

import torch

from circuitx.builtin.hf import word_level_tokenizer
from circuitx.builtin.trained.hl import UNDEFINED, HighLevelModel, Readout, Target, task_target
from circuitx.graph import INPUT, LOGITS
from circuitx.tasks.docstring import N_DRAWN, NAMES, NOUNS, DocstringTask, prompt_text

PREV_PARAM, DOC_NAME, MOVER = "prev_param", "doc_name", "mover"
DOCSTRING_NAMES = N_DRAWN + 1  # the task draws 15 names a prompt; one more to spare
DOCSTRING_GROUPS = 24  # groups of (method, six parameters, seven nouns) in the table
DOCSTRING_ORDERS = 16  # parameter orders per group
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
    """Prompts and their group: ``groups`` draws of a method, six parameters and seven
    nouns, each in ``orders`` distinct parameter orders."""
    rng = random.Random(seed)
    prompts, group_of = [], []
    for group in range(groups):
        method, *params = rng.sample(names, 7)
        words = rng.sample(nouns, 7)
        seen: set[tuple[str, ...]] = set()
        while len(seen) < orders:
            order = tuple(rng.sample(params, 6))
            if order in seen:
                continue
            seen.add(order)
            prompts.append(prompt_text(method, list(order), list(order[2:4]), words))
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
        rows = [
            [tokenizer.bos_token_id, *tokenizer.encode(p, add_special_tokens=False)]
            for p in prompts
        ]
        if len({len(r) for r in rows}) != 1:
            raise ValueError("docstring prompts must all tokenise to one length")
        self.inputs = torch.tensor(rows)
        self.groups = torch.tensor(group_of)
        self.name_ids = torch.tensor(tokenizer.convert_tokens_to_ids(names))
        end = self.inputs.shape[1] - 1
        self.readout = Readout(
            torch.full((len(rows), 1), end), tuple(self.name_ids.tolist()), False
        )
        self.alignment = alignment
        self.is_name = (self.inputs[:, :, None] == self.name_ids).any(-1)  # [n, pos]
        # the variables' values on each input, without intervention
        self.prev_param = torch.full_like(self.inputs, -1)
        self.prev_param[:, 2:] = self.inputs[:, :-2]
        names_before_end = self.is_name[:, :end].long() * torch.arange(end)
        self.doc_name = self.inputs[torch.arange(len(rows)), names_before_end.argmax(-1)]
        self.plain = self._outputs(torch.arange(len(rows)), self.prev_param, self.doc_name)

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
        match[:, -1] = False  # the end reads, it is not read
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
