"""Discrete-SAE code overlap (O'Neill & Bui 2024; authors' code charlieoneill11/sae-circuits).

Positive examples are the task's clean prompts (the model can predict the answer), negative
ones its corrupted prompts (it cannot). Each component's write to the residual stream
(a head's z @ W_O, an MLP's output) is averaged over the prompt's tokens. One sparse
autoencoder, shared by every component as in the authors' code, is trained on the vectors
of ``n_examples`` prompts drawn from positives and negatives together; a vector's code is
the index of its largest active unit, or "no code" (one past the units) where none is
active. ``sae_restarts`` autoencoders, each of its own seed and draw of examples, score
apart and their scores are averaged. A component scores the share of positive prompts
whose code no negative shows, less the share random halvings of the prompts give
(``above-chance``); an ordered pair of components scores the share of positive prompts
whose pair of codes no negative shows. The autoencoders' fit (variance explained on the
training vectors and held out, L0, dead units, vectors without a code) is reported, and
a run whose codes do not summarise the outputs is warned about (issue 30).

The autoencoder follows the authors' (their ``src/sae.py``, ``src/train.py``): a bias tied
before the encoder and after the decoder, ReLU codes, unit-norm feature vectors kept so by
projecting their gradients, loss MSE + l1 * mean L1 norm of the codes, full-batch Adam.
One deviation: the authors' decoder normalises each output coordinate's row over the
features (a quirk of the library it came from; ``sae_decoder_norm="output"``); here each
feature's decoder vector is unit-norm, as for the encoder.

With ``sae_components="heads"`` (the authors' configuration) only the heads' writes
are trained on and coded, and the MLPs score 0.

Graph scores. Heads and MLPs get their node score. An edge between two components gets
the pair's co-occurrence score; an edge from the input, or to the logits, which have no
codes, gets the score of the component at its other end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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
NODE_SCORES = ("above-chance", "positive-share", "unique-codes", "co-occurrence")
CHANCE_SPLITS = 20  # random halvings of the prompts that measure the share chance gives
SAE_POSITIONS = ("mean", "named", "all")
SAE_DECODER_NORMS = ("feature", "output")
SAE_COMPONENTS = ("heads-and-mlps", "heads")
WORST_EXPLAINED = 0.5  # a run below it is warned about
WORST_NO_CODE = 0.2  # a run with more training vectors without a code is warned about
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

    @property
    def no_code(self) -> int:
        """The code of a vector with no active unit: one past the units' indices."""
        return len(self.encoder)

    def codes(self, hidden: torch.Tensor) -> torch.Tensor:
        """The integer code of each vector of ``hidden`` units: its largest unit, or
        :attr:`no_code` where no unit is active (never the argmax of zeros)."""
        largest, unit = hidden.max(-1)
        return torch.where(largest > 0, unit, self.no_code)


def train_sae(
    vectors: torch.Tensor,
    n_codes: int,
    steps: int,
    l1: float,
    lr: float,
    generator: torch.Generator,
    advance: Advance = no_progress,
    decoder_norm: str = "feature",
) -> SparseAutoencoder:
    """Train a sparse autoencoder on ``vectors`` [N, d]: every vector in every step.
    ``decoder_norm`` ``output`` keeps each output coordinate's decoder weights over the
    features at unit norm (the authors' class) instead of each feature's vector."""
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
    unit_norm = ((sae.encoder, -1), (sae.decoder, 0 if decoder_norm == "output" else -1))

    def normalise() -> None:
        with torch.no_grad():
            for weight, dim in unit_norm:
                weight /= weight.norm(dim=dim, keepdim=True)

    for step in range(steps):
        normalise()
        hidden = sae.hidden(vectors)
        loss = torch.nn.functional.mse_loss(sae.reconstruct(hidden), vectors)
        loss = loss + l1 * hidden.abs().sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        with torch.no_grad():  # keep unit norm: no gradient along a unit-norm vector
            for weight, dim in unit_norm:
                weight.grad -= (weight.grad * weight).sum(dim, keepdim=True) * weight
        optimizer.step()
        if (step + 1) % PROGRESS_EVERY == 0:
            advance(1)
    normalise()
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


