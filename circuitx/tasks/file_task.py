"""Tasks a researcher brings: prompt pairs from a task file (:mod:`circuitx.tasks.pairs`
reads the formats) or from Python lists, tokenised with the model's tokenizer.

Every answer must be one token of the model. The metric is read at each clean prompt's
last token: ``logit-diff`` (the best answer's logit minus the best wrong one's),
``prob-diff`` (the answers' probability minus the wrong ones', a token listed twice
counted once), ``log-prob`` (the log of the answers' probability) and ``kl``; without
wrong answers, ``log-prob`` and ``kl``.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Sequence

import torch

from circuitx.errors import CircuitxError, listed, quoted
from circuitx.tasks.base import Task, TaskData, beats, best, encode_batch, pick
from circuitx.tasks.pairs import (
    PromptPair,
    ends_in_two_digits,
    read_named_positions,
    read_position,
    read_task_file,
)

if TYPE_CHECKING:
    from circuitx.models import Model

PAIRS = "pairs"  # a file task's one corruption: each pair's own corrupted prompt


class FileTask(Task):
    """A task made of given prompt pairs; ``name`` labels it (a file's stem) and
    ``digest`` identifies its content."""

    title = "prompt pairs from a file"
    default_model = "gpt2"
    paper_model = None
    reference_variants = {"": "none: pass --reference"}
    corruptions = (PAIRS,)
    has_negative_prompts = False

    @classmethod
    def from_file(cls, path: str, task_format: str | None = None) -> FileTask:
        """The task of a task file (see :mod:`circuitx.tasks.pairs` for the formats)."""
        read = read_task_file(path, task_format)
        return cls(read.pairs, read.name, read.digest, read.path, read.metric, read.notes)

    def __init__(
        self,
        pairs: Sequence[PromptPair],
        name: str,
        digest: str,
        source: str = "",
        metric: str | None = None,
        notes: Sequence[str] = (),
    ):
        """``metric``: the default where the pairs' file implies one (a greater-than
        CSV's ``prob-diff``); ``notes``: what reading the file passed over, for
        :meth:`warnings`."""
        super().__init__(PAIRS)
        if not pairs:
            raise CircuitxError(f"task {name} has no prompt pairs")
        with_wrongs = [bool(p.wrongs or p.wrong_ids) for p in pairs]
        if any(with_wrongs) and not all(with_wrongs):
            missing = pairs[with_wrongs.index(False)]
            raise CircuitxError(
                f"{missing.where} has no wrong answer; give every pair one, or none"
            )
        for pair in pairs:
            if not (pair.answers or pair.answer_ids):
                raise CircuitxError(f"{pair.where} has no answer")
            if (pair.clean, pair.clean_ids) == (pair.corrupted, pair.corrupted_ids):
                raise CircuitxError(  # patching it changes nothing
                    f"{pair.where}: the clean and corrupted prompts are the same"
                )
        names = [name for name, _ in pairs[0].named]
        for pair in pairs:
            if [name for name, _ in pair.named] != names:
                raise CircuitxError(
                    f"{pair.where} names positions {[n for n, _ in pair.named]}, the first "
                    f"pair {names}: every pair names the same ones"
                )
        self.circuit_positions = (*names, "END")
        self.pairs, self.name, self.digest, self.source = list(pairs), name, digest, source
        self.notes = list(notes)
        self._checked: list[weakref.ref[Model]] = []  # models every pair passed
        metrics = ("logit-diff", "prob-diff", "log-prob", "kl")
        self.metrics = metrics if all(with_wrongs) else ("log-prob", "kl")
        if metric in self.metrics:  # first: the default
            self.metrics = (metric, *(m for m in self.metrics if m != metric))

    def warnings(self) -> list[str]:
        """What to distrust in the file: what reading it passed over (``notes``) and
        answers that look like MIB's greater-than years (every answer id under 100 after a
        prompt ending in two digits: MIB's CSV holds YY in ``correct_idx``, which read as a
        token id names another token)."""
        years = all(
            pair.answer_ids and max(pair.answer_ids) < 100 and ends_in_two_digits(pair.clean)
            for pair in self.pairs
        )
        if not years:
            return list(self.notes)
        return [
            *self.notes,
            "every answer id is under 100 after a prompt ending in two digits: if they are "
            "years (YY, as MIB's greater-than CSV puts them in correct_idx), they read as "
            "token ids of other tokens; name that column label (docs/task-files.md)",
        ]

    def vocabulary(self) -> list[str]:
        words: dict[str, None] = {}
        for pair in self.pairs:
            for text in (pair.clean, pair.corrupted, *pair.answers, *pair.wrongs):
                words.update(dict.fromkeys(text.split()))
        return list(words)

    def build_data(self, model: "Model", n_prompts: int, seed: int) -> TaskData:
        """The first ``n_prompts`` pairs when the file has no more, else a sample of them
        drawn by ``seed`` (in file order). Every pair is checked against the model's
        tokenizer first, so a broken row is refused whichever pairs the seed draws."""
        if n_prompts >= len(self.pairs):
            return self._data(model, self.pairs)
        if not any(checked() is model for checked in self._checked):
            self._data(model, self.pairs)
            self._checked.append(weakref.ref(model))
        chosen = sorted(random.Random(seed).sample(range(len(self.pairs)), n_prompts))
        return self._data(model, [self.pairs[i] for i in chosen])

    def _data(self, model: "Model", pairs: Sequence[PromptPair]) -> TaskData:
        """The pairs' tokens, positions and answers, each pair checked."""
        _check_vocabulary(model, pairs)
        _check_prompt_ids(model, pairs)
        where = [p.where for p in pairs]
        clean_tokens, lengths = encode_batch(
            model, [p.clean_ids or p.clean for p in pairs], where, "clean"
        )
        corrupted_tokens, corrupted_lengths = encode_batch(
            model, [p.corrupted_ids or p.corrupted for p in pairs], where, "corrupted"
        )
        clean = [p.clean or _shown(model, p.clean_ids) for p in pairs]
        corrupted = [p.corrupted or _shown(model, p.corrupted_ids) for p in pairs]
        bos = 0 if model.bos_token_id is None else 1
        for pair, size, other in zip(pairs, lengths, corrupted_lengths):
            if size != other:  # patching reads the corrupted run token by token
                raise CircuitxError(
                    f"{pair.where}: the clean prompt is {size - bos} tokens and the corrupted "
                    f"one {other - bos}; a pair must align token by token"
                )
        clean_ids = [row[bos:size].tolist() for row, size in zip(clean_tokens, lengths)]
        if not model.causal and len(set(lengths)) > 1:
            raise CircuitxError(
                f"task {self.name}: pairs of different lengths are padded, and this model "
                "attends to every position (pads too); give pairs of one length"
            )
        reads = [_read_at(model, p, ids) for p, ids in zip(pairs, clean_ids)]  # (index, text)
        named = {
            name: torch.tensor([bos + _index(p, ids, at, name) for p, ids, at in indices])
            for name, indices in _named_indices(pairs, clean_ids).items()
        }
        texts = [
            text
            for pair, (_, read) in zip(pairs, reads)
            for text in _answer_texts(pair, read, (*pair.answers, *pair.wrongs))
        ]
        encoded = dict(zip(texts, model.encode_many(texts)))  # each text in one call
        answers = [
            _token_ids(model, encoded, p, text, p.answers, p.answer_ids, "answer")
            for p, (_, text) in zip(pairs, reads)
        ]
        wrongs = [
            _token_ids(model, encoded, p, text, p.wrongs, p.wrong_ids, "wrong answer")
            for p, (_, text) in zip(pairs, reads)
        ]
        for pair, right, wrong in zip(pairs, answers, wrongs):
            both = [token for token in right if token in wrong]
            if both:  # its logit difference is 0 whatever the model does
                raise CircuitxError(
                    f"{pair.where}: {quoted(model.decode([both[0]]))} is both an answer and a "
                    "wrong answer"
                )
        answer, answer_mask = _padded(answers)
        wrong, wrong_mask = _padded(wrongs) if wrongs[0] else (answer[:, :1], answer_mask[:, :1])
        return TaskData(
            clean=clean_tokens,
            corrupted=corrupted_tokens,
            positions={**named, "END": torch.tensor([bos + at for at, _ in reads])},
            answer=answer[:, 0],
            wrong=wrong,
            clean_prompts=clean,
            corrupted_prompts=corrupted,
            extra={"answers": answer, "answer_mask": answer_mask, "wrong_mask": wrong_mask},
            row_extra=("answers", "answer_mask", "wrong_mask"),
            lengths=torch.tensor(lengths),
        )

    def metric(
        self, name: str, final: torch.Tensor, data: TaskData, clean_final: torch.Tensor
    ) -> torch.Tensor:
        self.check_metric(name)
        answers, answer_mask = data.extra["answers"], data.extra["answer_mask"]
        if name == "logit-diff":
            return best(final, answers) - best(final, data.wrong)
        if name == "prob-diff":
            probs = final.softmax(-1)
            wrong_mask = data.extra["wrong_mask"].to(final.device)
            right = (pick(probs, answers) * answer_mask.to(final.device)).sum(-1)
            return right - (pick(probs, data.wrong) * wrong_mask).sum(-1)
        if name == "log-prob":
            picked = pick(final.log_softmax(-1), answers)
            return picked.masked_fill(~answer_mask.to(final.device), float("-inf")).logsumexp(-1)
        return super().metric(name, final, data, clean_final)

    def correct(self, final: torch.Tensor, data: TaskData) -> torch.Tensor:
        """The best answer beats every wrong one; without wrong answers, it is the top token."""
        answers = data.extra["answers"]
        if "logit-diff" not in self.metrics:
            return (final.argmax(-1, keepdim=True) == answers.to(final.device)).any(-1)
        return beats(best(final, answers), best(final, data.wrong))

    def logit_direction(self, data: TaskData, d_vocab: int) -> torch.Tensor:
        """The mean of the answers' logits minus the mean of the wrong answers'."""
        direction = torch.zeros(data.n_prompts, d_vocab)
        rows = torch.arange(data.n_prompts).unsqueeze(1)
        for tokens, mask, sign in (
            (data.extra["answers"], data.extra["answer_mask"], 1.0),
            (data.wrong, data.extra["wrong_mask"], -1.0),
        ):
            if sign < 0 and "logit-diff" not in self.metrics:
                break
            share = mask.float() / mask.sum(-1, keepdim=True)
            direction.index_put_((rows.expand_as(tokens), tokens), sign * share, accumulate=True)
        return direction


