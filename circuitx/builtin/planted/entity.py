"""Planted IOI and colored-objects models: one design, shared heads.

Entities (names, colours, objects) have one residual feature each (``ent``). The heads:

- previous token (``PT``): attends to the token before and copies its entity into ``prev``
  (and a "previous token is a colour" flag);
- duplicate token (``DT``): attends to earlier copies of its own entity (and itself) and
  writes their mean position; a later head reads "my position minus that" as how far
  back the earlier copy is, 0 when there is none (BOS writes 1, so non-entities read < 0);
- induction (``IND``): attends to the token after an earlier copy of its own entity (its
  ``prev`` matches) and writes a duplicate flag;
- S-inhibition (``SI``): at the end, attends to the most recent duplicated entity (using
  both signals, preferring names and recent positions) and copies it into ``sinh``;
- name mover (``NM``): attends to names, except the one in ``sinh``, and writes that name
  into ``out`` (the unembedding reads ``out``); negative name mover (``NNM``): the same
  attention, writing minus the name;
- colour mover (``CM``, colored-objects only): attends to the earlier copy of the entity
  in ``sinh`` whose previous token is a colour and writes that colour into ``out``.

IOI's circuit is PT -> IND -> SI, DT -> SI, SI -> NM/NNM -> logits. Colored objects reuse
DT, IND and SI and add CM; PT works there too, but the corrupted prompt changes only the
question, so PT's output (and its effect under patching) is the same: it is not in that
circuit. The hard variant adds backup movers (``BNM``, ``BCM``) in
the last layer: the same attention, suppressed when ``out`` already holds the name or
colour they would write, so they take over only when the main mover is patched away.
"""

from __future__ import annotations

from circuitx.builtin.planted.design import Circuit, Design
from circuitx.graph import INPUT, LOGITS, head_node
from circuitx.tasks.colored_objects import COLORS, OBJECTS, ColoredObjectsTask
from circuitx.tasks.ioi import NAMES, IOITask

N_NAMES = 24
N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS = 5, 4, 320, 96
PT, DT, IND, SI = (0, 1), (0, 3), (1, 2), (2, 1)
NM, CM, NNM = (3, 0), (3, 2), (3, 3)
BNM, BCM = (4, 1), (4, 3)
NM_GAIN, NNM_GAIN, BNM_GAIN = 4.0, -1.2, 2.5
CM_GAIN, BCM_GAIN = 6.0, 4.0


def entity_words(colored: bool) -> tuple[list[str], list[str], list[str]]:
    """(names, colours, objects) the model knows as entities."""
    names = list(NAMES[:N_NAMES])
    return names, (list(COLORS) if colored else []), (list(OBJECTS) if colored else [])


