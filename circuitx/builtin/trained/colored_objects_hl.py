"""The high-level model of colored objects (Merullo et al. 2024): IOI's roles reused, plus
a colour mover, as the planted colored-objects model has them
(:mod:`circuitx.builtin.planted.entity`):

- ``prev_token``: at each position, the token before it (so an object knows its colour);
- ``duplicate``: at each position, whether its token occurred earlier (IOI's duplicate
  heads);
- ``query``: at the end, the most recent object that ``duplicate`` flags (IOI's
  S-inhibition role: the object the question repeats);
- ``color_mover``: at the end, the colour that is the ``prev_token`` of an occurrence of
  ``query``; the output, undefined unless exactly one occurrence has a colour before it.

Inputs are the colored-objects task's prompts (a solved example, then the question), in
groups: one example and one scene's surface, objects and colours, the objects and colours
in different orders and a different object asked about in each prompt; a third of a
group's prompts ask about an object in neither scene (the task's ``absent-object``
corruption) and serve only as sources. A pair joins two prompts of one group, so positions
align and an intervened value names objects the base has: the duplicate flags of an
absent-object source leave the example's object as the most recent duplicate, so the
answer becomes the example's colour.
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
from circuitx.builtin.trained.ioi_hl import duplicates
from circuitx.graph import INPUT, LOGITS
from circuitx.tasks.colored_objects import (
    COLORS,
    N_OBJECTS,
    OBJECTS,
    OPENINGS,
    SURFACES,
    ColoredObjectsTask,
    Scene,
    prompt_text,
)

PREV_TOKEN, DUPLICATE, QUERY, COLOR_MOVER = "prev_token", "duplicate", "query", "color_mover"
COLORED_GROUPS = 48  # groups of (example, scene) in the table
COLORED_ASKED = 16  # prompts per group asking about an object of the scene
COLORED_ABSENT = 8  # prompts per group asking about an object in neither scene
COLORED_LAYERS = 4
# trained-ioi's places for the roles IOI shares (duplicate a1.h1, S-inhibition a2.h1,
# mover a3.h1), a previous-token head before them
COLORED_ALIGNMENT = {
    PREV_TOKEN: ("a0.h1",),
    DUPLICATE: ("a1.h1",),
    QUERY: ("a2.h1",),
    COLOR_MOVER: ("a3.h1",),
}
COLORED_EDGES = (
    (INPUT, PREV_TOKEN),
    (INPUT, DUPLICATE),
    (INPUT, QUERY),
    (DUPLICATE, QUERY),
    (INPUT, COLOR_MOVER),
    (PREV_TOKEN, COLOR_MOVER),
    (QUERY, COLOR_MOVER),
    (COLOR_MOVER, LOGITS),
)


def colored_prompts(
    groups: int, asked: int, absent: int, seed: int
) -> tuple[list[str], list[int], list[bool]]:
    """Prompts, their group and whether each asks about an object of its scene."""
    rng = random.Random(seed)
    prompts, group_of, present = [], [], []
    for group in range(groups):
        colors = rng.sample(COLORS, 2 * N_OBJECTS)
        objects = rng.sample(OBJECTS, 2 * N_OBJECTS)
        shot = Scene(
            rng.choice(SURFACES), rng.choice(OPENINGS), colors[:N_OBJECTS], objects[:N_OBJECTS]
        )
        shot_asked = rng.choice(shot.objects)
        surface, opening = rng.choice(SURFACES), rng.choice(OPENINGS)
        elsewhere = [o for o in OBJECTS if o not in objects]
        seen: set[str] = set()
        while len(seen) < asked + absent:
            scene = Scene(
                surface,
                opening,
                rng.sample(colors[N_OBJECTS:], N_OBJECTS),
                rng.sample(objects[N_OBJECTS:], N_OBJECTS),
            )
            is_asked = len(seen) < asked
            text = prompt_text(
                shot, shot_asked, scene, rng.choice(scene.objects if is_asked else elsewhere)
            )
            if text in seen:
                continue
            seen.add(text)
            prompts.append(text)
            group_of.append(group)
            present.append(is_asked)
    return prompts, group_of, present


class ColoredObjectsHighLevel(MoverHighLevel):
    """Colored objects over a seeded table of prompts, tokenised by ``tokenizer``."""

    def __init__(
        self,
        tokenizer: Any,
        alignment: dict[str, tuple[str, ...]],
        groups: int,
        asked: int,
        absent: int,
        seed: int,
    ) -> None:
        self.name, self.mover = "colored-objects", COLOR_MOVER
        prompts, group_of, present = colored_prompts(groups, asked, absent, seed)
        self.inputs, ends = token_table(tokenizer, prompts, one_length=True)
        self.groups, self.present = torch.tensor(group_of), torch.tensor(present)
        answers = tokenizer.convert_tokens_to_ids([c.capitalize() for c in COLORS])
        self.readout = Readout(ends[:, None], tuple(answers))
        self.alignment = alignment
        self.color_ids = torch.tensor(tokenizer.convert_tokens_to_ids(list(COLORS)))
        self.object_ids = torch.tensor(tokenizer.convert_tokens_to_ids(OBJECTS))
        # the variables' values on each input, without intervention
        self.prev_token = torch.full_like(self.inputs, -1)
        self.prev_token[:, 1:] = self.inputs[:, :-1]
        self.duplicate = duplicates(self.inputs)
        rows = torch.arange(len(prompts))
        self.query = self._query(rows, self.duplicate)
        self.plain = self._outputs(rows, self.prev_token, self.query)

    def pairs(self) -> torch.Tensor:
        return group_pairs(self.groups, self.present)

    def _intervened(self, base: torch.Tensor, source: torch.Tensor, variable: str) -> torch.Tensor:
        if variable == PREV_TOKEN:
            return self._outputs(base, self.prev_token[source], self.query[base])
        if variable == DUPLICATE:
            return self._outputs(
                base, self.prev_token[base], self._query(base, self.duplicate[source])
            )
        return self._outputs(base, self.prev_token[base], self.query[source])  # QUERY

    def _query(self, base: torch.Tensor, duplicate: torch.Tensor) -> torch.Tensor:
        """[n]: the token of the last object of ``base`` that ``duplicate`` flags (-1 if none)."""
        tokens = self.inputs[base]
        flagged = duplicate & (tokens[:, :, None] == self.object_ids).any(-1)
        last = (flagged * torch.arange(tokens.shape[1])).argmax(-1)
        return torch.where(flagged.any(-1), tokens[torch.arange(len(base)), last], -1)

    def _outputs(
        self, base: torch.Tensor, prev_token: torch.Tensor, query: torch.Tensor
    ) -> torch.Tensor:
        """The colour mover's output [n, 1]: the class of the colour before the one
        occurrence of ``query`` in ``base`` that has a colour before it."""
        is_color = (prev_token[:, :, None] == self.color_ids).any(-1)
        match = (self.inputs[base] == query[:, None]) & is_color & (query[:, None] >= 0)
        colors = torch.where(match, prev_token, -1).max(-1).values
        classes = (colors[:, None] == self.color_ids).long().argmax(-1)
        return torch.where(match.sum(-1) == 1, classes, UNDEFINED).unsqueeze(-1)


def colored_objects_target(name: str) -> Target:
    """The colored-objects high-level model (:mod:`.colored_objects_hl`) on the task's
    prompts, in a GPT-2 with a word-level tokenizer over the task's words."""
    tokenizer = word_level_tokenizer(ColoredObjectsTask().vocabulary())
    hl = ColoredObjectsHighLevel(
        tokenizer, COLORED_ALIGNMENT, COLORED_GROUPS, COLORED_ASKED, COLORED_ABSENT, seed=0
    )
    return task_target(name, "colored-objects", hl, tokenizer, COLORED_LAYERS, COLORED_EDGES)
