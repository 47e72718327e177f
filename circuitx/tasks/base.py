"""The task interface and the tokenising helpers every task uses.

A task's data is tokenised with the model's own tokenizer (BOS prepended where the
tokenizer has one, right-padded) and checked: a prompt that does not tokenise as the
task needs is a ``CircuitxError``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Sequence

import networkx as nx
import torch

from circuitx.errors import MAX_SEED, CircuitxError, check_count
from circuitx.layout import OTHER, Layout, PositionLayout

if TYPE_CHECKING:
    from circuitx.models import Model


@dataclass
class TaskData:
    """A batch of clean prompts and their corrupted twins, as tokens, with named positions."""

    clean: torch.Tensor  # [n, pos] token ids
    corrupted: torch.Tensor  # [n, pos]
    positions: dict[str, torch.Tensor]  # name -> [n] token index
    answer: torch.Tensor  # [n] token the model should predict at END (a row per readout)
    wrong: torch.Tensor  # [n] token, or [n, k] tokens, the task metric compares it against
    clean_prompts: list[str] = field(default_factory=list)
    corrupted_prompts: list[str] = field(default_factory=list)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # task-specific tensors
    # [n, P] positions whose logits the metric reads, P per prompt (None: END alone). The
    # metric then sees n * P rows, prompt-major; ``answer`` and ``wrong`` have a row each.
    readout: torch.Tensor | None = None
    # the entries of ``extra`` with one row per metric row (as ``answer``); the rest are
    # shared by every prompt
    row_extra: tuple[str, ...] = ()
    # [n] tokens in each prompt (and its corrupted twin), BOS included: the rest of a row
    # is padding. None: every row is a whole prompt (prompts of one length).
    lengths: torch.Tensor | None = None

    @property
    def n_prompts(self) -> int:
        return int(self.clean.shape[0])

    def repeated_prompts(self) -> int:
        """How many prompts repeat an earlier one: the same clean and corrupted tokens,
        positions, readout and answers (each counts as a prompt of its own)."""
        n = self.n_prompts
        rows = [self.clean, self.corrupted, self.answer, self.wrong, *self.positions.values()]
        rows += [self.extra[name] for name in self.row_extra]
        rows += [] if self.readout is None else [self.readout]
        key = torch.cat([row.reshape(n, -1).long().cpu() for row in rows], dim=1)
        return n - int(torch.unique(key, dim=0).shape[0])

    @property
    def rows_per_prompt(self) -> int:
        """P: the metric's rows per prompt."""
        return 1 if self.readout is None else int(self.readout.shape[1])

    def prompts(self, start: int, stop: int) -> TaskData:
        """Prompts ``start .. stop - 1`` with everything that is per prompt or per row cut
        to them (the token width stays: every part of a batch is padded alike)."""
        rows = slice(start * self.rows_per_prompt, stop * self.rows_per_prompt)
        extra = {
            name: value[rows] if name in self.row_extra else value
            for name, value in self.extra.items()
        }
        return TaskData(
            clean=self.clean[start:stop],
            corrupted=self.corrupted[start:stop],
            positions={name: value[start:stop] for name, value in self.positions.items()},
            answer=self.answer[rows],
            wrong=self.wrong[rows],
            clean_prompts=self.clean_prompts[start:stop],
            corrupted_prompts=self.corrupted_prompts[start:stop],
            extra=extra,
            readout=None if self.readout is None else self.readout[start:stop],
            row_extra=self.row_extra,
            lengths=None if self.lengths is None else self.lengths[start:stop],
        )

    @property
    def real_tokens(self) -> torch.Tensor:
        """[n, pos] True at a prompt's tokens, False at the padding after them."""
        width = int(self.clean.shape[1])
        if self.lengths is None:
            return torch.ones(self.n_prompts, width, dtype=torch.bool)
        return torch.arange(width).unsqueeze(0) < self.lengths.unsqueeze(1)

    @property
    def readout_positions(self) -> torch.Tensor:
        """[n, P] positions the metric reads: ``readout``, else END as [n, 1]."""
        return self.positions["END"].unsqueeze(1) if self.readout is None else self.readout

    def group_index(self, groups: Sequence[str]) -> torch.Tensor:
        """[n, pos]: the index in ``groups`` of each token's position group. ``groups`` are
        named positions then :data:`OTHER` (every other token, padding included; where
        two names share a token, the later one has it), or every position's index
        (``"0"``, ``"1"``, ...: ``--positions all``)."""
        n, width = self.clean.shape
        if groups and groups[0] == "0":
            return torch.arange(width).expand(n, width).clone()
        index = torch.full((n, width), len(groups) - 1, dtype=torch.long)
        rows = torch.arange(n)
        for at, name in enumerate(groups[:-1]):
            index[rows, self.positions[name]] = at
        return index