def _read_at(model: "Model", pair: PromptPair, tokens: list[int]) -> tuple[int, str]:
    """The clean prompt's token (index without BOS; ``tokens`` its ids) the metric is read
    at, and the text up to and with it, which a text answer continues."""
    if pair.position is None:
        return len(tokens) - 1, pair.clean
    at = pair.position if pair.position >= 0 else len(tokens) + pair.position
    if not 0 <= at < len(tokens):
        raise CircuitxError(
            f"{pair.where}: position {pair.position} is outside the clean prompt's "
            f"{len(tokens)} tokens"
        )
    return at, pair.clean if at == len(tokens) - 1 else model.decode(tokens[: at + 1])


def _named_indices(
    pairs: Sequence[PromptPair], clean_ids: Sequence[list[int]]
) -> dict[str, list[tuple[PromptPair, list[int], int]]]:
    """Each named position's (pair, its clean ids, index as given) over the pairs."""
    found: dict[str, list[tuple[PromptPair, list[int], int]]] = {}
    for pair, ids in zip(pairs, clean_ids):
        for name, at in pair.named:
            found.setdefault(name, []).append((pair, ids, at))
    return found


def _index(pair: PromptPair, tokens: list[int], at: int, name: str) -> int:
    """A named position's token index in the clean prompt (without BOS)."""
    index = at if at >= 0 else len(tokens) + at
    if not 0 <= index < len(tokens):
        raise CircuitxError(
            f"{pair.where}: position {name} ({at}) is outside the clean prompt's "
            f"{len(tokens)} tokens"
        )
    return index


