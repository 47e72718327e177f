"""Planted greater-than model.

Two-digit tokens carry their tens and units digits as one-hot features. The circuit:

- year encoder (MLP 0): turns the digits of every two-digit token into the scalar
  ``yval`` = YY / 100 (neurons in GELU's linear range, minus a constant neuron);
- two year heads (``YH``, layer 1): from the last token, attend four tokens back (to YY)
  and each copy half of ``yval`` into ``year`` (and, for the backup head, the digits);
- comparator (MLP 2): for every candidate t a pair of neurons gives the step [YY >= t];
  it writes -12 on t's output feature where YY >= t. The unembedding gives every
  two-digit token a base logit of 8, so t > YY gets 8 and t <= YY gets -4.

The hard variant adds a backup year head (layer 2) that attends to YY unless the digits
the year heads wrote match YY's, so it takes over when a year head is patched away.
"""

from __future__ import annotations

import torch

from circuitx.builtin.planted.design import Circuit, Design
from circuitx.graph import INPUT, LOGITS, head_node, mlp_node
from circuitx.tasks.greater_than import GreaterThanTask

N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS = 4, 4, 256, 32
YH_A, YH_B, BYH = (1, 0), (1, 3), (2, 1)
ENCODER, COMPARATOR = 0, 2
BACK = 4  # YY sits four tokens before the last token: "YY to the year XX"
STEP = 10.0  # comparator steepness


def build(hard: bool, seed: int) -> tuple[Design, dict[str, Circuit]]:
    d = Design(GreaterThanTask().vocabulary(), N_LAYERS, N_HEADS, D_MODEL, N_POSITIONS, seed)
    tens, units = d.add("tens", 10), d.add("units", 10)
    d.add("yval")
    d.add("year")
    out = d.add("out", 100)
    d.add("tens_w", 10)
    d.add("units_w", 10)
    for t in range(100):
        token = d.token(f"{t:02d}")
        d.token_embed[token, tens[t // 10]] = 1.0
        d.token_embed[token, units[t % 10]] = 1.0
        d.unembed[out[t], token] = 1.0
        d.unembed[:, token] += d.const(8.0)  # base logit 8

    # year encoder: yval = (10 tens + units) / 100, via two neurons in GELU's linear range
    digits = [(f"tens[{i}]", i / 10) for i in range(10)] + [
        (f"units[{i}]", i / 100) for i in range(10)
    ]
    w_in = torch.stack([d.vec(*digits), torch.zeros(d.width)], 1)
    w_out = torch.stack([d.vec(("yval", 1.0)), d.vec(("yval", -1.0))], 0)
    d.neurons(ENCODER, w_in, torch.tensor([5.0, 5.0]), w_out)
    # year heads
    for head in (YH_A, YH_B):
        d.offset(*head, back=BACK, sharpness=8.0)
        d.write(*head, d.vec("yval"), d.vec(("year", 0.5)))
        if hard:
            d.copy(*head, "tens", "tens_w", 0.5)
            d.copy(*head, "units", "units_w", 0.5)
    if hard:
        d.offset(*BYH, back=BACK, sharpness=40.0, sink=12.0)
        d.score(*BYH, d.const(26.0), d.const() - d.vec("bos"))  # +26 on every token but BOS
        d.match(*BYH, "tens_w", "tens", -12.0)
        d.match(*BYH, "units_w", "units", -12.0)
        d.write(*BYH, d.vec("yval"), d.vec(("year", 0.5)))
    # comparator: step [100 year >= t] from two neurons, written as -12 on out[t]
    w_in = torch.stack([d.vec(("year", 100 * STEP))] * 200, 1)
    b_in = torch.tensor([STEP * (1 - t) for t in range(100)] + [-STEP * t for t in range(100)])
    w_out = torch.zeros(200, d.width)
    for t in range(100):
        w_out[t, out[t]] = -12.0 / STEP
        w_out[100 + t, out[t]] = 12.0 / STEP
    d.neurons(COMPARATOR, w_in, b_in, w_out)
    # the comparator writes ~10x more than a head; distractors are scaled to match it
    d.add_distractors([*tens, *units, d.features["x"]], gain=24.0 if hard else 6.0)
    return d, circuits(hard)


def circuits(hard: bool) -> dict[str, Circuit]:
    return {"greater-than": _circuit(hard)}


def _circuit(hard: bool) -> Circuit:
    circuit = Circuit()
    encoder = circuit.node(mlp_node(ENCODER), "year encoder")
    comparator = circuit.node(mlp_node(COMPARATOR), "comparator")
    circuit.edge(INPUT, encoder)
    heads = [(head_node(*YH_A), "year head"), (head_node(*YH_B), "year head")]
    if hard:
        heads.append((head_node(*BYH), "backup year head"))
    circuit.readers(heads, [(INPUT, "qk"), (encoder, "v")], comparator)
    if hard:
        circuit.edge(INPUT, head_node(*BYH), "k")
        circuit.backup(head_node(*BYH), [head_node(*YH_A), head_node(*YH_B)])
    circuit.edge(comparator, LOGITS)
    return circuit