POSITION_MODES = ("none", "named", "all")


def position_layout(
    layout: Layout, task: Task, data: TaskData, mode: str, causal: bool = True
) -> Layout:
    """The node universe of circuits over token positions in ``mode`` (``none``:
    ``layout`` itself; ``named``: the task's circuit positions and :data:`OTHER`; ``all``:
    every position, for prompts of one length, its keys no later than their queries where
    the model is ``causal``: a tracr model's attention reads both ways), the logits
    reading the groups that hold a readout position."""
    if mode not in POSITION_MODES:
        raise CircuitxError(
            f"unknown --positions {mode!r}; choose from {', '.join(POSITION_MODES)}"
        )
    if mode == "none":
        return layout
    if mode == "named":
        groups = (*task.circuit_positions, OTHER)
    else:  # every token a group: the prompts' own, BOS included (a task file may read
        # before the last one)
        lengths = data.real_tokens.sum(1)
        if bool((lengths != lengths[0]).any()):
            raise CircuitxError(
                f"--positions all needs prompts of one length; {task.name}'s differ "
                f"({int(lengths.min())} to {int(lengths.max())} tokens): use --positions named"
            )
        groups = tuple(str(at) for at in range(int(lengths[0])))
        data = dataclasses.replace(data, clean=data.clean[:, : len(groups)])
    index = data.group_index(groups)
    if mode == "named":  # a name every prompt gives a later name's token holds nothing
        held = set(index[:, : data.clean.shape[1]].flatten().tolist())
        empty = [name for at, name in enumerate(groups[:-1]) if at not in held]
        if empty:
            taker = groups[int(index[0, data.positions[empty[0]][0]])]
            raise CircuitxError(
                f"{task.name}'s position {empty[0]} holds no token: {taker}, named after it, "
                "has its token in every prompt (a later name takes a shared token); give "
                f"{empty[0]} a token of its own or leave it out"
            )
    read = index.gather(1, data.readout_positions)
    readout = tuple(groups[at] for at in sorted(set(read.flatten().tolist())))
    later = later_keys(index, data.real_tokens, groups) if mode == "named" and causal else ()
    aliases = ()
    if mode == "all":  # the named positions every prompt has at one index
        aliases = tuple(
            (name, str(int(at[0])))
            for name, at in data.positions.items()
            if bool((at == at[0]).all())
        )
    return PositionLayout(
        layout.n_layers, layout.n_heads, layout.has_mlp, layout.parallel,
        positions=groups, readout=readout, ordered=mode == "all" and causal,
        later_keys=later, aliases=aliases,
    )  # fmt: skip


def later_keys(
    index: torch.Tensor, real: torch.Tensor, groups: Sequence[str]
) -> tuple[tuple[str, str], ...]:
    """The (key, query) pairs of position ``groups`` whose key group comes after the query
    group in every prompt (no real token of it at or before one of the query's): a causal
    query never reads those keys. ``index`` [n, pos] each token's group, ``real`` [n, pos]
    False at padding."""
    n, width = index.shape
    count = len(groups)
    at = index.masked_fill(~real, count)  # padding: a group of its own, dropped
    where = torch.arange(width).expand(n, width)
    first = torch.full((n, count + 1), width).scatter_reduce(1, at, where, "amin")
    last = torch.full((n, count + 1), -1).scatter_reduce(1, at, where, "amax")
    read = (first[:, :count, None] <= last[:, None, :count]).any(0)  # [key, query]
    return tuple((groups[k], groups[q]) for k, q in (~read).nonzero().tolist())