def _check_vocabulary(model: "Model", pairs: Sequence[PromptPair]) -> None:
    """Refuse a pair with words the model's tokenizer reads as its unknown token (a
    planted model's word-level tokenizer knows the built-in tasks' words only)."""
    unknown_id = model.tokenizer.unk_token_id
    if unknown_id is None:
        return
    texts = [
        (p, text) for p in pairs for text in (p.clean, p.corrupted, *p.answers, *p.wrongs) if text
    ]
    for (pair, text), ids in zip(texts, model.encode_many([text for _, text in texts])):
        unknown = model.unknown_words(text) if unknown_id in ids else []
        if unknown:
            words = listed([quoted(word) for word in dict.fromkeys(unknown)], 5)
            raise CircuitxError(
                f"{pair.where}: {words} not in the model's vocabulary (its tokenizer reads "
                f"{'them' if len(unknown) > 1 else 'it'} as {model.tokenizer.unk_token})"
            )


def _shown(model: "Model", ids: Sequence[int]) -> str:
    """A prompt given as token ids, decoded as text prompts are shown: without BOS."""
    starts_with_bos = model.bos_token_id is not None and ids[:1] == (model.bos_token_id,)
    return model.decode(list(ids[1:] if starts_with_bos else ids))


def _check_prompt_ids(model: "Model", pairs: Sequence[PromptPair]) -> None:
    """Refuse a prompt given as token ids with an id outside the model's vocabulary."""
    for pair in pairs:
        for which, ids in (("clean", pair.clean_ids), ("corrupted", pair.corrupted_ids)):
            outside = [token for token in ids if not 0 <= token < model.d_vocab]
            if outside:
                raise CircuitxError(
                    f"{pair.where}: the {which} prompt's token id {outside[0]} is outside "
                    f"the model's vocabulary ({model.d_vocab} tokens)"
                )


