"""The high-level model of IOI, InterpBench's simplified circuit (Gupta et al. 2024):

- ``duplicate``: at each position, whether its token occurred earlier (duplicate token
  heads; InterpBench folds induction into them);
- ``s_inhibition``: at each position, its token when ``duplicate`` flags it, else none
  (S-inhibition: "do not move this name");
- ``name_mover``: at the end, a score per name, +10 per occurrence and -15 per
  inhibited occurrence (InterpBench's weights); the output is the best-scoring name,
  undefined on a tie (an ABC prompt's three names).

On an IOI prompt the subject occurs twice and is inhibited once (score 5), the indirect
object once (10): the output is the indirect object. Inputs are IOI prompts (ABBA and
BABA, as the ioi task makes them) and their ABC versions (three different names, no
duplicate: the ioi task's corruption) from every template. A pair joins a base IOI prompt
with a source of the same template (so every position means the same in both, as in
the ioi task's clean/corrupted pairs); ABC prompts serve only as sources, where patching
a variable's value removes the duplicate the base has (the name mover's value there is a
tie: those pairs are not trained or scored for it).
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
from circuitx.tasks.ioi import (
    ABBA_TEMPLATES,
    BABA_TEMPLATES,
    NAMES,
    OBJECTS,
    PLACES,
    IOITask,
    name_each,
    prompt_frame,
)

DUPLICATE, S_INHIBITION, NAME_MOVER = "duplicate", "s_inhibition", "name_mover"
OCCURRENCE, INHIBITION = 10.0, -15.0  # InterpBench's name-mover scores
IOI_NAMES = 8  # the first names of the ioi task's list, each one token
IOI_PROMPTS = 64  # IOI prompts per template in the table (and half as many ABC ones)
# InterpBench's IOI model has 6 layers of 4 heads (d_model 64); 4 layers train in about
# two thirds of the time on a CPU, and the name mover moves to the last one
IOI_LAYERS = 4
# the iit library's latest IOI heads (one each), the name mover at a3.h1 instead of a4.h1
IOI_ALIGNMENT = {DUPLICATE: ("a1.h1",), S_INHIBITION: ("a2.h1",), NAME_MOVER: ("a3.h1",)}
# the high-level graph: who reads what (INPUT: the tokens)
IOI_EDGES = (
    (INPUT, DUPLICATE),
    (INPUT, S_INHIBITION),
    (DUPLICATE, S_INHIBITION),
    (INPUT, NAME_MOVER),
    (S_INHIBITION, NAME_MOVER),
    (NAME_MOVER, LOGITS),
)


def ioi_prompts(
    names: list[str], per_template: int, seed: int
) -> tuple[list[str], list[int], list[bool]]:
    """Prompts (up to the final name), their template index, and whether each is IOI
    (else ABC): ``per_template`` IOI prompts per template (ABBA and BABA in turn) and half
    as many ABC ones."""
    rng = random.Random(seed)
    prompts, groups, is_ioi = [], [], []
    for group, twins in enumerate(zip(ABBA_TEMPLATES, BABA_TEMPLATES)):
        for k in range(per_template + per_template // 2):
            text = prompt_frame(twins[k % 2], rng.choice(PLACES), rng.choice(OBJECTS))
            if k < per_template:
                io, s = rng.sample(names, 2)
                text = text.replace("[A]", io).replace("[B]", s)
            else:
                text = name_each(text, rng.sample(names, 3))
            prompts.append(text)
            groups.append(group)
            is_ioi.append(k < per_template)
    return prompts, groups, is_ioi


class IOIHighLevel(MoverHighLevel):
    """Simplified IOI over a seeded table of prompts, tokenised by ``tokenizer``."""

    def __init__(
        self,
        tokenizer: Any,
        names: list[str],
        alignment: dict[str, tuple[str, ...]],
        per_template: int,
        seed: int,
    ) -> None:
        self.name, self.mover = "ioi", NAME_MOVER
        prompts, groups, is_ioi = ioi_prompts(names, per_template, seed)
        self.inputs, self.ends = token_table(tokenizer, prompts)
        self.groups, self.is_ioi = torch.tensor(groups), torch.tensor(is_ioi)
        self.name_ids = torch.tensor(tokenizer.convert_tokens_to_ids(names))
        self.readout = Readout(self.ends[:, None], tuple(self.name_ids.tolist()))
        self.alignment = alignment
        # the variables' values on each input, without intervention
        self.duplicate = duplicates(self.inputs)
        self.s_inhibition = torch.where(self.duplicate, self.inputs, -1)
        self.plain = self._outputs(self.inputs, self.s_inhibition, self.ends)

    def pairs(self) -> torch.Tensor:
        return group_pairs(self.groups, self.is_ioi)

    def _intervened(self, base: torch.Tensor, source: torch.Tensor, variable: str) -> torch.Tensor:
        tokens = self.inputs[base]
        if variable == DUPLICATE:
            inhibited = torch.where(self.duplicate[source], tokens, -1)
        else:  # S_INHIBITION
            inhibited = self.s_inhibition[source]
        return self._outputs(tokens, inhibited, self.ends[base])

    def _outputs(
        self, tokens: torch.Tensor, inhibited: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """The best name [n, 1] (class index, :data:`UNDEFINED` on a tie) from the name
        mover's scores at ``ends``."""
        positions = torch.arange(tokens.shape[1])
        upto = (positions[None, :] <= ends[:, None])[:, :, None]  # [n, pos, 1]
        names = self.name_ids[None, None, :]
        occurs = (tokens[:, :, None] == names) & upto  # [n, pos, names]
        inhibit = (inhibited[:, :, None] == names) & upto
        score = OCCURRENCE * occurs.sum(1) + INHIBITION * inhibit.sum(1)
        top = score.topk(2, -1)
        tie = top.values[:, 0] == top.values[:, 1]
        return torch.where(tie, UNDEFINED, top.indices[:, 0]).unsqueeze(-1)


def duplicates(tokens: torch.Tensor) -> torch.Tensor:
    """[n, pos]: whether each position's token occurs at an earlier position."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [n, p, q]
    earlier = torch.ones(tokens.shape[1], tokens.shape[1], dtype=torch.bool).tril(-1)
    return (same & earlier).any(-1)


def ioi_target(name: str) -> Target:
    """InterpBench's simplified IOI (:mod:`.ioi_hl`) on the ioi task's prompts, in a GPT-2
    with a word-level tokenizer over the task's words."""
    names = list(NAMES[:IOI_NAMES])
    words = [w for w in IOITask().vocabulary() if w not in NAMES or w in names]
    tokenizer = word_level_tokenizer(words)
    hl = IOIHighLevel(tokenizer, names, IOI_ALIGNMENT, IOI_PROMPTS, seed=0)
    return task_target(name, "ioi", hl, tokenizer, IOI_LAYERS, IOI_EDGES)