def chance_share(codes: torch.Tensor, space: int, generator: torch.Generator) -> torch.Tensor:
    """The positive share :func:`positive_only` gives each column of ``codes`` [2 n, G]
    when the sides do not matter: its mean over :data:`CHANCE_SPLITS` random halvings
    of the 2 n rows. Returns [G]."""
    n, total = len(codes) // 2, 0.0
    for _ in range(CHANCE_SPLITS):
        order = torch.randperm(2 * n, generator=generator).to(codes.device)
        total = total + positive_only(codes[order[:n]], codes[order[n:]], space, True)
    return total / CHANCE_SPLITS


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
    engine: Engine, positions: Positions, units: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every part's vectors (only ``units`` of them, where given) and their indices among
    all 2 n (positives, then negatives), in float32 whatever the model's dtype: the
    autoencoders train in float32."""
    n = engine.n_prompts
    for part, _ in engine.parts():
        start, stop = part.first_prompt, part.first_prompt + part.data.n_prompts
        index = torch.cat([torch.arange(start, stop), torch.arange(n + start, n + stop)])
        vectors = _vectors(part, positions)
        if units is not None:
            vectors = vectors[:, units.to(vectors.device)]
        yield vectors.float(), index


def check_codes(n_codes: int, n_examples: int, components: int, count: int, mlps: bool) -> None:
    """Refuse ``n_codes`` outside 1 to the vectors the autoencoder is trained on:
    ``n_examples`` prompts x ``components`` x ``count`` positions each."""
    vectors = n_examples * components * count
    if not 1 <= n_codes <= vectors:
        at = f" x {count} positions" if count > 1 else ""
        raise CircuitxError(
            f"--n-codes {n_codes} must be between 1 and the {vectors} vectors the "
            f"autoencoder is trained on ({n_examples} examples x {components} "
            f"{'heads and MLPs' if mlps else 'heads'}{at})"
        )


def coded_components(layout: Layout, which: str) -> torch.Tensor:
    """The components the autoencoder codes (each its sender's index less one): every
    head and MLP, or (``heads``) the heads alone."""
    chunks = [c for c in layout.chunks if c.heads or (c.kind == "mlp" and which != "heads")]
    return torch.cat([torch.arange(c.first, c.first + c.count) for c in chunks]) - 1


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
    scores_edges = True
    default_threshold = 0.1
    uses_negatives = True
    reads_ablation = False  # codes of clean and negative activations; nothing is patched
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
        Option("sae_l1", "float", 0.02, "sparsity penalty", low=0),
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
            "sae_decoder_norm",
            "str",
            "feature",
            "what is kept at unit norm in the decoder: each feature's vector, or each "
            "output coordinate's weights over the features (the authors' class)",
            choices=SAE_DECODER_NORMS,
        ),
        Option(
            "node_score",
            "str",
            "above-chance",
            "share of positive prompts whose code no negative shows, less the share random "
            "halvings of the prompts give (0 where a component's codes do not depend on "
            "the side); that share alone; the number of such codes (the authors' node "
            "score); or the authors' ranking by code-pair co-occurrence",
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
            "sae_components",
            "str",
            "heads-and-mlps",
            "whose writes the shared autoencoder is trained on and codes: every head's and "
            "MLP's, or the heads' alone (the authors'; the MLPs then score 0)",
            choices=SAE_COMPONENTS,
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

    reported_facts = (
        ("sae_fraction_of_variance_explained", "SAE variance explained"),
        ("sae_held_out_fraction_of_variance_explained", "SAE variance explained, held out"),
        ("sae_l0", "SAE L0 (active units)"),
        ("sae_dead_fraction", "SAE dead units (share)"),
        ("sae_no_code_fraction", "SAE inputs with no code (share)"),
        ("sae_scored_no_code_fraction", "SAE all vectors, no code (share)"),
        ("sae_codes", "SAE units"),
        ("sae_codes_used", "SAE units used as codes (mean)", 1),
        ("sae_position_count", "SAE positions coded per prompt"),
        ("sae_restart_spread_mean", "SAE node scores' spread over restarts (mean)"),
        ("sae_restart_spread_max", "SAE node scores' spread over restarts (max)"),
        ("negative_accuracy", "accuracy on the negative prompts"),
    )

    def warnings(self, facts: dict[str, Any]) -> list[str]:
        said = []
        node_score = facts.get("node_score")
        if (
            node_score not in (None, "above-chance")
            and facts.get("threshold") == self.default_threshold
        ):
            said.append(
                f"sae: the threshold {self.default_threshold:g} is for --node-score "
                f"above-chance; {node_score} scores are not measured from chance, and most "
                "components reach it: give --top-k or a --threshold of your own"
            )
        explained, no_code = (
            facts.get("sae_fraction_of_variance_explained"),
            facts.get("sae_no_code_fraction"),
        )
        if explained is None or no_code is None:
            return said
        if explained >= WORST_EXPLAINED and no_code <= WORST_NO_CODE:
            return said
        share = f"{explained:.0%}".replace("-0%", "0%")  # -0.3% is no variance explained
        return said + [
            f"sae: the autoencoders explain {share} of their training vectors' "
            f"variance and leave {no_code:.0%} of them without an active unit (this warning "
            f"comes below {WORST_EXPLAINED:.0%} explained or above {WORST_NO_CODE:.0%} "
            "uncoded): the codes do not summarise the outputs; lower --sae-l1 or train "
            "longer (--sae-steps)"
        ]

    def check(self, model: Model, run: MethodRun) -> None:
        n_prompts, options = run.n_prompts, run.options
        n_examples, n_codes = options["n_examples"], options["n_codes"]
        mlps = model.has_mlp and options["sae_components"] != "heads"
        components = model.n_layers * (model.n_heads + int(mlps))
        if n_examples > 2 * n_prompts:
            raise CircuitxError(
                f"--n-examples {n_examples} is more than the {2 * n_prompts} prompts "
                f"({n_prompts} positive, {n_prompts} negative); raise --n-prompts"
            )
        # over positions a component has a vector at each: checked where they are counted
        if n_codes is not None and options["sae_positions"] == "mean":
            check_codes(n_codes, n_examples, components, 1, mlps)

    def steps(self, layout: Layout, run: MethodRun) -> int:
        return run.options["sae_restarts"] * (run.options["sae_steps"] // PROGRESS_EVERY) + 1

    def score(self, engine: Engine, run: MethodRun) -> Scores:
        coded = self.code_prompts(engine, run)
        found = [_overlap(coded, k, run.options["node_score"]) for k in range(len(coded.fits))]
        node = torch.stack([f.node for f in found])
        pairs = torch.stack([f.pairs for f in found]).mean(0)
        spread = node.std(0) if len(found) > 1 else torch.zeros_like(node[0])  # coded ones'
        mean_fit = torch.stack([f.fit for f in found]).mean(0)
        every = engine.layout.n_senders - 1  # components; those not coded score 0
        node_of_all, pairs_of_all = node.new_zeros(every), pairs.new_zeros(every, every)
        kept = coded.components.to(node.device)
        node_of_all[kept] = node.mean(0)
        pairs_of_all[kept.unsqueeze(1), kept] = pairs
        host = to_host(
            {"node": node_of_all, "pairs": pairs_of_all, "spread": spread, "fit": mean_fit}
        )
        edges, nodes = _graph_scores(engine.layout, host["node"], host["pairs"])
        run.advance(1)
        fit = {k: None if math.isnan(v) else v for k, v in zip(FIT, host["fit"].tolist())}
        facts = {
            "sae_fraction_of_variance_explained": fit["explained"],
            "sae_held_out_fraction_of_variance_explained": fit["held_out_explained"],
            "sae_l0": fit["l0"],
            "sae_dead_fraction": fit["dead"],  # units active on no training vector
            "sae_no_code_fraction": fit["no_code"],  # training vectors with no active unit
            "sae_scored_no_code_fraction": fit["scored_no_code"],  # of all vectors coded
            "sae_codes": coded.n_codes,
            "sae_codes_used": fit["used"],  # units that are some vector's code
            "sae_position_count": coded.count,
            "sae_restart_spread_mean": float(host["spread"].mean()),
            "sae_restart_spread_max": float(host["spread"].max()),
            "negative_accuracy": engine.accuracy(corrupted=True),
        }
        return Scores.of_edges(edges, nodes, facts=facts)

    def code_prompts(
        self, engine: Engine, run: MethodRun, restarts: Sequence[int] | None = None
    ) -> Coded:
        """Train one autoencoder per restart (seeded by the run's seed and the restart;
        by default ``--sae-restarts`` of them) on its draw of examples, and code every
        prompt's vectors with each. Two passes over the prompts' vectors, whatever the
        number of restarts: one gathers every draw, one codes every vector with every
        autoencoder."""
        options = run.options
        positions, count = sae_positions(engine, options["sae_positions"])
        components = coded_components(engine.layout, options["sae_components"])
        coded_units = torch.arange(count).add(components.unsqueeze(1) * count).flatten()

        def vector_blocks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            return _each_vector_block(engine, positions, coded_units)

        units = len(coded_units)
        if options["n_codes"] is not None:  # a trial's: the bound left out the positions
            mlps = engine.layout.has_mlp and options["sae_components"] != "heads"
            check_codes(options["n_codes"], options["n_examples"], len(components), count, mlps)
        n_codes = options["n_codes"] or min(DEFAULT_CODES, options["n_examples"] * units)
        prepare = _as_written
        if options["sae_inputs"] == "standardised":
            prepare = standardiser(lambda: (v for v, _ in vector_blocks()))
        restarts = range(options["sae_restarts"]) if restarts is None else restarts
        n, device = engine.n_prompts, engine.model.device
        generators = [torch.Generator().manual_seed(restart_seed(run.seed, k)) for k in restarts]
        draws = [torch.randperm(2 * n, generator=g)[: options["n_examples"]] for g in generators]
        shape = (len(draws), len(draws[0]), units, engine.model.d_model)
        chosen = torch.empty(shape, device=device)
        for vectors, index in vector_blocks():
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
                options["sae_decoder_norm"],
            )
            with torch.no_grad():
                hidden = sae.hidden(training)
            active = hidden > 0
            autoencoders.append(sae)
            on_training = VarianceExplained(device)
            on_training.add(sae, training, hidden)
            fits.append(
                {
                    "explained": on_training.value(),
                    "l0": active.float().sum(-1).mean(),
                    "dead": (~active.any(0)).float().mean(),
                    "no_code": (~active.any(-1)).float().mean(),
                }
            )
        codes = torch.empty(len(draws), 2 * n, units, dtype=torch.long, device=device)
        held_out = [VarianceExplained(device) for _ in draws]
        with torch.no_grad():
            for vectors, index in vector_blocks():
                prepared = prepare(vectors)
                for k, sae in enumerate(autoencoders):
                    hidden = sae.hidden(prepared)
                    codes[k, index.to(device)] = sae.codes(hidden)
                    unseen = ~torch.isin(index, draws[k]).to(device)
                    held_out[k].add(sae, prepared[unseen], hidden[unseen])
        for k, fit in enumerate(fits):
            fit["held_out_explained"] = held_out[k].value()
            fit["scored_no_code"] = (codes[k] == n_codes).float().mean()
            fit["used"] = (codes[k].unique() < n_codes).sum().float()
        return Coded(codes, n_codes, count, fits, generators, components)


@dataclass
class Coded:
    """Every prompt's codes from each autoencoder [restarts, 2 n, C * P] (positives, then
    negatives; components major, P positions each; ``n_codes`` is "no code"), each
    autoencoder's fit (:data:`FIT`), the generator it was seeded with, and the C
    components coded (each its sender's index less one)."""

    codes: torch.Tensor
    n_codes: int
    count: int
    fits: list[dict[str, torch.Tensor]]
    generators: list[torch.Generator]
    components: torch.Tensor


FIT = ("explained", "held_out_explained", "l0", "dead", "no_code", "scored_no_code", "used")


class VarianceExplained:
    """The fraction of the variance of vectors (about their mean) that an autoencoder's
    reconstructions explain, summed over blocks [..., d] in float64."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.count, self.total, self.squares, self.residual = 0, 0.0, 0.0, 0.0

    def add(self, sae: SparseAutoencoder, vectors: torch.Tensor, hidden: torch.Tensor) -> None:
        flat = vectors.flatten(0, -2).double()
        self.count += len(flat)
        self.total = self.total + flat.sum(0)
        self.squares = self.squares + flat.pow(2).sum()
        error = sae.reconstruct(hidden).flatten(0, -2).double() - flat
        self.residual = self.residual + error.pow(2).sum()

    def value(self) -> torch.Tensor:
        """The fraction (NaN where no vector was added: every prompt was trained on)."""
        if self.count == 0:
            return torch.tensor(float("nan"), device=self.device)
        variance = self.squares - self.total.pow(2).sum() / self.count
        return (1 - self.residual / variance).float()


def _overlap(coded: Coded, k: int, node_score: str) -> Overlap:
    """The scores of autoencoder ``k`` of ``coded`` from its codes, and its fit; its
    generator draws the halvings of ``above-chance``."""
    codes, fit, generator = coded.codes[k], coded.fits[k], coded.generators[k]
    count, space = coded.count, coded.n_codes + 1  # the last: "no code"
    n, components = len(codes) // 2, codes.shape[1] // count
    per_example = node_score in ("positive-share", "above-chance")
    node = positive_only(codes[:n], codes[n:], space, per_example)
    if node_score == "above-chance":
        node = (node - chance_share(codes, space, generator)).clamp_min(0)
    node = node.view(components, count).max(1).values  # a component's best position
    by_position = codes.view(2 * n, components, count).transpose(1, 2)  # [2n, P, C]
    pairs = positive_only(
        by_position[:n], by_position[n:], space**2, per_example, lambda c: code_pairs(c, space)
    )
    pairs = pairs.view(count, components, components).max(0).values.fill_diagonal_(0)
    if node_score == "co-occurrence":
        node = co_occurrence_ranking(pairs).float() / (2 * components)
    return Overlap(node, pairs, torch.stack([fit[key] for key in FIT]))


@dataclass
class Overlap:
    """One autoencoder's scores: components [C], ordered pairs [C, C], and its fit
    [len(FIT)] (left on the device with the scores, for one transfer)."""

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