class Task:
    """Base class: subclasses set the class attributes and implement the data and reference."""

    name: ClassVar[str]
    title: ClassVar[str]
    default_model: ClassVar[str]  # model alias matching the paper (the --model default)
    paper_model: ClassVar[str]  # hub id of the model the reference circuit was published for
    metrics: ClassVar[tuple[str, ...]] = ("logit-diff", "kl")  # the first is the default
    reference_variants: ClassVar[dict[str, str]]  # variant ("" = default) -> description
    # A relational reference: this other task's circuit, found by the same method and model.
    reference_task: ClassVar[str | None] = None
    corruptions: ClassVar[tuple[str, ...]]  # ways to corrupt a prompt; the first is the default
    # the corruption whose prompts the model cannot answer: the negative examples of methods
    # that contrast them with the clean prompts (None: the default corruption)
    negative_corruption: ClassVar[str | None] = None
    # False when no corruption makes prompts the model cannot answer (every input of a
    # compiled program is a valid one): methods that need negative prompts refuse the task
    has_negative_prompts: ClassVar[bool] = True
    # the answers are the model's own clean outputs (tracr: the program's output is what
    # the compiled model computes), so a clean accuracy would be 1 by construction
    answers_are_the_models: ClassVar[bool] = False
    # The built-in model family the task needs (it runs on no other model); None: any model.
    model_family: ClassVar[str | None] = None
    # the named token positions a circuit over positions (``--positions named``) has a
    # node at, besides OTHER (every other token)
    circuit_positions: ClassVar[tuple[str, ...]] = ("END",)
    # where the heads of each role in the task's reference circuits act and which key
    # positions they read: role -> (acts at, reads at); see reference.position_reference
    role_positions: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {}

    def __init__(self, corruption: str | None = None) -> None:
        if corruption is not None and corruption not in self.corruptions:
            raise CircuitxError(
                f"task {self.name} has no corruption {corruption!r}; "
                f"choose from {', '.join(self.corruptions)}"
            )
        self.corruption = corruption or self.corruptions[0]

    @property
    def default_metric(self) -> str:
        return self.metrics[0]

    def vocabulary(self) -> list[str]:
        """Every word the task's prompts use (for built-in word-level tokenizers)."""
        raise NotImplementedError

    def check_model(self, model: "Model") -> None:
        """Fail in one line, before any work, when the task cannot run on ``model`` at all
        (most tasks find out while tokenising their prompts)."""

    def make_data(self, model: "Model", n_prompts: int, seed: int) -> TaskData:
        """``n_prompts`` clean and corrupted prompt pairs for ``model`` (a loaded model),
        tokenised and checked, drawn by ``seed`` (0 to :data:`MAX_SEED`): the pairs
        ``discover`` runs with the same prompt count and seed."""
        if isinstance(model, (str, os.PathLike)):
            raise CircuitxError(f"make_data takes a loaded model (load_model), not {model!r}")
        check_count("n_prompts", n_prompts, 1)
        check_count("seed", seed, 0, MAX_SEED)
        return self.build_data(model, int(n_prompts), int(seed))

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> TaskData:
        """The task's own :meth:`make_data`, its arguments checked."""
        raise NotImplementedError

    def reference(
        self, variant: str, n_layers: int, n_heads: int, has_mlp: bool
    ) -> nx.MultiDiGraph:
        raise NotImplementedError

    def metric(
        self, name: str, final: torch.Tensor, data: TaskData, clean_final: torch.Tensor
    ) -> torch.Tensor:
        """Per-prompt metric from END logits ``final`` [..., n, vocab]; higher = more behaviour.

        ``clean_final`` [n, vocab] are the clean run's END logits (for KL). Leading
        dimensions of ``final`` (e.g. one per patched copy of the batch) are kept. With a
        ``readout`` of P positions, n counts rows: n_prompts * P.
        """
        self.check_metric(name)
        if name == "logit-diff":
            return pick(final, data.answer) - best(final, data.wrong)
        if name == "kl":
            clean = clean_final.log_softmax(-1)
            return -(clean.exp() * (clean - final.log_softmax(-1))).sum(-1)
        raise NotImplementedError(f"task {self.name} lists metric {name!r} but does not compute it")

    def logit_direction(self, data: TaskData, d_vocab: int) -> torch.Tensor:
        """Per prompt, the weights [n, vocab] of the task's logit difference, the linear
        target of weight-based attribution: here the answer's logit minus the mean of the
        wrong tokens' logits."""
        direction = torch.zeros(data.n_prompts, d_vocab)
        rows = torch.arange(data.n_prompts)
        direction[rows, data.answer] = 1.0
        wrong = data.wrong if data.wrong.dim() == 2 else data.wrong.unsqueeze(1)
        direction[rows.unsqueeze(1), wrong] -= 1.0 / wrong.shape[1]
        return direction

    def check_metric(self, name: str) -> None:
        """Fail in one line unless ``name`` is one of this task's metrics."""
        if name not in self.metrics:
            raise CircuitxError(
                f"task {self.name} has no metric {name!r}; choose from {', '.join(self.metrics)}"
            )

    def correct(self, final: torch.Tensor, data: TaskData) -> torch.Tensor:
        """Per prompt: does the model get it right? Here: the answer beats every wrong token."""
        return beats(pick(final, data.answer), best(final, data.wrong))

    def accuracy(self, final: torch.Tensor, data: TaskData) -> float:
        """Share of prompts the model gets right (see :meth:`correct`)."""
        return float(self.correct(final, data).double().mean())


