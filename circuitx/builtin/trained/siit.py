"""Strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench).

A GPT-2 model is trained on pairs of inputs (base, source) drawn from a high-level
model's table with three losses, summed with weights into one step:

- behaviour: the model's output on the base is the HL output;
- IIT: with the components aligned to one HL variable (drawn per batch) patched with
  their activations on the source, the output is the HL output under the same
  intervention;
- strictness: with components outside the alignment patched (each with probability 1/2,
  drawn per batch), the output is still the base's HL output.

With ``circuit_first``, the components outside the alignment are first silenced (their
outputs held at zero) for that many steps, so the aligned components learn the HL alone;
then every component trains. Without it, IOI's outside heads came to carry, redundantly,
what the circuit reads: each could be patched alone, not all at once.

A node is what the patching engine means by it: a head's ``z`` (its slice of the input to
the attention's output projection, TransformerLens's ``hook_z``) or an MLP's output, at
every position. The source's activations are taken without gradient, as in the ``iit``
library, unless ``source_gradient``: then the patched losses also train what the patched
components compute on the source. Categorical outputs are trained with cross-entropy over
the output tokens' logits, numerical ones with the squared error of the value token's logit,
"above" ones (greater-than: any class above k) with cross-entropy against the classes above
k, equally likely, and count as right when each of those outranks every class up to k. The
unembedding is kept centred over the vocabulary (projected after every step), as the
TransformerBridge's compatibility mode centres it: what training reads is what discovery
reads, and no other token's logit moves the value. Adam (betas 0.9, 0.9) with gradient
norm clipped to 1, as InterpBench, and the learning rate decaying linearly to a tenth;
training stops when accuracy, every variable's IIA and the strict-IIAs (each outside
node alone, and all of them at once) reach the threshold on held-out pairs (on every pair
where the table is small, :func:`evaluation_pairs`), and otherwise ends with the weights
of its best evaluation (by the worst of those scores).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from circuitx.builtin.trained.hl import CLASS, UNDEFINED, VALUE, HighLevelModel, Readout
from circuitx.errors import CircuitxError
from circuitx.files import atomic_open
from circuitx.names import head_node, mlp_node
from circuitx.progress import Advance, announce, no_progress

NUMERIC_ATOL = 0.05  # a numerical output within this of the HL's is correct (iit's atol)
STRICT_SAMPLINGS = ("half", "one", "all")  # see Settings.strict_sampling


@dataclass(frozen=True)
class Settings:
    """SIIT's hyperparameters (defaults: InterpBench's, but a single summed step)."""

    seed: int = 0
    max_steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    final_lr_factor: float = 0.1  # the learning rate decays linearly to lr times this
    behaviour_weight: float = 1.0
    iit_weight: float = 1.0
    strict_weight: float = 0.4
    clip: float = 1.0
    eval_every: int = 100
    eval_pairs: int = 1024
    threshold: float = 0.99  # stop when every held-out score reaches it
    # (and judge a table of no more pairs than eval_pairs on every pair)
    held_out: float = 0.2  # the share of (base, source) pairs kept for evaluation
    # keep inputs out, not just pairs: a share ``held_out`` of the HL's groups (of its
    # inputs, where it has none) is never trained on; held-out pairs join two of them
    held_out_inputs: bool = False
    # outside nodes patched per batch for the strictness loss: "half" (each with
    # probability 1/2, InterpBench's sample_all), "one" (one at random, iit's default) or
    # "all" (every one: the aligned components alone must give the answer)
    strict_sampling: str = "half"
    # whether the patched losses' gradients also flow through the source's run (into
    # what the patched components compute there) or stop at its activations (iit's)
    source_gradient: bool = False
    # steps at the start with the outside components silenced (see the module docstring);
    # evaluations then neither stop training nor pick the weights
    circuit_first: int = 0

    def __post_init__(self) -> None:
        if self.strict_sampling not in STRICT_SAMPLINGS:
            raise ValueError(f"strict_sampling must be one of {', '.join(STRICT_SAMPLINGS)}")


@dataclass
class Evaluation:
    """Held-out scores: accuracy on the bases, IIA per HL variable, strict-IIA per node
    outside the alignment and with every outside node patched at once (joint: the aligned
    components alone still give the answer); a pair counts when every readout position is
    right."""

    accuracy: float
    iia: dict[str, float]
    strict_iia: dict[str, float]
    strict_joint: float

    @property
    def worst(self) -> float:
        return min(
            [self.accuracy, *self.iia.values(), *self.strict_iia.values(), self.strict_joint]
        )

    def summary(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "iia": min(self.iia.values(), default=1.0),
            "strict_iia": min(self.strict_iia.values(), default=1.0),
            "strict_iia_joint": self.strict_joint,
        }


@dataclass
class History:
    """Mean losses per evaluation interval, and the evaluations."""

    steps: list[int] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)


class Intervenable:
    """A Hugging Face GPT-2 model whose heads' z and MLPs' outputs can be recorded and
    replaced, by node name, during a forward pass."""

    def __init__(self, model: Any) -> None:
        self.model = model
        config = model.config
        self.n_layers, self.n_heads = config.n_layer, config.n_head
        self.d_head = config.n_embd // config.n_head
        self.patches: dict[str, torch.Tensor] = {}
        self.silenced: frozenset[str] = frozenset()  # nodes whose output is held at zero
        self.record: dict[str, torch.Tensor] | None = None
        for layer, block in enumerate(model.transformer.h):
            block.attn.c_proj.register_forward_pre_hook(self._heads_hook(layer))
            block.mlp.register_forward_hook(self._mlp_hook(layer))

    @property
    def nodes(self) -> list[str]:
        heads = [head_node(layer, h) for layer in range(self.n_layers) for h in range(self.n_heads)]
        return heads + [mlp_node(layer) for layer in range(self.n_layers)]

    def _heads_hook(self, layer: int) -> Callable:
        def hook(module: Any, args: tuple[torch.Tensor, ...]) -> Any:
            heads = list(args[0].split(self.d_head, -1))  # [batch, pos, d_head] each
            patched = False
            for head in range(self.n_heads):  # as the MLP hook: silence, record, patch
                node = head_node(layer, head)
                if node in self.silenced:
                    heads[head], patched = torch.zeros_like(heads[head]), True
                if self.record is not None:
                    self.record[node] = heads[head]
                if node in self.patches:
                    heads[head], patched = self.patches[node], True
            return (torch.cat(heads, -1), *args[1:]) if patched else None

        return hook

    def _mlp_hook(self, layer: int) -> Callable:
        def hook(module: Any, args: Any, output: torch.Tensor) -> Any:
            node = mlp_node(layer)
            if node in self.silenced:
                output = torch.zeros_like(output)
            if self.record is not None:
                self.record[node] = output
            return self.patches.get(node, output)

        return hook

    @torch.no_grad()
    def centre_unembedding(self) -> None:
        """Make every residual direction's logits sum to zero over the vocabulary, as the
        bridge's compatibility mode centres them: then the logits training reads are the
        ones discovery reads, and the centred value logit depends on no other logit."""
        weight = self.model.lm_head.weight  # [vocab, d_model]
        weight -= weight.mean(0, keepdim=True)

    def logits(self, tokens: torch.Tensor, patches: dict[str, torch.Tensor] | None = None):
        """Logits [batch, pos, vocab] with ``patches`` (node -> activation) in place."""
        self.patches = patches or {}
        try:
            return self.model(tokens).logits
        finally:
            self.patches = {}

    def activations(self, tokens: torch.Tensor, grad: bool = False) -> dict[str, torch.Tensor]:
        """Every node's activation on ``tokens``, with gradient through the run when
        ``grad``, else without."""
        self.record = {}
        try:
            with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
                self.model(tokens)
            return self.record
        finally:
            self.record = None


def read_output(logits: torch.Tensor, readout: Readout, base: torch.Tensor) -> torch.Tensor:
    """The output at the readout positions of inputs ``base`` [n]: the output tokens'
    logits [n, P, classes], or the value token's centred logit [n, P]."""
    positions = readout.positions[base]  # [n, P]
    at = logits[torch.arange(len(base))[:, None], positions]
    if readout.kind == VALUE:
        return at[..., readout.tokens[0]] - at.mean(-1)
    return at[..., list(readout.tokens)]


