"""Discrete-SAE code overlap (O'Neill & Bui 2024; authors' code charlieoneill11/sae-circuits).

Positive examples are the task's clean prompts (the model can predict the answer), negative
ones its corrupted prompts (it cannot). Each component's write to the residual stream
(a head's z @ W_O, an MLP's output) is averaged over the prompt's tokens. One sparse
autoencoder, shared by every component as in the authors' code, is trained on the vectors
of ``n_examples`` prompts drawn from positives and negatives together; a vector's code is
the index of its largest hidden unit. ``sae_restarts`` autoencoders, each of its own seed
and draw of examples, score apart and their scores are averaged (defaults 5 examples and
3 autoencoders: measured on the clean planted models, node AUC 0.96-1.00 at every one of
5 seeds, where the authors' 10 examples and one autoencoder gave 0.83-1.00 on average).
A component scores the number of codes it shows on positives and never on negatives; an
ordered pair of components scores the number of code pairs they show together on
positives and never on negatives. Scores are divided by the number of positive prompts.

The autoencoder follows the authors' (their ``src/sae.py``, ``src/train.py``): a bias tied
before the encoder and after the decoder, ReLU codes, unit-norm feature vectors kept so by
projecting their gradients, loss MSE + l1 * mean L1 norm of the codes, full-batch Adam.
One deviation: the authors' decoder normalises each output coordinate's row over the
features (a quirk of the library it came from); here each feature's decoder vector is
unit-norm, as for the encoder.

Graph scores. Heads and MLPs get their node score. An edge between two components gets
the pair's co-occurrence score; an edge from the input, or to the logits, which have no
codes, gets the score of the component at its other end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy
import torch

from circuitx.engine import Engine
from circuitx.errors import CircuitxError
from circuitx.layout import Layout
from circuitx.methods.base import Method, MethodRun, Option, Scores, to_host
from circuitx.models import Model
from circuitx.patching import PatchingEngine
from circuitx.progress import Advance, no_progress

SAE_INPUTS = ("standardised", "raw")
NODE_SCORES = ("positive-share", "unique-codes", "co-occurrence")
SAE_POSITIONS = ("mean", "named", "all")
PROGRESS_EVERY = 10  # training steps per progress step
DEFAULT_CODES = 200  # the authors' hidden size
VALUES_PER_BLOCK = 2**24  # code values made at once when counting them


@dataclass
class SparseAutoencoder:
    """Encoder and decoder feature vectors [n_codes, d] (unit norm), encoder bias [n_codes]
    and the bias tied before the encoder and after the decoder [d]."""

    encoder: torch.Tensor
    encoder_bias: torch.Tensor
    decoder: torch.Tensor
    tied_bias: torch.Tensor

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu((x - self.tied_bias) @ self.encoder.T + self.encoder_bias)

    def reconstruct(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.decoder + self.tied_bias

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer code of each vector: its largest hidden unit (0 when none is active)."""
        return self.hidden(x).argmax(-1)


def train_sae(
    vectors: torch.Tensor,
    n_codes: int,
    steps: int,
    l1: float,
    lr: float,
    generator: torch.Generator,
    advance: Advance = no_progress,
) -> SparseAutoencoder:
    """Train a sparse autoencoder on ``vectors`` [N, d]: every vector in every step."""
    d = vectors.shape[-1]
    device = vectors.device

    def unit_rows() -> torch.Tensor:
        weight = torch.randn(n_codes, d, generator=generator)
        return (weight / weight.norm(dim=-1, keepdim=True)).to(device)

    bound = 1 / math.sqrt(d)
    encoder_bias = (torch.rand(n_codes, generator=generator) * 2 - 1) * bound
    sae = SparseAutoencoder(unit_rows(), encoder_bias.to(device), unit_rows(), vectors.new_zeros(d))
    params = [sae.encoder, sae.encoder_bias, sae.decoder, sae.tied_bias]
    for param in params:
        param.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=lr)
    features = (sae.encoder, sae.decoder)
    for step in range(steps):
        with torch.no_grad():
            for weight in features:
                weight /= weight.norm(dim=-1, keepdim=True)
        hidden = sae.hidden(vectors)
        loss = torch.nn.functional.mse_loss(sae.reconstruct(hidden), vectors)
        loss = loss + l1 * hidden.abs().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():  # keep unit norm: no gradient along a feature vector
            for weight in features:
                weight.grad -= (weight.grad * weight).sum(-1, keepdim=True) * weight
        optimizer.step()
        if (step + 1) % PROGRESS_EVERY == 0:
            advance(1)
    with torch.no_grad():
        for weight in features:
            weight /= weight.norm(dim=-1, keepdim=True)
    for param in params:
        param.requires_grad_(False)
    return sae