def _answer_texts(pair: PromptPair, prompt: str, texts: Sequence[str]) -> list[str]:
    """What is tokenised to read the pair's answer ``texts``: ``prompt``, and each answer
    continuing it (a space between unless one is there); or the answers alone."""
    if not pair.continues:
        return list(texts)
    joined = [
        prompt + ("" if prompt[-1:].isspace() or text[:1].isspace() else " ") + text
        for text in texts
    ]
    return [prompt, *joined] if texts else []


def _token_ids(
    model: "Model",
    encoded: dict[str, list[int]],
    pair: PromptPair,
    prompt: str,
    texts: tuple[str, ...],
    ids: tuple[int, ...],
    what: str,
) -> list[int]:
    """The pair's answers (or wrong answers) as token ids, each checked to be one token of
    the model; a text answer continues ``prompt``. ``encoded`` holds the token ids of
    every text :func:`_answer_texts` names."""
    for token in ids:
        if not 0 <= token < model.d_vocab:
            raise CircuitxError(
                f"{pair.where}: {what} id {token} is outside the model's vocabulary "
                f"({model.d_vocab} tokens)"
            )
    tokens = list(ids)
    read = _answer_texts(pair, prompt, texts)  # the prompt first where answers continue it
    before = encoded[read[0]] if pair.continues and texts else []
    for text, written in zip(texts, read[-len(texts) :]):
        pieces = encoded[written]
        if pieces[: len(before)] != before:  # the answer merged into the prompt's end
            hint = (
                " (the prompt ends in a space, which GPT-2-style tokenizers write at the "
                "start of the next word: leave it out)"
                if prompt[-1:].isspace()
                else ""
            )
            raise CircuitxError(
                f"{pair.where}: {what} {quoted(text)} merges with the clean prompt's last "
                f"token for this model; answers must be single tokens after it{hint}"
            )
        pieces = pieces[len(before) :]
        if not pieces:
            raise CircuitxError(
                f"{pair.where}: the model's tokenizer reads {what} {quoted(text)} as no token at "
                "all; is it the tokenizer the model was trained with?"
            )
        if len(pieces) != 1:
            texts = [model.decode([p]) for p in pieces]  # a byte of a character: its id
            shown = ", ".join(
                f"id {p}" if "\ufffd" in text else repr(text) for p, text in zip(pieces, texts)
            )
            raise CircuitxError(
                f"{pair.where}: {what} {quoted(text)} is {len(pieces)} tokens for this model "
                f"({shown}); answers must be single tokens"
            )
        tokens.append(pieces[0])
    return tokens


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, k] (each row padded with its own first token, which changes no
    maximum) and which entries are distinct tokens of the row [n, k]."""
    width = max(len(row) for row in rows)
    tokens = torch.tensor([row + row[:1] * (width - len(row)) for row in rows])
    mask = torch.tensor(
        [[i < len(row) and row.index(row[i]) == i for i in range(width)] for row in rows]
    )
    return tokens, mask


def pairs_task(
    clean: Sequence[str],
    corrupted: Sequence[str],
    answers: Sequence[str | Sequence[str]],
    wrong: Sequence[str | Sequence[str]] | None,
    name: str,
    positions: Sequence[Mapping[str, int]] | None = None,
    position: Sequence[int] | None = None,
) -> FileTask:
    """A task from lists, one entry per pair: answers (and wrong answers) are words that
    continue each clean prompt, and ``positions`` and ``position`` a pair's named tokens
    and read token, as in a JSONL task file (its name checked by
    :func:`circuitx.tasks.task_from_pairs`)."""
    lists = {"clean": clean, "corrupted": corrupted, "answers": answers}
    optional = {"wrong": wrong, "positions": positions, "position": position}
    lists.update({label: given for label, given in optional.items() if given is not None})
    for label, given in lists.items():
        if isinstance(given, (str, Mapping, set, frozenset)) or not (
            hasattr(given, "__len__") and hasattr(given, "__getitem__")
        ):
            raise CircuitxError(
                f"{label} takes a list with one entry per pair, not {quoted(given)}"
            )
    for label, given in (("clean", clean), ("corrupted", corrupted)):
        for i, text in enumerate(given):
            if not isinstance(text, str):
                raise CircuitxError(f"{label} prompt {i + 1} is not a string: {quoted(text)}")
    if len({len(given) for given in lists.values()}) > 1:
        *most, last = lists
        raise CircuitxError(f"{', '.join(most)} and {last} need one entry per pair")

    def words(value: str | Sequence[str], label: str, i: int) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        found = tuple(value) if hasattr(value, "__iter__") else None
        if found is None or not all(isinstance(word, str) for word in found):
            raise CircuitxError(
                f"{label} of pair {i + 1} takes a word or a list of words, not {quoted(value)}"
            )
        return found

    pairs = [
        PromptPair(
            c,
            k,
            words(a, "answers", i),
            words(wrong[i], "wrong", i) if wrong is not None else (),
            where=f"pair {i + 1}",
            position=None if position is None else read_position(position[i], f"pair {i + 1}"),
            named=() if positions is None else read_named_positions(positions[i], f"pair {i + 1}"),
        )
        for i, (c, k, a) in enumerate(zip(clean, corrupted, answers))
    ]
    given = [clean, corrupted, answers, wrong]
    given += [positions, position] if (positions, position) != (None, None) else []
    digest = hashlib.sha256(json.dumps(given, default=_as_json).encode()).hexdigest()
    return FileTask(pairs, name, digest)


def _as_json(value: Any) -> Any:
    """What the caller gave (a mapping, a sequence, a numpy or torch integer) as JSON can
    hold it, for the task's digest."""
    if isinstance(value, Mapping):
        return dict(value)
    try:
        return operator.index(value)
    except TypeError:
        return list(value)
