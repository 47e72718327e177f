"""Training text as token sequences: the task prompts, a text file or a hub dataset."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from circuitx.errors import CircuitxError, first_line
from circuitx.files import check_input_file
from circuitx.models import Model
from circuitx.tasks import TASKS

BUILTIN_CORPUS = "tasks"  # text generated from every task's prompts


@dataclass
class Corpus:
    """Token sequences [n, context] (BOS first where the model has one) and which of their
    tokens are real [n, context] (False: padding)."""

    tokens: torch.Tensor
    real: torch.Tensor
    source: str

    @property
    def n_tokens(self) -> int:
        return int(self.real.sum())


def load_corpus(
    model: Model,
    corpus: str,
    context: int,
    seed: int,
    max_tokens: int = 2_000_000,
    text: str | None = None,
) -> Corpus:
    """``corpus`` as token sequences: ``tasks`` (prompts every task generates for this model,
    each followed by its answer), a local text file, or a Hugging Face dataset name.
    ``text``: the file's text where the caller has read it (:func:`corpus_file_text`)."""
    context = min(context, model.n_ctx)
    if corpus == BUILTIN_CORPUS:
        return _task_corpus(model, context, seed, max_tokens)
    text = corpus_file_text(corpus) if text is None else text
    if text is not None:
        return _chunk(model, [text], context, str(Path(corpus).expanduser()), max_tokens)
    return _chunk(model, _dataset_texts(corpus, max_tokens), context, corpus, max_tokens)


def corpus_file_text(corpus: str) -> str | None:
    """The text of the corpus file ``corpus`` names, or None where it names the built-in
    corpus or a dataset; a file that is missing (where the name looks like a path), empty
    or not UTF-8 text is refused in one line, before any model is loaded."""
    if corpus == BUILTIN_CORPUS:
        return None
    path = Path(corpus).expanduser()
    if path.is_file():
        text = _read_text(path, corpus)
        if not text.strip():
            raise CircuitxError(f"corpus {corpus} is empty")
        return text
    if path.exists() or corpus.startswith((".", "/", "~")) or corpus.endswith(".txt"):
        check_input_file(path, "corpus file")  # it is no regular file: raises, saying why
    return None


def _read_text(path: Path, corpus: str) -> str:
    """The corpus file's text, which must be UTF-8: a binary file (a model's weights, an
    archive) given by mistake would otherwise be trained on as replacement characters."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CircuitxError(
            f"corpus {corpus} is not UTF-8 text (byte {error.start} is not): give a text file, "
            "or convert it (iconv -t UTF-8)"
        ) from None


def _dataset_texts(name: str, max_tokens: int) -> Iterator[str]:
    try:  # one request first: the datasets loader retries an unreachable hub for ~30 s,
        # printing each retry (a trial's)
        from huggingface_hub import dataset_info

        dataset_info(name, timeout=10)
    except Exception as error:
        raise CircuitxError(
            f"corpus {name!r} is not a file, and no dataset of that name can be reached on "
            f"the hub ({first_line(error)})"
        ) from None
    try:
        import datasets

        stream = datasets.load_dataset(name, split="train", streaming=True)
        first = next(iter(stream))
    except Exception as error:
        raise CircuitxError(
            f"corpus {name!r} is not a file, and no dataset of that name can be loaded "
            f"({first_line(error)})"
        ) from None
    if "text" not in first:
        raise CircuitxError(f"dataset {name!r} has no 'text' column")
    characters = 0
    for row in stream:
        yield row["text"]
        characters += len(row["text"])
        if characters > 8 * max_tokens:  # comfortably more than max_tokens tokens
            return


def _chunk(
    model: Model, texts: Iterator[str] | list[str], context: int, source: str, max_tokens: int
) -> Corpus:
    bos = [] if model.bos_token_id is None else [model.bos_token_id]
    width = context - len(bos)
    stream: list[int] = []
    for text in texts:
        stream += model.encode(text)
        if len(stream) >= max_tokens:
            break
    if not stream:
        raise CircuitxError(f"corpus {source} has no tokens")
    # max_tokens counts each row's BOS too: full rows of context tokens, then what is left
    full, rest = divmod(max_tokens, context)
    stream = stream[: full * width + max(0, rest - len(bos))]
    if not stream:
        raise CircuitxError(f"--max-tokens {max_tokens} leaves no room for text after the BOS")
    rows = [bos + stream[i : i + width] for i in range(0, len(stream), width)]
    return _pad(model, rows, context, source)


def _task_corpus(
    model: Model, context: int, seed: int, max_tokens: int, per_task: int = 512
) -> Corpus:
    """Every task's prompts with their answers; above ``max_tokens`` tokens, a sample of
    them drawn by ``seed`` that stays within it (at least one)."""
    rows: list[list[int]] = []
    for task in TASKS.values():
        try:
            data = task.make_data(model, per_task, seed)
        except CircuitxError:  # a task this model's vocabulary cannot express
            continue
        end = data.positions["END"]
        answers = data.answer.tolist() if data.readout is None else None  # else: every position
        for batch in (data.clean, data.corrupted):
            for i, (row, last) in enumerate(zip(batch.tolist(), end.tolist())):
                rows.append((row[: last + 1] + ([answers[i]] if answers else []))[:context])
    if not rows:
        raise CircuitxError(f"no task can make prompts for model {model.name!r}")
    if sum(len(row) for row in rows) > max_tokens:
        random.Random(seed).shuffle(rows)
        kept, total = [], 0
        for row in rows:
            if kept and total + len(row) > max_tokens:
                break
            kept.append(row)
            total += len(row)
        rows = kept
    return _pad(model, rows, context, BUILTIN_CORPUS)


def _pad(model: Model, rows: list[list[int]], context: int, source: str) -> Corpus:
    width = min(context, max(len(row) for row in rows))
    tokens = torch.full((len(rows), width), model.pad_token_id, dtype=torch.long)
    real = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row[:width])
        real[i, : len(row)] = True
    return Corpus(tokens, real, source)


def holds_out(corpus: Corpus) -> bool:
    """Whether :func:`held_out_split` can hold sequences out: the corpus has two or more."""
    return len(corpus.tokens) >= 2


def held_out_split(
    corpus: Corpus, seed: int, share: float = 0.1, cap: int = 256
) -> tuple[Corpus, Corpus]:
    """(training, held-out) corpora: a seeded share of the sequences, at most ``cap``, held
    out; a corpus of one sequence is both (see :func:`holds_out`)."""
    n = len(corpus.tokens)
    if not holds_out(corpus):
        return corpus, corpus
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    n_held = min(cap, max(1, int(n * share)))
    held, train = order[:n_held], order[n_held:]
    return (
        Corpus(corpus.tokens[train], corpus.real[train], corpus.source),
        Corpus(corpus.tokens[held], corpus.real[held], corpus.source),
    )