TIE = 1e-5
"""Logits this close, relative to their size (at least 1), are a tie."""


def beats(logit: torch.Tensor, rival: torch.Tensor) -> torch.Tensor:
    """Per prompt, whether ``logit`` is above ``rival`` by more than float rounding of
    logits of their size: a tie is no win."""
    size = torch.maximum(logit.abs(), rival.abs()).clamp_min(1.0)
    return logit - rival > TIE * size


def pick(final: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``final[..., i, tokens[i]]`` for logits [..., n, vocab] and ids [n] (or [n, k] -> [..., n, k])."""
    tokens = tokens.to(final.device)
    column = tokens.dim() == 1
    if column:
        tokens = tokens.unsqueeze(-1)
    picked = final.gather(-1, tokens.expand(*final.shape[:-1], tokens.shape[-1]))
    return picked.squeeze(-1) if column else picked


def best(final: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The largest of ``tokens``' logits per prompt: ids [n] or [n, k] -> [..., n]."""
    picked = pick(final, tokens)
    return picked.amax(-1) if tokens.dim() == 2 else picked


def single_token(model: "Model", word: str) -> int | None:
    """The id of ``word`` if the model's tokenizer keeps it as one token, else None."""
    ids = model.encode(word)
    if len(ids) != 1:
        return None
    if model.decode(ids).strip() != word.strip():  # e.g. a word-level tokenizer's unknown token
        return None
    return ids[0]


def encode_batch(
    model: "Model",
    prompts: Sequence[str | Sequence[int]],
    names: Sequence[str] = (),
    which: str = "",
) -> tuple[torch.Tensor, list[int]]:
    """Tokens [n, pos] of ``prompts`` (BOS first where there is one, right-padded) and
    lengths. A prompt given as token ids is the model's input as it is, BOS put first
    unless it begins with it. ``names``: each prompt's name in errors (a task file's row),
    ``which`` the prompts' (clean or corrupted)."""
    bos = [model.bos_token_id] if model.bos_token_id is not None else []
    texts = [prompt for prompt in prompts if isinstance(prompt, str)]
    encoded = iter(model.encode_many(texts) if texts else [])
    rows = []
    for prompt in prompts:
        ids = next(encoded) if isinstance(prompt, str) else list(prompt)
        rows.append(ids if bos and not isinstance(prompt, str) and ids[:1] == bos else bos + ids)
    lengths = [len(r) for r in rows]
    width = max(lengths)
    if width > model.n_ctx:
        longest = lengths.index(width)
        prompt = f"{which} prompt" if which else "prompt"  # clean or corrupted
        where = f"{names[longest]}: the {prompt} is" if names else f"{prompt}s are"
        with_bos = " with BOS" if bos else ""  # one more than the tokens a user counts
        raise CircuitxError(
            f"{where} {width} tokens long{with_bos}; the model's context is {model.n_ctx}"
        )
    tokens = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, lengths


def encode_pairs(
    model: "Model", task_name: str, clean: Sequence[str], corrupted: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Tokens of clean and corrupted prompts, each pair of equal length, and the lengths."""
    clean_tokens, lengths = encode_batch(model, clean, which="clean")
    corrupted_tokens, corrupted_lengths = encode_batch(model, corrupted, which="corrupted")
    for i, (length, corrupted_length) in enumerate(zip(lengths, corrupted_lengths)):
        if length != corrupted_length:
            raise CircuitxError(
                f"{task_name} clean and corrupted prompts tokenise to different lengths: "
                f"{clean[i]!r} vs {corrupted[i]!r}"
            )
    return clean_tokens, corrupted_tokens, lengths


def position_table(keys: Sequence[str], n_prompts: int) -> dict[str, torch.Tensor]:
    """Named token positions, one [n_prompts] index tensor per key, to be filled in."""
    return {key: torch.zeros(n_prompts, dtype=torch.long) for key in keys}


def occurrences(row: torch.Tensor, token: int | torch.Tensor) -> list[int]:
    """Indices where ``token`` occurs in the 1-D token ``row``."""
    return (row == token).nonzero().flatten().tolist()


def changed_positions(clean_row: torch.Tensor, corrupted_row: torch.Tensor) -> list[int]:
    """Indices where two equally long token rows differ."""
    return (clean_row != corrupted_row).nonzero().flatten().tolist()


def words_of(*texts: str) -> list[str]:
    """The words and punctuation marks of ``texts`` (placeholders like ``[NAME]`` dropped)."""
    words: dict[str, None] = {}
    for text in texts:
        words.update(dict.fromkeys(re.findall(r"\w+|[^\w\s]", re.sub(r"\[\w+\]", " ", text))))
    return list(words)
