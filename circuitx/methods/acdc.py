"""ACDC: automatic circuit discovery (Conmy et al. 2023).

Receivers are visited from the output backwards (the logits, then each layer's MLP and
its heads' v, k and q inputs, latest first), and each incoming edge is tried in turn,
latest sender first: it is patched on top of the edges removed so far, and it stays
removed when the metric moves by less than ``tau``. A receiver whose node has no
outgoing edge left is skipped and all its incoming edges are removed untried.

The change is measured as |m(before) - m(after)| / |m(clean) - m(ablated)|, so ``tau``
is a share of the full clean - ablated effect whatever the metric (``--metric kl`` for
ACDC's default KL divergence): ACDC's ``--abs-value-threshold`` mode. With ``--tau-sign
signed`` it is the signed change, (m(before) - m(after)) / (m(clean) - m(ablated)), how
far toward the ablated run the removal moves the output, as the authors' sweeps compare
it: an edge whose removal brings the output nearer the clean run's is removed however far.
An edge's score is the change it made when tried (0 when never tried; signed, a negative
change scores 0, as such an edge is out at every tau), so keeping the edges with score >=
tau is ACDC's circuit.

On an accelerator the trials of a receiver's next edges run side by side in one pass
(as many as the memory plan stacks), each assuming the ones before it removed, and are
committed in ACDC's order up to the first edge that stays (see :func:`prune`): the same
circuit as one trial at a time. On a CPU, where a stacked trial costs what its own pass
does, they run one at a time.

With ``--input-tests on`` a receiver's whole input is tried before its edges, as the
authors' code did for the paper: its graph holds each head's q, k and v input and each
MLP's input as nodes of their own, joined to the head or MLP by an edge ACDC tries like
any other (ArthurConmy/Automatic-Circuit-Discovery: the ``DIRECT_COMPUTATION`` edges;
visited after the MLP's node, for every head input of a layer before any edge into them,
v, k, q, latest head first). Since May 2023 their code joins an MLP's input to the MLP
by an edge it never tries (``PLACEHOLDER``), so only the heads' inputs are tried whole:
``--input-tests heads``. Patching that edge patches all of the input at once; when the
metric moves by less than ``tau`` the input's edges are all removed untried, and each
scores that change (below ``tau``, so out of the circuit; the authors' code gives them
none): the edges of an input that moved the metric a little rank above those of one
that moved it not at all. auto-circuit's ACDC has no such test (``--input-tests off``).

A change smaller than the metric's resolution (:func:`circuitx.engine.metric_change`)
is rounding, not an effect, and scores 0: edges that do nothing tie, however and wherever
the pass is computed.
"""

from __future__ import annotations

import torch

from circuitx.engine import Engine, metric_change, metric_resolution
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores
from circuitx.names import LOGITS
from circuitx.progress import Advance, no_progress


class ACDC(Method):
    name = "acdc"
    title = "ACDC: greedy edge pruning from the output backwards, threshold tau"
    granularity = "edge"
    scores_edges = True
    default_threshold = 0.01  # replaced by tau: the circuit is the edges ACDC keeps
    scores_positions = True
    options = (
        Option(
            "tau",
            "float",
            0.01,
            "drop an edge whose patching moves the metric by less than this share of the "
            "clean - ablated gap",
            low=0,
        ),
        Option(
            "input_tests",
            "str",
            "on",
            "try each MLP's and head q/k/v input whole before its edges, as the authors' "
            "ACDC did for the paper, and drop all its edges when that moves the metric "
            "less than tau (heads: the heads' inputs only, as their code since May 2023)",
            choices=("on", "heads", "off"),
        ),
        Option(
            "tau_sign",
            "str",
            "absolute",
            "compare tau with the metric's absolute change, or (signed, the authors' sweeps) "
            "with how far toward the ablated run it moves, removing an edge that moves it "
            "back however far",
            choices=("absolute", "signed"),
        ),
    )

    reported_facts = (
        ("acdc_edges_tried", "ACDC edges tried"),
        ("acdc_edges_kept", "ACDC edges kept"),
        ("acdc_inputs_tried", "ACDC inputs tried whole"),
    )

    even_steps = False  # see Method.even_steps

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return len(layout.edges)

    def selection_threshold(self, run: MethodRun) -> float:
        return float(run.options["tau"])

    def default_circuit(self) -> str:
        return "the edges ACDC keeps (|score| >= --tau)"

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        # on a CPU a stacked trial costs what its own pass does: no speculation there
        width = 1 if engine.model.device.type == "cpu" else engine.masks_per_pass
        tau, tests = float(run.options["tau"]), run.options["input_tests"]
        signed = run.options["tau_sign"] == "signed"
        scores, mask, tried, inputs_tried = prune(engine, tau, width, run.advance, tests, signed)
        kept = int((mask * engine.layout.valid).sum())
        facts = {"acdc_edges_tried": tried, "acdc_edges_kept": kept}
        if tests != "off":
            facts["acdc_inputs_tried"] = inputs_tried
        return Scores.of_edges(scores, facts=facts)


