"""Planted IOI on a Llama model: RMSNorm, rotary positions, gated MLPs, grouped-query
attention (two key/value groups of two query heads).

The heads and the circuit are :mod:`entity`'s IOI ones (previous token, duplicate token,
induction, S-inhibition, name mover, negative name mover), rebuilt where the GPT-2 design
used position features, which a rotary model has not got:

- previous token (``PT``): a rotary profile peaked one token back;
- duplicate token (``DT``): attends to *earlier* copies of its own entity (a rotary dip
  keeps it off itself) and writes a ``dupdt`` flag, 0 when it finds none (BOS);
- S-inhibition (``SI``): attends to the duplicated name, flagged by DT and induction, with no
  recency term (IOI prompts hold one duplicated name).

Each circuit head's group-mate is a distractor that echoes its keys and values.
"""

from __future__ import annotations

from circuitx.builtin.planted.design import Circuit
from circuitx.builtin.planted.entity import DT, IND, NM, NNM, PT, SI, _ioi_circuit
from circuitx.builtin.planted.rotary import RotaryDesign
from circuitx.tasks.ioi import NAMES, IOITask

N_NAMES = 16
N_LAYERS, N_HEADS, N_KV_HEADS, D_MODEL, N_POSITIONS = 5, 4, 2, 320, 32
ROPE_THETA, FAST_PAIRS = 1e4, 14  # Llama-2's rotary base; the pairs positional profiles use
NM_GAIN, NNM_GAIN = 4.0, -1.2


def build(hard: bool, seed: int) -> tuple[RotaryDesign, dict[str, Circuit]]:
    """The planted Llama IOI model and its circuit (no hard variant)."""
    if hard:
        raise ValueError("planted-ioi-llama has no hard variant")
    names = list(NAMES[:N_NAMES])
    words = [w for w in dict.fromkeys(IOITask().vocabulary()) if w not in NAMES or w in names]
    d = RotaryDesign(
        words, N_LAYERS, N_HEADS, N_KV_HEADS, D_MODEL, N_POSITIONS, seed, ROPE_THETA, FAST_PAIRS
    )
    for group in ("ent", "prev", "dupent", "sinh", "out"):
        d.add(group, len(names))
    for flag in ("name", "dup", "dupdt"):
        d.add(flag)
    ent, out = d.group("ent"), d.group("out")
    for i, name in enumerate(names):
        d.token_embed[d.token(name), ent[i]] = 1.0
        d.token_embed[d.token(name), d.features["name"]] = 1.0
        d.unembed[out[i], d.token(name)] = 1.0
    found = d.const() - d.vec("bos")  # 1 on any token but BOS: "the head found something"

    d.positional(*PT, distance=1, margin=12.0)
    d.copy(*PT, "ent", "prev", 1.0)
    d.match(*DT, "ent", "ent", 30.0)
    d.positional(*DT, distance=0, margin=30.0, dip=True)
    d.sink(*DT, 10.0)
    d.write(*DT, found, d.vec("dupdt"))
    d.copy(*DT, "ent", "dupent", 0.5)
    d.match(*IND, "ent", "prev", 30.0)
    d.sink(*IND, 10.0)
    d.write(*IND, found, d.vec("dup"))
    d.copy(*IND, "prev", "dupent", 0.5)
    d.score(*SI, d.const(), d.vec(("dup", 8.0), ("dupdt", 8.0), ("name", 2.0)))
    d.sink(*SI, 10.0)
    d.copy(*SI, "dupent", "sinh", 1.0)
    for head, gain in ((NM, NM_GAIN), (NNM, NNM_GAIN)):
        d.score(*head, d.const(), d.vec(("name", 20.0)))
        d.match(*head, "sinh", "ent", -6.0)
        d.sink(*head, 10.0)
        d.copy(*head, "ent", "out", gain)
    d.add_distractors([*ent, *d.group("prev"), *d.group("sinh")], gain=1.0)
    return d, circuits(hard)


def circuits(hard: bool) -> dict[str, Circuit]:
    """The ground truth: the IOI circuit of :mod:`entity`, on the same heads."""
    return {"ioi": _ioi_circuit(hard)}
