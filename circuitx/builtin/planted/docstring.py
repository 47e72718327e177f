"""Planted docstring model.

Parameter names are entities (one feature each; description nouns are not). The circuit:

- two-back head (``P2``, layer 0): copies the entity two tokens back into ``prev2`` (in
  the def, a parameter's previous parameter, skipping the comma);
- doc-name head (``DN``, layer 1): from the last token, attends to the most recent
  parameter name (the last documented one, B) and copies it into ``qb``;
- mover (``M``, layer 2): attends to the parameter whose ``prev2`` matches ``qb`` (C, the
  one after B in the def) and writes it into ``out``, which the unembedding reads.

The hard variant adds a backup mover (layer 3) with M's attention, suppressed when
``out`` already holds the name it would write.
"""

from __future__ import annotations

from circuitx.builtin.planted.design import Circuit, Design
from circuitx.graph import INPUT, LOGITS, head_node
from circuitx.tasks.docstring import NAMES, NOUNS, DocstringTask

N_NAMES = 30
N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS = 4, 4, 256, 64
P2, DN, M, BM = (0, 2), (1, 1), (2, 3), (3, 0)
M_GAIN, BM_GAIN = 6.0, 4.0


def build(hard: bool, seed: int) -> tuple[Design, dict[str, Circuit]]:
    names = [n for n in NAMES if n not in NOUNS][:N_NAMES]
    words = [w for w in DocstringTask().vocabulary() if w not in NAMES or w in names]
    d = Design(words, N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS, seed)
    ent = d.add("ent", len(names))
    for group in ("prev2", "qb", "out"):
        d.add(group, len(names))
    d.add("name")
    out = d.group("out")
    for i, word in enumerate(names):
        d.token_embed[d.token(word), ent[i]] = 1.0
        d.token_embed[d.token(word), d.features["name"]] = 1.0
        d.unembed[out[i], d.token(word)] = 1.0

    d.offset(*P2, back=2, sharpness=8.0)
    d.copy(*P2, "ent", "prev2", 1.0)
    d.score(*DN, d.const(), d.vec(("name", 20.0), ("x", 2.0 * N_POSITIONS)))
    d.sink(*DN, 0.0, recency=2.0)
    d.copy(*DN, "ent", "qb", 1.0)

    def mover(head: tuple[int, int], gain: float, suppress: float = 0.0) -> None:
        d.match(*head, "qb", "prev2", 10.0)
        d.score(*head, d.const(), d.vec(("name", 10.0)))
        if suppress:
            d.match(*head, "out", "ent", -suppress)
        d.sink(*head, 14.0)
        d.copy(*head, "ent", "out", gain)

    mover(M, M_GAIN)
    if hard:
        mover(BM, BM_GAIN, suppress=3.0)
    d.add_distractors([*ent, *d.group("prev2"), d.features["x"]], gain=4.0 if hard else 1.0)
    return d, circuits(hard)


def circuits(hard: bool) -> dict[str, Circuit]:
    return {"docstring": _circuit(hard)}


def _circuit(hard: bool) -> Circuit:
    circuit = Circuit()
    p2 = circuit.node(head_node(*P2), "previous parameter")
    dn = circuit.node(head_node(*DN), "documented name")
    circuit.edge(INPUT, p2, "qkv")
    circuit.edge(INPUT, dn, "qkv")
    movers = [(head_node(*M), "mover")] + ([(head_node(*BM), "backup mover")] if hard else [])
    circuit.readers(movers, [(dn, "q"), (p2, "k"), (INPUT, "kv")], LOGITS)
    if hard:
        circuit.backup(head_node(*BM), [head_node(*M)])
    return circuit