def build(colored: bool, hard: bool, seed: int) -> tuple[Design, dict[str, Circuit]]:
    """The planted model (IOI, plus colored objects when ``colored``) and its circuits."""
    names, colors, objects = entity_words(colored)
    entities = [*names, *colors, *objects]
    words = IOITask().vocabulary()
    if colored:
        words += ColoredObjectsTask().vocabulary()
    words = [w for w in dict.fromkeys(words) if w not in NAMES or w in names]
    d = Design(words, N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS, seed)
    n_ent = len(entities)
    for group in ("ent", "prev", "dupent", "sinh", "out"):
        d.add(group, n_ent)
    for flag in ("name", "color", "prevcolor", "dup", "dtpos"):
        d.add(flag)
    ent = d.group("ent")
    for i, word in enumerate(entities):
        d.token_embed[d.token(word), ent[i]] = 1.0
        if i < len(names):
            d.token_embed[d.token(word), d.features["name"]] = 1.0
        elif i < len(names) + len(colors):
            d.token_embed[d.token(word), d.features["color"]] = 1.0
    out = d.group("out")
    name_ids = list(range(len(names)))
    color_ids = list(range(len(names), len(names) + len(colors)))
    object_ids = list(range(len(names) + len(colors), n_ent))
    for i in name_ids:
        d.unembed[out[i], d.token(names[i])] = 1.0
    for i in color_ids:
        d.unembed[out[i], d.token(entities[i].capitalize())] = 1.0

    # previous token: copies the entity before into prev, and flags a colour there
    d.offset(*PT, back=1, sharpness=8.0)
    d.copy(*PT, "ent", "prev", 1.0)
    d.write(*PT, d.vec("color"), d.vec("prevcolor"))
    # duplicate token: mean position of the copies of my entity (BOS: 1)
    d.match(*DT, "ent", "ent", 30.0)
    d.sink(*DT, 10.0)
    d.write(*DT, d.vec("x", "bos"), d.vec("dtpos"))
    d.copy(*DT, "ent", "dupent", 0.5)
    # induction: attends to the token after an earlier copy of my entity; writes 1 there
    d.match(*IND, "ent", "prev", 30.0)
    d.sink(*IND, 10.0)
    d.write(*IND, d.const() - d.vec("bos"), d.vec("dup"))
    d.copy(*IND, "prev", "dupent", 0.5)
    # S-inhibition: the most recent duplicated entity, names first, into sinh
    n = float(N_POSITIONS)
    key = d.vec(
        ("dup", 8.0), ("x", 3.0 * n + 0.6 * n), ("dtpos", -3.0 * n), ("name", 4.0), ("bos", 3.0 * n)
    )
    d.score(*SI, d.const(), key)
    d.sink(*SI, 14.0, recency=0.6)
    d.copy(*SI, "dupent", "sinh", 1.0)

    def name_mover(head: tuple[int, int], gain: float, suppress: float = 0.0) -> None:
        d.score(*head, d.const(), d.vec(("name", 20.0)))
        # main movers: graded by how sure SI is; the backup: S fully suppressed
        d.match(*head, "sinh", "ent", -20.0 if suppress else -6.0, only=name_ids)
        if suppress:
            d.match(*head, "out", "ent", -suppress, only=name_ids)
        d.sink(*head, 12.0 if suppress else 10.0)
        d.copy(*head, "ent", "out", gain, only=name_ids)

    def color_mover(head: tuple[int, int], gain: float, suppress: float = 0.0) -> None:
        d.match(*head, "sinh", "ent", 10.0, only=object_ids)
        d.score(*head, d.const(), d.vec(("prevcolor", 10.0)))
        if suppress:
            d.match(*head, "out", "prev", -suppress, only=color_ids)
        d.sink(*head, 14.0)
        d.copy(*head, "prev", "out", gain, only=color_ids)

    name_mover(NM, NM_GAIN)
    name_mover(NNM, NNM_GAIN)
    if hard:
        name_mover(BNM, BNM_GAIN, suppress=6.0)
    if colored:
        color_mover(CM, CM_GAIN)
        if hard:
            color_mover(BCM, BCM_GAIN, suppress=4.0)
    reads = [*ent, *d.group("prev"), *d.group("sinh"), d.features["x"]]
    d.add_distractors(reads, gain=4.0 if hard else 1.0)

    return d, circuits(colored, hard)


def circuits(colored: bool, hard: bool) -> dict[str, Circuit]:
    """The ground truth by task: IOI, and colored objects when ``colored``."""
    found = {"ioi": _ioi_circuit(hard)}
    if colored:
        found["colored-objects"] = _colored_circuit(hard)
    return found


def _shared(circuit: Circuit, with_pt: bool) -> None:
    """DT, IND and SI with their edges (both tasks use them), and PT where it carries
    something that differs between clean and corrupted prompts (IOI's names; in colored
    objects the scene, and so PT's output, is the same in both)."""
    dt = circuit.node(head_node(*DT), "duplicate token")
    ind = circuit.node(head_node(*IND), "induction")
    si = circuit.node(head_node(*SI), "s-inhibition")
    if with_pt:
        pt = circuit.node(head_node(*PT), "previous token")
        circuit.edge(INPUT, pt, "qkv")
        circuit.edge(pt, ind, "kv")
    circuit.edge(INPUT, dt, "qkv")
    circuit.edge(INPUT, ind, "qkv")
    circuit.edge(INPUT, si, "qk")
    circuit.edge(dt, si, "kv")
    circuit.edge(ind, si, "kv")


def _ioi_circuit(hard: bool) -> Circuit:
    circuit = Circuit()
    _shared(circuit, with_pt=True)
    movers = [(head_node(*NM), "name mover"), (head_node(*NNM), "negative name mover")]
    if hard:
        movers.append((head_node(*BNM), "backup name mover"))
    circuit.readers(movers, [(head_node(*SI), "q"), (INPUT, "kv")], LOGITS)
    if hard:
        circuit.backup(head_node(*BNM), [head_node(*NM), head_node(*NNM)])
    return circuit


def _colored_circuit(hard: bool) -> Circuit:
    circuit = Circuit()
    _shared(circuit, with_pt=False)
    movers = [(head_node(*CM), "color mover")]
    if hard:
        movers.append((head_node(*BCM), "backup color mover"))
    circuit.readers(movers, [(head_node(*SI), "q"), (INPUT, "k")], LOGITS)
    if hard:
        circuit.backup(head_node(*BCM), [head_node(*CM)])
    return circuit