def loss(output: torch.Tensor, target: torch.Tensor, readout: Readout) -> torch.Tensor:
    """Squared error, or cross-entropy over the defined targets (zero if there are none):
    with the class, or (above) with the classes above it, equally likely."""
    if readout.kind == VALUE:
        return torch.nn.functional.mse_loss(output, target)
    if (target == UNDEFINED).all():
        return output.sum() * 0.0
    if readout.kind == CLASS:
        return torch.nn.functional.cross_entropy(
            output.flatten(0, 1), target.flatten(), ignore_index=UNDEFINED
        )
    keep = target != UNDEFINED
    above = _above(output, target)[keep].float()  # [m, classes]
    wanted = above / above.sum(-1, keepdim=True)
    return -(wanted * output[keep].log_softmax(-1)).sum(-1).mean()


def correct(output: torch.Tensor, target: torch.Tensor, readout: Readout) -> torch.Tensor:
    """Per pair [n]: whether the output is right at every readout position."""
    if readout.kind == VALUE:
        return ((output - target).abs() < NUMERIC_ATOL).all(-1)
    if readout.kind == CLASS:
        return (output.argmax(-1) == target).all(-1)
    above = _above(output, target)
    lowest_above = output.masked_fill(~above, math.inf).amin(-1)
    highest_below = output.masked_fill(above, -math.inf).amax(-1)
    return (lowest_above > highest_below).all(-1)


