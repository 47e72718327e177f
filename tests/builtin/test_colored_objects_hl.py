"""The colored-objects high-level model: the colour of the object the question repeats,
moved by the source's previous tokens, duplicate flags or query as the base's scene says."""

from __future__ import annotations

import pytest
import torch

from circuitx.builtin.trained.colored_objects_hl import (
    COLOR_MOVER,
    DUPLICATE,
    PREV_TOKEN,
    QUERY,
    colored_objects_target,
)
from circuitx.builtin.trained.hl import UNDEFINED
from circuitx.builtin.trained.ioi_hl import IOI_ALIGNMENT
from circuitx.tasks.colored_objects import COLORS


@pytest.fixture(scope="module")
def target():
    return colored_objects_target("trained-colored-objects")


def _words(target, row: int) -> list[str]:
    return target.tokenizer.convert_ids_to_tokens(target.hl.inputs[row].tolist())


def _colour_of(words: list[str], obj: str, scene: int) -> str | None:
    """The colour before ``obj`` in question ``scene`` (0: the example, 1: the asked one)."""
    start = [i for i, w in enumerate(words) if w == "Q"][scene]
    for i in range(start, len(words)):
        if words[i] == obj and words[i - 1] in COLORS:
            return words[i - 1].capitalize()
    return None


def _asked(words: list[str]) -> str:
    return words[-4]  # "... What color is the OBJECT ? A :"


def _name(target, cls: int) -> str | None:
    tokens = target.hl.readout.tokens
    return None if cls == UNDEFINED else target.tokenizer.convert_ids_to_tokens(tokens[cls])


def test_every_question_answers_its_objects_colour(target):
    hl = target.hl
    rows = torch.arange(len(hl.inputs))
    answers = hl.outputs(rows)[:, 0].tolist()
    for row, present, cls in zip(rows.tolist(), hl.present.tolist(), answers):
        words = _words(target, row)
        if present:
            assert _name(target, cls) == _colour_of(words, _asked(words), 1)
        else:  # the question repeats no object: the example's is the last duplicate
            example_object = words[words.index("?") - 1]
            assert _name(target, cls) == _colour_of(words, example_object, 0)


def test_interventions_follow_the_bases_scene(target):
    hl = target.hl
    n = len(hl.inputs)
    pairs = hl.pairs()
    base, source = pairs // n, pairs % n
    assert (hl.groups[base] == hl.groups[source]).all() and hl.present[base].all()
    base, source = base[::11], source[::11]  # a spread of pairs, for time
    prev = hl.outputs(base, source, PREV_TOKEN)[:, 0].tolist()
    dup = hl.outputs(base, source, DUPLICATE)[:, 0].tolist()
    query = hl.outputs(base, source, QUERY)[:, 0].tolist()
    for b, s, p, d, q in zip(base.tolist(), source.tolist(), prev, dup, query):
        ours, theirs = _words(target, b), _words(target, s)
        asked = _asked(ours)
        # previous tokens from the source: the source's colour where the base has its object
        at = [i for i, w in enumerate(ours) if w == asked][0]
        assert _name(target, p) == theirs[at - 1].capitalize()
        # the source's query (or, from an absent-object source, the example's object)
        their_query = _asked(theirs) if hl.present[s] else ours[ours.index("?") - 1]
        scene = 1 if their_query in ours[ours.index("?") + 1 :][:-4] else 0
        assert _name(target, q) == _colour_of(ours, their_query, scene)
        # duplicate flags from the source: unchanged, unless its question repeats nothing
        expected = hl.outputs(torch.tensor([b]))[0, 0] if hl.present[s] else q
        assert d == expected
    assert torch.equal(hl.outputs(base, source, COLOR_MOVER), hl.outputs(source))
    for variable in (prev, dup, query):
        changed = torch.tensor(variable) != hl.outputs(base)[:, 0]
        assert 0.2 < changed.float().mean() < 1.0  # the interventions matter, not always


def test_the_ground_truth_reuses_iois_places(target):
    hl = target.hl
    assert hl.alignment[DUPLICATE] == IOI_ALIGNMENT["duplicate"]
    graph = target.circuits["colored-objects"]
    edges = {(s, r) for s, r, d in graph.edges(data=True) if d["in_circuit"]}
    (prev,), (dup,), (query,), (mover,) = (
        hl.alignment[v] for v in (PREV_TOKEN, DUPLICATE, QUERY, COLOR_MOVER)
    )
    assert {(prev, mover), (dup, query), (query, mover), (mover, "logits")} <= edges
    assert (prev, query) not in edges and (dup, mover) not in edges
