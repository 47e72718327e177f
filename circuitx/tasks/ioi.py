"""Indirect object identification (Wang et al. 2022), on GPT-2 small.

Prompts follow Redwood's IOI dataset: 15 BABA templates and their ABBA twins (first
clause's names swapped), half of each. The prompt stops before the final name, so the
model should predict the indirect object (IO) rather than the subject (S). Corruptions:
``abc`` (default) replaces the three name occurrences by three other distinct names;
``s2_io_flip`` (MIB's default, and Merullo et al.'s) puts the IO name in S2's place, so
the corrupted prompt's answer is S. Positions: IO, S1, S1+1, S2, END.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

import networkx as nx
import torch

from circuitx.errors import CircuitxError
from circuitx.reference import INPUT_CLASS, OUTPUT_CLASS, class_circuit

if TYPE_CHECKING:
    from circuitx.models import Model

from circuitx.tasks import base as _tasks

BABA_TEMPLATES = (
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
)
# ABBA: the first clause names the indirect object first.
ABBA_TEMPLATES = tuple(
    t.replace("[B]", "[X]", 1).replace("[A]", "[B]", 1).replace("[X]", "[A]", 1)
    for t in BABA_TEMPLATES
)

NAMES = (
    "Michael Christopher Jessica Matthew Ashley Jennifer Joshua Amanda Daniel David James "
    "Robert John Joseph Andrew Ryan Brandon Jason Justin Sarah William Jonathan Stephanie "
    "Brian Nicole Nicholas Anthony Heather Eric Elizabeth Adam Megan Melissa Kevin Steven "
    "Thomas Timothy Christina Kyle Rachel Laura Lauren Amber Brittany Danielle Richard "
    "Kimberly Jeffrey Amy Crystal Michelle Tiffany Jeremy Benjamin Mark Emily Aaron Charles "
    "Rebecca Jacob Stephen Patrick Sean Erin Jamie Kelly Samantha Nathan Sara Dustin Paul "
    "Angela Tyler Scott Katherine Andrea Gregory Erica Mary Travis Lisa Kenneth Bryan "
    "Lindsey Kristen Jose Alexander Jesse Katie Lindsay Shannon Vanessa Courtney Christine "
    "Alicia Cody Allison Bradley Samuel"
).split()
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house", "station")
OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")

# Wang et al.'s 26 heads by class (as kept in ACDC's IOI_CIRCUIT).
CLASSES: dict[str, tuple[tuple[int, int], ...]] = {
    "name mover": ((9, 9), (10, 0), (9, 6)),
    "backup name mover": ((10, 10), (10, 6), (10, 2), (10, 1), (11, 2), (9, 7), (9, 0), (11, 9)),
    "negative name mover": ((10, 7), (11, 10)),
    "s2 inhibition": ((7, 3), (7, 9), (8, 6), (8, 10)),
    "induction": ((5, 5), (5, 8), (5, 9), (6, 9)),
    "duplicate token": ((0, 1), (0, 10), (3, 0)),
    "previous token": ((2, 2), (4, 11)),
}
MOVERS = ("name mover", "backup name mover", "negative name mover")
# ACDC's get_ioi_true_edges, class to class.
CLASS_EDGES = (
    (INPUT_CLASS, "previous token", "qkv"),
    (INPUT_CLASS, "duplicate token", "qkv"),
    (INPUT_CLASS, "s2 inhibition", "q"),
    *((INPUT_CLASS, mover, "kv") for mover in MOVERS),
    ("previous token", "induction", "kv"),
    ("induction", "s2 inhibition", "kv"),
    ("duplicate token", "s2 inhibition", "kv"),
    *(("s2 inhibition", mover, "q") for mover in MOVERS),
    *((mover, OUTPUT_CLASS, "") for mover in MOVERS),
)


def prompt_frame(template: str, place: str, obj: str) -> str:
    """``template`` up to its final name, with the place and object filled in."""
    text = template[: template.rindex(" [A]")]
    return text.replace("[PLACE]", place).replace("[OBJECT]", obj)


def name_each(frame: str, names: list[str]) -> str:
    """``frame`` with each name occurrence, in order, given its own name (ABC prompts)."""
    for name in names:
        frame = re.sub(r"\[[AB]\]", name, frame, count=1)
    return frame


class IOITask(_tasks.Task):
    name = "ioi"
    circuit_positions = ("IO", "S1", "S1+1", "S2", "END")
    role_positions = {  # Wang et al.'s classes, where they act and the keys they read
        "previous token": ("S1+1", ("S1",)),
        "duplicate token": ("S2", ("S1", "S2")),
        "induction": ("S2", ("S1+1",)),
        "s-inhibition": ("END", ("S2",)),
        "s2 inhibition": ("END", ("S2",)),  # the class's name in CLASSES (ACDC's)
        "name mover": ("END", ("IO", "S1", "S2")),
        "negative name mover": ("END", ("IO", "S1", "S2")),
        "backup name mover": ("END", ("IO", "S1", "S2")),
    }
    title = "Indirect object identification"
    default_model = "gpt2"
    paper_model = "openai-community/gpt2"
    corruptions = ("abc", "s2_io_flip")
    reference_variants = {
        "": "Wang et al. 2022: 26 heads in 7 classes, ACDC's class edges",
        "oneill-bui": "O'Neill & Bui's version: backup movers with 11.3 instead of 9.0",
    }

    def vocabulary(self) -> list[str]:
        return _tasks.words_of(*BABA_TEMPLATES, " ".join([*NAMES, *PLACES, *OBJECTS]))

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> _tasks.TaskData:
        name_ids = {n: _tasks.single_token(model, " " + n) for n in NAMES}
        names = [n for n, token in name_ids.items() if token is not None]
        if len(names) < 5:
            raise CircuitxError(
                f"the model's tokenizer keeps only {len(names)} of the {len(NAMES)} IOI names "
                "as single tokens; IOI needs at least 5"
            )
        rng = random.Random(seed)
        clean, corrupted, io_names, s_names = [], [], [], []
        for i in range(n_prompts):
            template = rng.choice(ABBA_TEMPLATES if i % 2 == 0 else BABA_TEMPLATES)
            io, s = rng.sample(names, 2)
            others = rng.sample([n for n in names if n not in (io, s)], 3)
            text = prompt_frame(template, rng.choice(PLACES), rng.choice(OBJECTS))
            clean.append(text.replace("[A]", io).replace("[B]", s))
            if self.corruption == "abc":
                corrupted.append(name_each(text, others))
            else:  # S2, the frame's last [B], becomes IO
                before, _, after = text.rpartition("[B]")
                corrupted.append(f"{before}[A]{after}".replace("[A]", io).replace("[B]", s))
            io_names.append(io)
            s_names.append(s)

        clean_tokens, corrupted_tokens, lengths = _tasks.encode_pairs(
            model, self.name, clean, corrupted
        )
        io_ids = torch.tensor([name_ids[n] for n in io_names])
        s_ids = torch.tensor([name_ids[n] for n in s_names])
        positions = _tasks.position_table(("IO", "S1", "S1+1", "S2", "END"), n_prompts)
        for i in range(n_prompts):
            row = clean_tokens[i, : lengths[i]]
            io_at = _tasks.occurrences(row, io_ids[i])
            s_at = _tasks.occurrences(row, s_ids[i])
            if len(io_at) != 1 or len(s_at) != 2:
                raise CircuitxError(f"IOI prompt does not tokenise as the task needs: {clean[i]!r}")
            changed = _tasks.changed_positions(row, corrupted_tokens[i, : lengths[i]])
            if changed != (sorted([*io_at, *s_at]) if self.corruption == "abc" else s_at[1:]):
                raise CircuitxError(
                    f"IOI corrupted prompt changes more than the names: {corrupted[i]!r}"
                )
            positions["IO"][i], positions["S1"][i], positions["S2"][i] = io_at[0], s_at[0], s_at[1]
            positions["S1+1"][i] = s_at[0] + 1
            positions["END"][i] = lengths[i] - 1
        return _tasks.TaskData(
            clean=clean_tokens,
            corrupted=corrupted_tokens,
            positions=positions,
            answer=io_ids,
            wrong=s_ids,
            clean_prompts=clean,
            corrupted_prompts=corrupted,
            lengths=torch.tensor(lengths),
        )

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        classes = CLASSES
        if variant == "oneill-bui":
            backup = [h for h in CLASSES["backup name mover"] if h != (9, 0)] + [(11, 3)]
            classes = {**CLASSES, "backup name mover": tuple(backup)}
        label = f"ioi:{variant}" if variant else "ioi"
        graph = class_circuit(label, n_layers, n_heads, has_mlp, classes, CLASS_EDGES)
        graph.graph["task"] = self.name
        return graph