def _above(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[n, P, classes]: whether each class is above the target class."""
    return torch.arange(output.shape[-1], device=output.device) > target[..., None]


def defined(target: torch.Tensor, readout: Readout) -> torch.Tensor:
    """Per pair [n]: whether the high-level output is defined at every readout position."""
    if readout.kind == VALUE:
        return torch.ones(len(target), dtype=torch.bool)
    return (target != UNDEFINED).all(-1)


def split_pairs(hl: HighLevelModel, settings: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) pair ids (base * N + source) of ``hl.pairs()``, a seeded split: of
    the pairs, or (``held_out_inputs``) of the inputs' groups, each pair on one side."""
    pairs = hl.pairs()
    generator = torch.Generator().manual_seed(settings.seed)
    order = pairs[torch.randperm(len(pairs), generator=generator)]
    if not settings.held_out_inputs:
        held = max(1, math.floor(len(order) * settings.held_out))
        return order[held:], order[:held]
    n = len(hl.inputs)
    groups = hl.groups if hl.groups is not None else torch.arange(n)
    kinds = groups.unique()
    kept = max(1, math.floor(len(kinds) * settings.held_out))
    held_input = torch.isin(groups, kinds[torch.randperm(len(kinds), generator=generator)[:kept]])
    base_held, source_held = held_input[order // n], held_input[order % n]
    return order[~base_held & ~source_held], order[base_held & source_held]


def evaluation_pairs(hl: HighLevelModel, settings: Settings, most: int) -> torch.Tensor:
    """The pair ids a run is judged on: at most ``most`` held-out pairs, or every pair
    where the whole table has no more than ``settings.eval_pairs`` (its held-out share is
    too few to speak for the rest: tracr-reverse's 7 of 36 were all right while an outside
    MLP moved the answer on 4 of the 36)."""
    pairs = hl.pairs()
    if every_pair_judged(len(pairs), settings):
        return pairs
    return split_pairs(hl, settings)[1][:most]


def every_pair_judged(n_pairs: int, settings: Settings) -> bool:
    """Whether a table of ``n_pairs`` is small enough to be judged on every pair."""
    return n_pairs <= settings.eval_pairs


def evaluate(
    ll: Intervenable, hl: HighLevelModel, pairs: torch.Tensor, batch_size: int = 512
) -> Evaluation:
    """Accuracy, IIA per variable, strict-IIA per outside node and with all of them patched
    at once, on ``pairs`` (ids), each over the pairs whose high-level output is defined
    (1.0 where none is)."""
    n = len(hl.inputs)
    outside = [node for node in ll.nodes if node not in hl.aligned_nodes()]
    counts: dict[str, float] = {}
    totals: dict[str, float] = {}
    was_training = ll.model.training
    ll.model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            base, source = chunk // n, chunk % n
            tokens = hl.inputs[base]
            cache = ll.activations(hl.inputs[source])
            target = hl.outputs(base)

            def score(key: str, patches: dict[str, torch.Tensor], want: torch.Tensor) -> None:
                output = read_output(ll.logits(tokens, patches), hl.readout, base)
                scored = defined(want, hl.readout)
                hits = (correct(output, want, hl.readout) & scored).sum()
                counts[key] = counts.get(key, 0.0) + float(hits)
                totals[key] = totals.get(key, 0.0) + float(scored.sum())

            score("accuracy", {}, target)
            for variable, nodes in hl.alignment.items():
                want = hl.outputs(base, source, variable)
                score(f"iia:{variable}", {node: cache[node] for node in nodes}, want)
            for node in outside:
                score(f"strict:{node}", {node: cache[node]}, target)
            score("strict-joint", {node: cache[node] for node in outside}, target)
    ll.model.train(was_training)

    def share(key: str) -> float:
        return counts[key] / totals[key] if totals[key] else 1.0

    return Evaluation(
        accuracy=share("accuracy"),
        iia={v: share(f"iia:{v}") for v in hl.alignment},
        strict_iia={node: share(f"strict:{node}") for node in outside},
        strict_joint=share("strict-joint"),
    )


def train(
    ll: Intervenable,
    hl: HighLevelModel,
    settings: Settings,
    advance: Advance = no_progress,
    checkpoint: Path | None = None,
    name: str | None = None,
) -> History:
    """Train ``ll`` in place to implement ``hl`` (see the module docstring). With
    ``checkpoint``, the whole state is saved there at every evaluation, and a run with the
    same settings (and model ``name``) resumes from it, giving the weights an uninterrupted
    run gives."""
    n = len(hl.inputs)
    train_pairs, _ = split_pairs(hl, settings)
    eval_pairs = evaluation_pairs(hl, settings, settings.eval_pairs)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    variables = list(hl.variables)
    outside = [node for node in ll.nodes if node not in hl.aligned_nodes()]
    parameters = [p for p in ll.model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=settings.lr, betas=(0.9, 0.9))
    schedule = torch.optim.lr_scheduler.LinearLR(
        optimiser, 1.0, settings.final_lr_factor, total_iters=settings.max_steps
    )
    ll.centre_unembedding()
    history = History()
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    totals = {"behaviour": 0.0, "iit": 0.0, "strict": 0.0}
    first = 1
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state.get("name") not in (None, name):  # another task's settings differ besides
            raise CircuitxError(
                f"the checkpoint {checkpoint} was made training {state['name']} (not {name}); "
                "run that again to resume it, or delete it to start over"
            )
        now = dataclasses.asdict(settings)
        changed = [
            f"{key} {value} (not {now.get(key)})"
            for key, value in state["settings"].items()
            if now.get(key) != value
        ]
        if changed:
            raise CircuitxError(
                f"the checkpoint {checkpoint} was made with another {', '.join(changed)}; "
                "run it again as it was to resume it, or delete it to start over"
            )
        ll.model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        history, best, first = state["history"], state["best"], state["step"] + 1
        announce(f"resuming an interrupted run after step {state['step']}, from {checkpoint}")
        settled = bool(history.steps) and history.steps[-1] > settings.circuit_first
        if settled and history.evaluations[-1].worst >= settings.threshold:
            first = settings.max_steps + 1  # that run had stopped there
        advance(state["step"])
    ll.model.train()
    for step in range(first, settings.max_steps + 1):
        ll.silenced = frozenset(outside if step <= settings.circuit_first else ())
        picked = torch.randint(len(train_pairs), (settings.batch_size,), generator=generator)
        ids = train_pairs[picked]
        base, source = ids // n, ids % n
        tokens = hl.inputs[base]
        cache = ll.activations(hl.inputs[source], settings.source_gradient)
        target = hl.outputs(base)
        variable = variables[int(torch.randint(len(variables), (1,), generator=generator))]
        if settings.strict_sampling == "one":
            chosen = torch.zeros(len(outside), dtype=torch.bool)
            chosen[int(torch.randint(len(outside), (1,), generator=generator))] = True
        elif settings.strict_sampling == "all":
            chosen = torch.ones(len(outside), dtype=torch.bool)
        else:  # "half"
            chosen = torch.rand(len(outside), generator=generator) < 0.5
        strict_nodes = [node for node, keep in zip(outside, chosen.tolist()) if keep]
        losses = {
            "behaviour": loss(read_output(ll.logits(tokens), hl.readout, base), target, hl.readout),
            "iit": loss(
                read_output(
                    ll.logits(tokens, {node: cache[node] for node in hl.alignment[variable]}),
                    hl.readout,
                    base,
                ),
                hl.outputs(base, source, variable),
                hl.readout,
            ),
            "strict": loss(
                read_output(
                    ll.logits(tokens, {node: cache[node] for node in strict_nodes}),
                    hl.readout,
                    base,
                ),
                target,
                hl.readout,
            ),
        }
        total = (
            settings.behaviour_weight * losses["behaviour"]
            + settings.iit_weight * losses["iit"]
            + settings.strict_weight * losses["strict"]
        )
        optimiser.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(parameters, settings.clip)
        optimiser.step()
        schedule.step()
        ll.centre_unembedding()
        for key, value in losses.items():
            totals[key] += float(value.detach())
        if step % settings.eval_every == 0 or step == settings.max_steps:
            since = step - (history.steps[-1] if history.steps else 0)
            history.steps.append(step)
            history.losses.append({key: value / since for key, value in totals.items()})
            totals = dict.fromkeys(totals, 0.0)
            evaluation = evaluate(ll, hl, eval_pairs)
            history.evaluations.append(evaluation)
            shown = " ".join(f"{k} {v:.2g}" for k, v in history.losses[-1].items())
            advance(since, f"SIIT {shown} worst {evaluation.worst:.3f}")
            settled = step > settings.circuit_first
            if settled and (best is None or evaluation.worst > best[0]):
                best = (evaluation.worst, copy.deepcopy(ll.model.state_dict()))
            if checkpoint is not None:
                state = {
                    "name": name,
                    "settings": dataclasses.asdict(settings),
                    "step": step,
                    "model": ll.model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                    "best": best,
                }
                with atomic_open(checkpoint, "wb") as handle:
                    torch.save(state, handle)
            if settled and evaluation.worst >= settings.threshold:
                break
    ll.silenced = frozenset()
    if best is not None:  # the weights of the best evaluation, if training went past it
        ll.model.load_state_dict(best[1])
    ll.model.eval()
    return history


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's global generator seeded inside the block (model initialisation), restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
