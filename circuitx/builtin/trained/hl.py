"""High-level causal models: what a trained ground-truth model must implement.

A high-level model (HL) names its variables (the nodes SIIT intervenes on), the low-level
components each is aligned to, and computes the task output for a batch of its inputs,
optionally with one variable set to its value on other (source) inputs. Inputs are rows
of a fixed table of token ids, so a batch is a tensor of row indices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from circuitx.names import parse_node
from circuitx.reference import mark_edge, put_in_circuit, reference_graph

SHAPE = {"n_head": 4, "n_embd": 64, "n_inner": 256}  # the low-level models' width
# a categorical output the high-level model leaves undefined (e.g. a tie): such a pair is
# neither trained nor scored under that intervention
UNDEFINED = -100


# what a high-level output is, and how the low-level model's output is read against it
CLASS = "class"  # a class index: the output token with the highest logit
VALUE = "value"  # a number: the centred logit of the one output token
ABOVE = "above"  # a class index k: every class above k outranks every class up to k


@dataclass(frozen=True)
class Readout:
    """Where and how the low-level model's output is read: the positions [N, P] of each
    input of the table, the output tokens (one per class, or the one value token) and the
    kind of output (:data:`CLASS`, :data:`VALUE` or :data:`ABOVE`)."""

    positions: torch.Tensor  # [N, P]
    tokens: tuple[int, ...]
    kind: str = CLASS


class HighLevelModel(ABC):
    """A causal model over a table of inputs, aligned to a low-level model's components."""

    name: str
    inputs: torch.Tensor  # [N, pos] token ids of the low-level model
    readout: Readout
    # HL variable -> the low-level nodes (``a{L}.h{H}``, ``m{L}``) that compute it
    alignment: dict[str, tuple[str, ...]]
    # [N] each input's group, where inputs come in groups (pairs join two of one group)
    groups: torch.Tensor | None = None

    @abstractmethod
    def outputs(
        self, base: torch.Tensor, source: torch.Tensor | None = None, variable: str | None = None
    ) -> torch.Tensor:
        """The output [n, P] on inputs ``base`` [n] (class indices, or values, as the
        readout's kind says), with ``variable`` set to its value on inputs ``source`` [n]; a class
        may be :data:`UNDEFINED`."""

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(self.alignment)

    def pairs(self) -> torch.Tensor:
        """The (base, source) pairs training draws from, as ids ``base * N + source``:
        every pair, unless a model restricts them (e.g. to inputs whose positions align)."""
        return torch.arange(len(self.inputs) ** 2)

    def aligned_nodes(self) -> set[str]:
        return {node for nodes in self.alignment.values() for node in nodes}


class MoverHighLevel(HighLevelModel):
    """A high-level model whose last variable (the mover) computes the output from the
    others: setting the mover to its value on a source gives the source's output; setting
    another variable recomputes the output (:meth:`_intervened`)."""

    mover: str  # the variable that computes the output
    plain: torch.Tensor  # [N, P] the outputs without intervention

    def outputs(
        self, base: torch.Tensor, source: torch.Tensor | None = None, variable: str | None = None
    ) -> torch.Tensor:
        if variable is None or source is None:
            return self.plain[base]
        if variable not in self.alignment:
            raise ValueError(f"{self.name} has no variable {variable!r}")
        if variable == self.mover:
            return self.plain[source]
        return self._intervened(base, source, variable)

    @abstractmethod
    def _intervened(self, base: torch.Tensor, source: torch.Tensor, variable: str) -> torch.Tensor:
        """The output [n, P] on ``base`` with ``variable`` (not the mover) set to its value
        on ``source``."""


@dataclass
class Target:
    """What training needs and the model directory gets: the high-level model, the
    low-level model's config, its tokenizer, the task's files and the ground truth."""

    hl: HighLevelModel
    config: Any  # transformers.GPT2Config
    tokenizer: Any
    write_files: Callable[[Path], None]  # what the task reads (e.g. tracr.json)
    circuits: dict[str, nx.MultiDiGraph]  # by task (or task:variant), in the model's shape


def token_table(
    tokenizer: Any, prompts: list[str], one_length: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts' token ids [N, pos], each after BOS and padded on the right, and each
    row's last position [N] (a causal model's outputs there ignore the padding). With
    ``one_length``, prompts that tokenise to different lengths are a ``ValueError``."""
    rows = [
        [tokenizer.bos_token_id, *tokenizer.encode(p, add_special_tokens=False)] for p in prompts
    ]
    lengths = sorted({len(r) for r in rows})
    if one_length and len(lengths) > 1:
        raise ValueError(f"the prompts must tokenise to one length, not {lengths}")
    table = torch.full((len(rows), lengths[-1]), tokenizer.pad_token_id)
    for i, row in enumerate(rows):
        table[i, : len(row)] = torch.tensor(row)
    return table, torch.tensor([len(r) - 1 for r in rows])


def group_pairs(groups: torch.Tensor, bases: torch.Tensor | None = None) -> torch.Tensor:
    """Pair ids (``base * N + source``, ascending) joining inputs of one group [N], the
    bases only where ``bases`` [N] is true (every input by default)."""
    n = len(groups)
    ids = []
    for group in groups.unique():
        members = (groups == group).nonzero().flatten()
        chosen = members if bases is None else members[bases[members]]
        ids.append((chosen[:, None] * n + members).flatten())
    return torch.cat(ids).sort().values


def check_alignment(alignment: dict[str, tuple[str, ...]], n_layers: int, n_heads: int) -> None:
    """Raise ``ValueError`` unless every aligned node is a head or MLP of the given shape,
    and no node is aligned to two variables."""
    seen: dict[str, str] = {}
    for variable, nodes in alignment.items():
        for node in nodes:
            kind, layer, head = parse_node(node)
            if kind not in ("head", "mlp") or layer >= n_layers or (head or 0) >= n_heads:
                raise ValueError(f"{variable} is aligned to {node}, not in the model")
            if node in seen:
                raise ValueError(f"{node} is aligned to both {seen[node]} and {variable}")
            seen[node] = variable


def task_target(
    name: str,
    task: str,
    hl: HighLevelModel,
    tokenizer: Any,
    n_layer: int,
    edges: tuple[tuple[str, str], ...],
) -> Target:
    """What to train for a task's high-level model: a causal GPT-2 of :data:`SHAPE` with
    ``n_layer`` layers over ``tokenizer``, and as ground truth the high-level graph
    ``edges`` (between variables, the tokens and the logits) on the aligned nodes. The
    high-level model cannot say which of q, k or v an edge feeds, so it feeds all three."""
    from transformers import GPT2Config

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=hl.inputs.shape[1],
        n_layer=n_layer,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        **SHAPE,
    )
    graph = reference_graph(f"{name} ground truth", config.n_layer, config.n_head, True)
    graph.graph.update(task=task, model=name)
    for variable, nodes in hl.alignment.items():
        put_in_circuit(graph, nodes, variable.replace("_", " "))
    for sender, receiver in edges:
        for s in hl.alignment.get(sender, (sender,)):
            for r in hl.alignment.get(receiver, (receiver,)):
                mark_edge(graph, s, r)
    return Target(hl, config, tokenizer, lambda _: None, {task: graph})