def positive_only(
    positive: torch.Tensor,
    negative: torch.Tensor,
    space: int,
    per_example: bool,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per column of integer values [n, G] in [0, space): the values the positive rows show
    in that column and no negative row does; counted as distinct values, or
    (``per_example``) as the share of positive rows that show one. Returns [G].

    With ``transform`` the values are ``transform(rows)`` of the rows given (e.g. the
    pairs of :func:`code_pairs`), made a block of rows at a time."""
    transform = transform or (lambda rows: rows)
    groups = transform(positive[:1]).shape[1]
    offset = torch.arange(groups, device=positive.device) * space
    block = max(1, VALUES_PER_BLOCK // groups)

    def blocks(rows: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, len(rows), block):
            yield transform(rows[start : start + block]) + offset

    negative_values = torch.cat([values.unique() for values in blocks(negative)]).unique()
    if per_example:
        shown = sum((~torch.isin(values, negative_values)).sum(0) for values in blocks(positive))
        return shown.float() / len(positive)
    seen = torch.cat([values.unique() for values in blocks(positive)]).unique()
    unseen = seen[~torch.isin(seen, negative_values)]
    return torch.bincount(unseen // space, minlength=groups).float() / len(positive)


def code_pairs(codes: torch.Tensor, n_codes: int) -> torch.Tensor:
    """The joint code of every ordered pair of components at the same position: [n, P, C]
    -> [n, P * C * C] (P = 1: [n, C] works as [n, 1, C])."""
    if codes.dim() == 2:
        codes = codes.unsqueeze(1)
    return (codes.unsqueeze(3) * n_codes + codes.unsqueeze(2)).flatten(1)


def co_occurrence_ranking(pair_scores: torch.Tensor) -> torch.Tensor:
    """The authors' head ranking from pair scores [C, C]: how often each component is an
    end of the top quarter of ordered pairs (ties kept in index order). Returns [C]."""
    count = pair_scores.shape[0]
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=pair_scores.device)
    first, second = off_diagonal.nonzero(as_tuple=True)
    order = torch.sort(pair_scores[first, second], descending=True, stable=True).indices
    top = order[: count**2 // 4]
    ends = torch.cat([first[top], second[top]])
    return torch.bincount(ends, minlength=count)


def scaled(centred: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Centred vectors [n, C, d] over their components' root mean squared norms [1, C],
    times sqrt(d)."""
    return centred * (centred.shape[-1] ** 0.5 / spread.clamp_min(1e-12)).unsqueeze(-1)


Positions = Callable[[PatchingEngine], torch.Tensor] | None


def sae_positions(engine: Engine, mode: str) -> tuple[Positions, int]:
    """Which token positions a part's prompts are read at, [n, P] (None: the mean over
    tokens), and P: the task's named positions (``named``), or every position counted
    back from END as far as the shortest prompt reaches (``all``); a corrupted prompt is
    read where its clean twin is."""
    if mode == "mean":
        return None, 1
    if mode == "named":
        names = list(engine.data.positions)
        return lambda part: torch.stack([part.data.positions[k] for k in names], 1), len(names)
    shortest = int(engine.data.positions["END"].min()) + 1
    back = torch.arange(shortest - 1, -1, -1)
    return lambda part: part.data.positions["END"].unsqueeze(1).cpu() - back, shortest


def _vectors(part: PatchingEngine, positions: Positions) -> torch.Tensor:
    """A part's positives then negatives: each head's and MLP's write averaged over a
    prompt's tokens, or at each of its ``positions``, [2 n, C * P, d] (component-major;
    the input, sender 0, has no codes)."""
    caches = (part.clean_cache, part.corrupted_cache)
    if positions is None:
        return torch.cat([part.mean_writes(cache) for cache in caches])[:, 1:]
    at = positions(part)
    writes = torch.cat([part.writes_at(cache, at) for cache in caches])[:, 1:]
    return writes.flatten(1, 2)


def _as_written(vectors: torch.Tensor) -> torch.Tensor:
    return vectors


def _each_vector_block(
    engine: Engine, positions: Positions
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every part's vectors and their indices among all 2 n (positives, then negatives)."""
    n = engine.n_prompts
    for part, _ in engine.parts():
        start, stop = part.first_prompt, part.first_prompt + part.data.n_prompts
        index = torch.cat([torch.arange(start, stop), torch.arange(n + start, n + stop)])
        yield _vectors(part, positions), index


def restart_seed(seed: int, restart: int) -> int:
    """The seed of one autoencoder of ``--sae-restarts``: the run's own for the first."""
    if restart == 0:
        return seed
    return int(numpy.random.SeedSequence([seed, restart]).generate_state(1)[0])


def standardiser(
    blocks: Callable[[], Iterator[torch.Tensor]],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """What centres each component's vectors [n, C, d] on their mean over all prompts and
    scales them to a mean squared norm of d (a component that never varies becomes 0).
    ``blocks()`` goes over all the vectors in blocks (twice: the mean, then the spread),
    summed in float64."""
    count, total = 0, 0.0
    for vectors in blocks():
        total = total + vectors.double().sum(0)
        count += len(vectors)
    mean = (total / count).float()
    squares = 0.0
    for vectors in blocks():
        squares = squares + (vectors - mean).double().pow(2).sum(-1).sum(0)
    spread = (squares / count).sqrt().float().unsqueeze(0)
    return lambda vectors: scaled(vectors - mean, spread)


class SAE(Method):
    name = "sae"
    title = "Discrete-SAE code overlap: codes unique to positive examples (O'Neill & Bui)"
    granularity = "node"
    default_threshold = 0.2
    uses_negatives = True
    options = (
        Option(
            "n_examples",
            "int",
            5,
            "prompts (positive and negative together) each autoencoder is trained on",
            low=1,
        ),
        Option(
            "n_codes",
            "int",
            None,
            f"the autoencoder's codes (hidden size); by default {DEFAULT_CODES}, or as many "
            "as the vectors it is trained on where those are fewer",
            low=1,
        ),
        Option("sae_steps", "int", 500, "full-batch training steps", low=1),
        Option("sae_l1", "float", 0.05, "sparsity penalty", low=0),
        Option("sae_lr", "float", 1e-3, "Adam learning rate", low=0, low_open=True),
        Option(
            "sae_inputs",
            "str",
            "standardised",
            "each head's outputs centred and scaled to a common size, or as the model "
            "writes them (the authors')",
            choices=SAE_INPUTS,
        ),
        Option(
            "node_score",
            "str",
            "positive-share",
            "share of positive prompts whose code no negative shows, number of such codes "
            "(the authors' node score), or the authors' ranking by code-pair co-occurrence",
            choices=NODE_SCORES,
        ),
        Option(
            "sae_positions",
            "str",
            "mean",
            "what a component's vector is: its write averaged over the prompt's tokens (the "
            "authors'), or its writes at the task's named positions, or at every position, "
            "each (component, position) with codes of its own; a component scores its best "
            "position's score, a pair of components its best position's",
            choices=SAE_POSITIONS,
        ),
        Option(
            "sae_restarts",
            "int",
            3,
            "autoencoders trained with different seeds (and training examples); the scores "
            "are their mean, the spread over them is reported",
            low=1,
        ),
    )

    def check(self, model: Model, run: MethodRun) -> None:
        n_prompts, options = run.n_prompts, run.options
        n_examples, n_codes = options["n_examples"], options["n_codes"]
        components = model.n_layers * (model.n_heads + int(model.has_mlp))
        if n_examples > 2 * n_prompts:
            raise CircuitxError(
                f"--n-examples {n_examples} is more than the {2 * n_prompts} prompts "
                f"({n_prompts} positive, {n_prompts} negative); raise --n-prompts"
            )
        if n_codes is not None and not 1 <= n_codes <= n_examples * components:
            raise CircuitxError(
                f"--n-codes {n_codes} must be between 1 and the {n_examples * components} "
                f"vectors the autoencoder is trained on ({n_examples} examples x "
                f"{components} heads and MLPs)"
            )

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return run.options["sae_restarts"] * (run.options["sae_steps"] // PROGRESS_EVERY) + 1

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        options = run.options
        components = engine.layout.n_senders - 1
        positions, count = sae_positions(engine, options["sae_positions"])
        units = components * count
        n_codes = options["n_codes"] or min(DEFAULT_CODES, options["n_examples"] * units)
        prepare = _as_written
        if options["sae_inputs"] == "standardised":
            prepare = standardiser(lambda: (v for v, _ in _each_vector_block(engine, positions)))
        restarts = range(options["sae_restarts"])
        found = self._overlaps(engine, run, positions, count, prepare, n_codes, restarts)
        node = torch.stack([f.node for f in found])
        pairs = torch.stack([f.pairs for f in found]).mean(0)
        spread = node.std(0) if len(found) > 1 else torch.zeros_like(node[0])
        fit = torch.stack([f.fit for f in found]).mean(0)
        host = to_host({"node": node.mean(0), "pairs": pairs, "spread": spread, "fit": fit})
        edges, nodes = _graph_scores(engine.layout, host["node"], host["pairs"])
        run.advance(1)
        explained, l0, dead, no_code, used = host["fit"].tolist()
        facts = {
            "sae_fraction_of_variance_explained": explained,
            "sae_l0": l0,
            "sae_dead_fraction": dead,  # units active on no training vector
            "sae_no_code_fraction": no_code,  # training vectors with no active unit
            "sae_codes": n_codes,
            "sae_codes_used": used,
            "sae_position_count": count,
            "sae_restart_spread_mean": float(host["spread"].mean()),
            "sae_restart_spread_max": float(host["spread"].max()),
            "negative_accuracy": engine.accuracy(corrupted=True),
        }
        return Scores.of_edges(edges, nodes, facts=facts)

    def _overlaps(
        self,
        engine: Engine,
        run: MethodRun,
        positions: Positions,
        count: int,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        n_codes: int,
        restarts: Sequence[int],
    ) -> list[Overlap]:
        """Train one autoencoder per restart (seeded by the run's seed and the restart) on
        its draw of examples, and score every component and pair of components by its
        codes. Two passes over the prompts' vectors, whatever the number of restarts:
        one gathers every draw, one codes every vector with every autoencoder."""
        options, n = run.options, engine.n_prompts
        units, device = (engine.layout.n_senders - 1) * count, engine.model.device
        generators = [torch.Generator().manual_seed(restart_seed(run.seed, k)) for k in restarts]
        draws = [torch.randperm(2 * n, generator=g)[: options["n_examples"]] for g in generators]
        shape = (len(draws), len(draws[0]), units, engine.model.d_model)
        chosen = torch.empty(shape, device=device)
        for vectors, index in _each_vector_block(engine, positions):
            for k, examples in enumerate(draws):
                found = torch.isin(examples, index)
                at = torch.searchsorted(index, examples[found])  # index is ascending
                chosen[k, found.to(device)] = vectors[at.to(device)]
        autoencoders, fits = [], []
        for k, generator in enumerate(generators):
            training = prepare(chosen[k]).flatten(0, 1)
            sae = train_sae(
                training,
                n_codes,
                options["sae_steps"],
                options["sae_l1"],
                options["sae_lr"],
                generator,
                run.advance,
            )
            with torch.no_grad():
                hidden = sae.hidden(training)
                residual = (sae.reconstruct(hidden) - training).pow(2).sum()
                variance = (training - training.mean(0)).pow(2).sum()
            active = hidden > 0
            autoencoders.append(sae)
            fits.append(
                (
                    1 - residual / variance,
                    active.float().sum(-1).mean(),
                    (~active.any(0)).float().mean(),
                    (~active.any(-1)).float().mean(),
                )
            )
        codes = torch.empty(len(draws), 2 * n, units, dtype=torch.long, device=device)
        with torch.no_grad():
            for vectors, index in _each_vector_block(engine, positions):
                prepared = prepare(vectors)
                for k, sae in enumerate(autoencoders):
                    codes[k, index.to(device)] = sae.codes(prepared)
        return [
            _overlap(codes[k], count, n_codes, options["node_score"], fits[k])
            for k in range(len(draws))
        ]


def _overlap(
    codes: torch.Tensor, count: int, n_codes: int, node_score: str, fit: tuple[torch.Tensor, ...]
) -> Overlap:
    """One autoencoder's scores from its codes [2 n, C * P] (positives, then negatives)
    and its fit (fraction of variance explained, L0, dead and no-code fractions)."""
    n, components = len(codes) // 2, codes.shape[1] // count
    per_example = node_score == "positive-share"
    node = positive_only(codes[:n], codes[n:], n_codes, per_example)
    node = node.view(components, count).max(1).values  # a component's best position
    by_position = codes.view(2 * n, components, count).transpose(1, 2)  # [2n, P, C]
    pairs = positive_only(
        by_position[:n], by_position[n:], n_codes**2, per_example, lambda c: code_pairs(c, n_codes)
    )
    pairs = pairs.view(count, components, components).max(0).values.fill_diagonal_(0)
    if node_score == "co-occurrence":
        node = co_occurrence_ranking(pairs).float() / (2 * components)
    used = torch.tensor(float(codes.unique().numel()), device=codes.device)
    return Overlap(node, pairs, torch.stack([*fit, used]))


@dataclass
class Overlap:
    """One autoencoder's scores: components [C], ordered pairs [C, C], and its fit: the
    fraction of its training vectors' variance explained, its L0, the shares of its units
    active on none of them and of them with no active unit, and the codes used [5] (left
    on the device with the scores, for one transfer)."""

    node: torch.Tensor
    pairs: torch.Tensor
    fit: torch.Tensor


def _graph_scores(
    layout: Layout, node: torch.Tensor, pairs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge scores [n_senders, n_receivers] and node scores [n_senders] from component
    scores [C] and pair scores [C, C] (component i is sender i + 1)."""
    senders = torch.zeros(layout.n_senders, layout.n_senders)
    senders[1:, 1:] = pairs
    senders[0, 1:] = node  # input -> component
    node_scores = torch.cat([torch.zeros(1), node])
    owner = layout.receiver_owner
    edges = torch.empty(layout.n_senders, layout.n_receivers)
    into_node = owner >= 0
    edges[:, into_node] = senders[:, owner[into_node]]
    edges[:, ~into_node] = node_scores.unsqueeze(1)  # component -> logits
    return edges * layout.valid, node_scores
