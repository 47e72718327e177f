"""Colored objects (Merullo et al. 2024), on GPT-2 medium.

One solved example, then a question about a new scene of three coloured objects (as
jmerullo/circuit_reuse builds them; the two scenes share no object and no colour):

    Q: On the table, I see an orange textbook, a red puzzle, and a purple cup. What color is the textbook?
    A: Orange
    Q: On the desk, there is a blue pencil, a black necklace, and a yellow lighter. What color is the pencil?
    A:

The answer is the queried object's colour, capitalised (" Blue"). The corrupted prompt
asks about another object of the same scene (``other-object``), or about an object in
neither scene, whose colour cannot be known (``absent-object``: the negative examples of the
``sae`` method); it differs from the clean one in that one token. Metric ``logit-diff``: logit of the correct colour minus that of another
object of the scene (the ``other-object`` prompt's answer). A prompt counts as correct when its colour beats every other colour.
Positions: COLOR and OBJECT (the queried object in the scene), QUERY (the object in the
question), END.

No head list is published. The reference is relational: the IOI circuit the same method
finds on the same model (Merullo et al. report ~78% of the colored-objects heads shared
with IOI on GPT-2 medium); ``--reference FILE`` takes a user's graph instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.tasks import base as _tasks

if TYPE_CHECKING:
    from circuitx.models import Model

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "brown", "black")
OBJECTS = (
    "pencil notebook pen cup plate jug mug puzzle textbook leash necklace bracelet bottle "
    "ball envelope lighter bowl"
).split()
SURFACES = ("table", "desk", "floor")
OPENINGS = ("there is", "you see", "I see")
N_OBJECTS = 3  # per scene


class ColoredObjectsTask(_tasks.Task):
    name = "colored-objects"
    circuit_positions = ("OBJECT", "QUERY", "END")
    role_positions = {  # the planted design's heads (docs/planted.md)
        "duplicate token": ("QUERY", ("OBJECT", "QUERY")),
        "induction": ("QUERY", ("other",)),  # the token after the object in the scene
        "s-inhibition": ("END", ("QUERY",)),
        "color mover": ("END", ("OBJECT",)),
        "backup color mover": ("END", ("OBJECT",)),
    }
    title = "Colored objects (what color is the X?)"
    default_model = "gpt2-medium"
    paper_model = "openai-community/gpt2-medium"
    corruptions = ("other-object", "absent-object")
    negative_corruption = "absent-object"
    reference_task = "ioi"
    reference_variants = {"": "relational: the IOI circuit the same method finds on the same model"}

    def vocabulary(self) -> list[str]:
        words = [*COLORS, *(c.capitalize() for c in COLORS), *OBJECTS, *SURFACES, *OPENINGS]
        return _tasks.words_of("Q: On the , a an and. What color is the ?\nA:", " ".join(words))

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> _tasks.TaskData:
        color_ids = {
            c: (
                _tasks.single_token(model, " " + c),
                _tasks.single_token(model, " " + c.capitalize()),
            )
            for c in COLORS
        }
        colors = [c for c, ids in color_ids.items() if None not in ids]
        object_ids = {o: _tasks.single_token(model, " " + o) for o in OBJECTS}
        objects = [o for o, token in object_ids.items() if token is not None]
        if len(colors) < 2 * N_OBJECTS or len(objects) < 2 * N_OBJECTS:
            raise CircuitxError(
                f"colored-objects needs {2 * N_OBJECTS} colours and objects that are single "
                f"tokens; this tokenizer keeps {len(colors)} colours and {len(objects)} objects"
            )
        rng = random.Random(seed)
        clean, corrupted, asked_about = [], [], []
        for _ in range(n_prompts):
            shot_colors, query_colors = _halves(rng.sample(colors, 2 * N_OBJECTS))
            shot_objects, query_objects = _halves(rng.sample(objects, 2 * N_OBJECTS))
            shot_asked = shot_objects[rng.randrange(N_OBJECTS)]
            shot = Scene(rng.choice(SURFACES), rng.choice(OPENINGS), shot_colors, shot_objects)
            query = Scene(rng.choice(SURFACES), rng.choice(OPENINGS), query_colors, query_objects)
            asked, other = rng.sample(range(N_OBJECTS), 2)
            clean.append(prompt_text(shot, shot_asked, query, query_objects[asked]))
            asked_instead = query_objects[other]
            if self.corruption == "absent-object":
                absent = [o for o in objects if o not in shot_objects + query_objects]
                asked_instead = rng.choice(absent)
            corrupted.append(prompt_text(shot, shot_asked, query, asked_instead))
            asked_about.append((query_colors[asked], query_objects[asked], query_colors[other]))

        clean_tokens, corrupted_tokens, lengths = _tasks.encode_pairs(
            model, self.name, clean, corrupted
        )
        positions = _tasks.position_table(("COLOR", "OBJECT", "QUERY", "END"), n_prompts)
        for i, (color, obj, _) in enumerate(asked_about):
            row = clean_tokens[i, : lengths[i]]
            object_at = _tasks.occurrences(row, object_ids[obj])
            if len(object_at) != 2 or row[object_at[0] - 1] != color_ids[color][0]:
                raise CircuitxError(
                    f"colored-objects prompt does not tokenise as the task needs: {clean[i]!r}"
                )
            changed = _tasks.changed_positions(row, corrupted_tokens[i, : lengths[i]])
            if changed != object_at[1:]:
                raise CircuitxError(
                    f"colored-objects corrupted prompt changes more than the question: {corrupted[i]!r}"
                )
            positions["OBJECT"][i], positions["QUERY"][i] = object_at
            positions["COLOR"][i] = object_at[0] - 1
            positions["END"][i] = lengths[i] - 1
        return _tasks.TaskData(
            clean=clean_tokens,
            corrupted=corrupted_tokens,
            positions=positions,
            answer=torch.tensor([color_ids[color][1] for color, _, _ in asked_about]),
            wrong=torch.tensor([color_ids[other][1] for _, _, other in asked_about]),
            clean_prompts=clean,
            corrupted_prompts=corrupted,
            extra={"colors": torch.tensor([color_ids[c][1] for c in colors])},  # answer forms
            lengths=torch.tensor(lengths),
        )

    def correct(self, final: torch.Tensor, data: _tasks.TaskData) -> torch.Tensor:
        """The correct colour beats every other colour."""
        colors = data.extra["colors"].expand(data.n_prompts, -1)  # [n, colours]
        is_answer = (colors == data.answer.unsqueeze(-1)).to(final.device)
        rivals = _tasks.pick(final, colors).masked_fill(is_answer, float("-inf"))
        return _tasks.beats(_tasks.pick(final, data.answer), rivals.amax(-1))

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        raise CircuitxError(
            "the colored-objects reference is relational (the IOI circuit the same method "
            "finds on the same model); resolve it with a discovery, or pass --reference FILE"
        )


def _halves(items: list[str]) -> tuple[list[str], list[str]]:
    return items[:N_OBJECTS], items[N_OBJECTS:]


@dataclass(frozen=True)
class Scene:
    """A surface, an opening and coloured objects: "On the desk, there is a blue pencil,
    ..., and a yellow lighter"."""

    surface: str
    opening: str
    colors: list[str]
    objects: list[str]

    def question(self) -> str:
        """ "Q: On the desk, there is a blue pencil, ... What color is the" """
        items = [
            f"{'an' if c[0] in 'aeiou' else 'a'} {c} {o}" for c, o in zip(self.colors, self.objects)
        ]
        listed = ", ".join(items[:-1]) + ", and " + items[-1]
        return f"Q: On the {self.surface}, {self.opening} {listed}. What color is the"


def prompt_text(shot: Scene, shot_asked: str, scene: Scene, asked: str) -> str:
    """The solved example about ``shot`` (its object ``shot_asked``), then the question
    about ``asked`` in ``scene``, up to "A:"."""
    answer = shot.colors[shot.objects.index(shot_asked)].capitalize()
    solved = f"{shot.question()} {shot_asked}?\nA: {answer}\n"
    return f"{solved}{scene.question()} {asked}?\nA:"