def prune(
    engine: Engine,
    tau: float,
    trials_per_pass: int = 1,
    advance: Advance = no_progress,
    input_tests: str = "off",
    signed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """ACDC's pruning: the edge scores [n_senders, n_receivers], the edge mask it leaves,
    the number of edges tried and the number of whole inputs tried (``input_tests``: on,
    heads or off, as the option; ``signed``: tau against the signed change; see the
    module's docstring).

    With ``trials_per_pass`` > 1 the trials of a receiver's next edges run side by side,
    speculatively: trial j assumes the j - 1 edges before it in ACDC's order are removed
    (most are). They are committed in that order up to the first edge that stays, and
    the trials after it, made on a wrong assumption, are run again. The result is the
    sequential algorithm's; the stacked trials only pay on a device with arithmetic to
    spare."""
    layout = engine.layout
    valid = layout.valid
    mask = torch.ones(layout.n_senders, layout.n_receivers)
    scores = torch.zeros(layout.n_senders, layout.n_receivers, dtype=engine.model.work_dtype)
    gap, resolution = float(engine.gap), metric_resolution(engine.model)

    def change_of(before: float, after: float) -> float:
        """The change tau is compared with, as a share of the clean - ablated gap."""
        moved = float(metric_change(before, after, resolution)) / gap
        return moved if signed else abs(moved)

    current = float(engine.edge_mask_metrics(mask.unsqueeze(0))[0])
    tried = inputs_tried = 0
    tested: set[int] = set()  # receivers whose whole input was tried
    dropped: set[int] = set()  # those whose input test removed every edge

    def disconnected(receiver: int) -> bool:
        node, _ = layout.receivers[receiver]
        sender = layout.sender(node)
        return not bool((mask[sender] * valid[sender]).any())

    for receiver in reversed(range(layout.n_receivers)):
        readable = layout.readable(receiver)
        node, _ = layout.receivers[receiver]
        if node != LOGITS:
            if disconnected(receiver):
                mask[:readable, receiver] = 0.0
                advance(int(valid[:readable, receiver].sum()))
                continue
            mlp_input = layout.receivers[receiver][1] is None
            tests_it = input_tests == "on" or (input_tests == "heads" and not mlp_input)
            if tests_it and receiver not in tested:
                for whole in _input_group(layout, receiver):
                    tested.add(whole)
                    if disconnected(whole):
                        continue  # removed untried when its turn comes
                    senders = layout.readable(whole)
                    trial = mask.clone()
                    trial[:senders, whole] = 0.0
                    metric = float(engine.edge_mask_metrics(trial.unsqueeze(0))[0])
                    inputs_tried += 1
                    change = change_of(current, metric)
                    if change < tau:  # its edges go untried, each scored the input's change
                        mask[:senders, whole], current = 0.0, metric
                        scores[:senders, whole] = max(change, 0.0) * valid[:senders, whole]
                        dropped.add(whole)
            if receiver in dropped:
                advance(int(valid[:readable, receiver].sum()))
                continue
        # latest sender first (an edge of a circuit over positions: the valid ones)
        waiting = valid[:readable, receiver].nonzero().flatten().flip(0).tolist()
        while waiting:
            batch = waiting[:trials_per_pass]
            trials = mask.expand(len(batch), -1, -1).clone()
            for j, sender in enumerate(batch):
                trials[j:, sender, receiver] = 0.0
            patched = engine.edge_mask_metrics(trials).tolist()
            for sender, metric in zip(batch, patched):
                waiting.pop(0)
                change = change_of(current, metric)
                scores[sender, receiver] = max(change, 0.0)
                tried += 1
                advance(1)
                if change >= tau:  # it stays; the later trials assumed it gone
                    break
                mask[sender, receiver] = 0.0
                current = metric
    return scores, mask, tried, inputs_tried


def _input_group(layout: Layout, receiver: int) -> list[int]:
    """The receivers whose whole inputs the authors' ACDC tries when it reaches
    ``receiver``, in its order: an MLP's input alone; for a head input, every head input
    of that layer (v, k, q, latest head first), all before any edge into them."""
    if layout.receivers[receiver][1] is None:
        return [receiver]
    layer = layout.receiver_layer(receiver)
    return [
        other
        for other in reversed(range(receiver + 1))
        if layout.receiver_layer(other) == layer and layout.receivers[other][1] is not None
    ]
