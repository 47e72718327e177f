"""Prompt pairs a researcher brings, read from a task file.

Three formats (told by the file's suffix, else by its content, or named):

- ``jsonl`` (ours): one object per line, ``{"clean": str, "corrupted": str, "answer": str |
  [str], "wrong": str | [str]}``. An answer is the word that continues the prompt,
  tokenised as it would continue it (a space between them unless the prompt ends in one
  or the answer starts with one: ``Mary`` after a prompt is GPT-2's `` Mary``); or token
  ids as ``answer_ids`` / ``wrong_ids``. Prompts as token ids are ``clean_ids`` /
  ``corrupted_ids`` (then the answers are ids too).
- ``eap-ig``: the CSV of EAP-IG and MIB (hannamw/EAP-IG), columns ``clean``,
  ``corrupted``, ``correct_idx`` and, optionally, ``incorrect_idx``: token ids (one, or,
  circuitx's extension, a list ``[1, 2]``); other columns are ignored. Or EAP-IG's
  greater-than CSV, columns ``clean``, ``corrupted``, ``label``: the start year's last two
  digits YY; the answers are the two-digit years above it, the wrong answers the others,
  each tokenised on its own (as MIB's year indices are), read with ``prob-diff``, the
  paper's metric, by default.
- ``auto-circuit``: auto-circuit's JSON dataset, ``{"prompts": [{"clean", "corrupt",
  "answers": [str], "wrong_answers": [str]}]}``, each answer tokenised on its own as
  auto-circuit does (so its datasets write `` Mary``); or its pre-tokenised form, prompts
  and answers as token ids, the prompts read as the model's input (the model's BOS put
  first unless they begin with it).

Every answer must be one token of the model (checked when the pairs are tokenised,
:class:`circuitx.tasks.base.FileTask`).
"""

from __future__ import annotations

import ast
import csv
import difflib
import hashlib
import io
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from circuitx.errors import CircuitxError, clipped, listed, quoted
from circuitx.files import check_input_file, load_json, named_twice
from circuitx.names import is_position_name

FORMATS = ("jsonl", "eap-ig", "auto-circuit")
NOT_A_TASK_FILE = (
    "not a task file: a task is a name (circuitx tasks) or a file of prompt pairs in "
    "JSONL, EAP-IG's CSV or auto-circuit's JSON"
)
SUFFIXES = {".jsonl": "jsonl", ".csv": "eap-ig", ".json": "auto-circuit"}
JSONL_KEYS = (
    "clean",
    "corrupted",
    "answer",
    "wrong",
    "answer_ids",
    "wrong_ids",
    "position",
    "positions",
    "clean_ids",
    "corrupted_ids",
)
# the other formats' names for our JSONL's keys
FOREIGN_KEYS = {
    "corrupt": "corrupted",
    "wrong_answers": "wrong",
    "wrong_answer": "wrong",
    "correct_idx": "answer_ids",
    "incorrect_idx": "wrong_ids",
}
AUTO_CIRCUIT_KEYS = ("clean", "corrupt", "answers", "wrong_answers", "position", "positions")
# our JSONL's (and EAP-IG's) names for auto-circuit's keys
AUTO_CIRCUIT_FOREIGN_KEYS = {
    "corrupted": "corrupt",
    "answer": "answers",
    "wrong": "wrong_answers",
    "wrong_answer": "wrong_answers",
}


@dataclass(frozen=True)
class PromptPair:
    """One clean prompt, its corrupted twin and what should follow the clean one: answers
    and wrong answers as text (``continues``: they continue the prompt; else each is
    tokenised on its own) or token ids, read after the clean prompt's last token or at
    ``position``. ``where`` names it in errors."""

    clean: str
    corrupted: str
    answers: tuple[str, ...] = ()
    wrongs: tuple[str, ...] = ()
    answer_ids: tuple[int, ...] = ()
    wrong_ids: tuple[int, ...] = ()
    continues: bool = True
    where: str = "pair"
    # the clean prompt's token (without BOS; negative: from its end) the answer follows
    # and the metric is read at; None: the last
    position: int | None = None
    # named tokens of the clean prompt (name, index as ``position``): the positions a
    # circuit over token positions has nodes at (--positions named)
    named: tuple[tuple[str, int], ...] = ()
    # the prompts as token ids instead of text (auto-circuit's pre-tokenised form, our
    # JSONL's clean_ids and corrupted_ids; then ``clean`` and ``corrupted`` are "")
    clean_ids: tuple[int, ...] = ()
    corrupted_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TaskFile:
    """A task file's prompt pairs, its name (the file's stem), a hash of its content and
    its path."""

    pairs: tuple[PromptPair, ...]
    name: str
    digest: str
    path: str
    metric: str | None = None  # the metric its format implies (a greater-than CSV's)
    notes: tuple[str, ...] = ()  # what the reading passed over that the user may have meant


@dataclass(frozen=True)
class ReadPairs:
    """A task file's prompt pairs as read, the metric its format implies (None: the
    task's default) and what the reading passed over that the user may have meant."""

    pairs: list[PromptPair]
    metric: str | None = None
    notes: tuple[str, ...] = ()


def read_pairs(text: str, kind: str, label: str) -> ReadPairs:
    """The prompt pairs of a task file's ``text`` in format ``kind``; ``label`` names the
    file in errors."""
    if not text.strip():  # one message in every format (a trial's met three)
        raise CircuitxError(f"{label} is empty: it has no prompt pairs")
    if kind == "jsonl":
        return ReadPairs(_read_jsonl(text, label))
    if kind == "eap-ig":
        return _read_eap_ig(text, label)
    return ReadPairs(_read_auto_circuit(text, label))


def sniff_format(path: Path, text: str) -> str:
    """The format a task file is in: by suffix, else by content."""
    if path.suffix.lower() in SUFFIXES:
        return SUFFIXES[path.suffix.lower()]
    stripped = text.lstrip()
    if stripped.startswith("{"):
        first = stripped.split("\n", 1)[0]
        try:
            row = json.loads(first)
        except ValueError:
            return "auto-circuit"  # one JSON document over several lines
        # auto-circuit's document on one line (json.dump's default) holds "prompts"
        return "auto-circuit" if isinstance(row, dict) and "prompts" in row else "jsonl"
    return "eap-ig"


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise CircuitxError(f"{where}: {key!r} is an empty list: give at least one word")
    if not all(isinstance(v, str) and v for v in values):
        raise CircuitxError(f"{where}: {key!r} must be a word or a list of words")
    return tuple(values)


def _ids(value: Any, where: str, key: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise CircuitxError(f"{where}: {key} {quoted(value)} is not a token id") from None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise CircuitxError(f"{where}: {key} is an empty list; give at least one token id")
    # a whole float (4692.0): how pandas writes an int column with a gap, and reads it back
    values = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise CircuitxError(f"{where}: {key} {quoted(value)} is not a token id or a list of them")
    return tuple(values)


def read_position(value: Any, where: str, what: str = "position") -> int | None:
    """A ``position`` field (``what``: a named one's ``position NAME``): a token index
    (negative from the end), or None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, (bool, str)):  # a numpy or torch integer from Python
        try:
            value = operator.index(value)
        except TypeError:
            pass
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise CircuitxError(
                f"{where}: {what} {json.dumps(value)} is not a token index"
            ) from None
    if not isinstance(value, int) or isinstance(value, bool):  # as the file wrote it: true
        raise CircuitxError(
            f"{where}: {what} {json.dumps(value, default=str)} is not a token index"
        )
    return value


def read_named_positions(value: Any, where: str) -> tuple[tuple[str, int], ...]:
    """A ``positions`` field: ``{"NAME": token index, ...}`` (a JSON object, or its text in
    a CSV cell), or () when absent."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = load_json(value, f"{where}: positions")
        except ValueError:
            raise CircuitxError(
                f"{where}: positions {quoted(value)} is not a JSON object"
            ) from None
    if not isinstance(value, dict):
        raise CircuitxError(f"{where}: positions must map names to token indices")
    named = []
    for name, index in value.items():
        if not is_position_name(str(name)) or name in ("END", "other"):
            raise CircuitxError(
                f"{where}: position name {name!r} must be letters, digits, _ and +, and not "
                "END or other (those are the read token and the rest)"
            )
        at = read_position(index, where, f"position {name}")
        if at is None:
            raise CircuitxError(f"{where}: position {name!r} has no token index")
        named.append((str(name), at))
    return tuple(named)


def _prompt(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise CircuitxError(f"{where} has no {key!r}")
    value = row[key]
    if not isinstance(value, str) or not value:
        raise CircuitxError(f"{where}: {key!r} must be a non-empty string")
    return value


def _read_jsonl(text: str, label: str) -> list[PromptPair]:
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{label} line {number}"
        try:
            row = load_json(line, where)
        except ValueError:
            hint = AUTO_CIRCUIT_HINT if _is_auto_circuit_json(text) else ""
            raise CircuitxError(f"{where} is not JSON{hint}") from None
        if not isinstance(row, dict):
            raise CircuitxError(f"{where} is not a JSON object")
        if "prompts" in row and not {"clean", "answer", "answer_ids"} & set(row):
            raise CircuitxError(f"{where} holds 'prompts', not a prompt pair{AUTO_CIRCUIT_HINT}")
        _check_keys(row, where)
        if "answer" not in row and "answer_ids" not in row:
            raise CircuitxError(f"{where} has no 'answer' (or 'answer_ids')")
        for text_key in ("answer", "wrong"):
            if text_key in row and f"{text_key}_ids" in row:  # which did the user mean?
                raise CircuitxError(
                    f"{where} gives both {text_key!r} and '{text_key}_ids': give one"
                )
        if "clean_ids" in row or "corrupted_ids" in row:
            pairs.append(_jsonl_ids(row, where))
            continue
        pairs.append(
            PromptPair(
                _prompt(row, "clean", where),
                _prompt(row, "corrupted", where),
                _strings(row["answer"], where, "answer") if "answer" in row else (),
                _strings(row["wrong"], where, "wrong") if "wrong" in row else (),
                _ids(row["answer_ids"], where, "answer_ids") if "answer_ids" in row else (),
                _ids(row["wrong_ids"], where, "wrong_ids") if "wrong_ids" in row else (),
                where=where,
                position=read_position(row.get("position"), where),
                named=read_named_positions(row.get("positions"), where),
            )
        )
    return pairs


def _jsonl_ids(row: dict, where: str) -> PromptPair:
    """A JSONL pair whose prompts are token ids (``clean_ids``, ``corrupted_ids``): its
    answers are token ids too, since a text answer continues a text prompt."""
    given = [key for key in ("clean", "corrupted", "answer", "wrong") if key in row]
    if given:
        raise CircuitxError(
            f"{where}: a pair with token-id prompts takes token ids throughout "
            f"(answer_ids, wrong_ids), not {', '.join(repr(key) for key in given)}"
        )
    for key in ("clean_ids", "corrupted_ids"):
        if key not in row:
            raise CircuitxError(f"{where} has no {key!r}: give both prompts as token ids")
    return PromptPair(
        "",
        "",
        answer_ids=_ids(row["answer_ids"], where, "answer_ids"),
        wrong_ids=_ids(row["wrong_ids"], where, "wrong_ids") if "wrong_ids" in row else (),
        where=where,
        position=read_position(row.get("position"), where),
        named=read_named_positions(row.get("positions"), where),
        clean_ids=_ids(row["clean_ids"], where, "clean_ids"),
        corrupted_ids=_ids(row["corrupted_ids"], where, "corrupted_ids"),
    )


def _check_keys(
    row: dict,
    where: str,
    keys: tuple[str, ...] = JSONL_KEYS,
    foreign: dict[str, str] = FOREIGN_KEYS,
) -> None:
    """Refuse a key that stands for one of the format's ``keys`` that the row lacks (a
    misspelling, or another format's name, as ``wrong_answers`` in our JSONL: ``foreign``
    maps those); other keys are the user's and ignored."""
    for key in row:
        if key in keys:
            continue
        close = difflib.get_close_matches(str(key).lower(), keys, n=1, cutoff=0.7)
        meant = foreign.get(key) or (close[0] if close else None)
        if meant is not None and meant not in row:
            raise CircuitxError(
                f"{where}: key {key!r} is not read; did you mean {meant!r}? (the keys read "
                f"are {', '.join(keys)})"
            )


def _read_eap_ig(text: str, label: str) -> ReadPairs:
    if text.lstrip().startswith(("{", "[")):
        raise CircuitxError(
            f"{label} is JSON, not EAP-IG's CSV: --task-format jsonl or auto-circuit reads JSON"
        )
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    if twice := named_twice(columns):  # DictReader keeps the last: which did the user mean?
        raise CircuitxError(f"{label} has the column {twice!r} twice")
    if "correct_idx" not in columns and "label" in columns:
        return ReadPairs(_read_greater_than(reader, label), "prob-diff")
    for column in ("clean", "corrupted", "correct_idx"):
        if column not in columns:
            have = listed([repr(clipped(name, 40)) for name in columns], 10) or "none"
            raise CircuitxError(f"{label} has no column {column!r} (its columns: {have})")
    pairs, labels = [], []
    for number, row in enumerate(reader, 2):
        where = f"{label} row {number}"
        _check_row_width(row, len(columns), where)
        labels.append((row.get("label") or "").strip())
        wrong = row.get("incorrect_idx")
        pairs.append(
            PromptPair(
                _prompt(row, "clean", where),
                _prompt(row, "corrupted", where),
                answer_ids=_ids(row["correct_idx"], where, "correct_idx"),
                wrong_ids=_ids(wrong, where, "incorrect_idx") if wrong not in (None, "") else (),
                where=where,
                position=read_position(row.get("position"), where),
                named=read_named_positions(row.get("positions"), where),
            )
        )
    return ReadPairs(pairs, notes=_passed_over_years(pairs, labels, label))


def ends_in_two_digits(prompt: str) -> bool:
    """Whether ``prompt`` ends in two digits, as a greater-than prompt ends in YY's
    century ("... to the year 17")."""
    return prompt.rstrip()[-2:].isdigit()


def _is_yy(text: str) -> bool:
    """Whether ``text`` is a year's last two digits, 00 to 98, as EAP-IG's greater-than
    CSV gives them in ``label`` (pandas writes 05 as 5)."""
    return text.isdigit() and int(text) <= 98


def _passed_over_years(
    pairs: Sequence[PromptPair], labels: Sequence[str], label: str
) -> tuple[str, ...]:
    """A note where a CSV read by ``correct_idx`` also has a ``label`` column of years'
    last two digits (its rows' ``labels``; a trial's pandas wrote 05 as 5) after prompts
    ending in two digits: EAP-IG's greater-than form, which reads the years as answers
    (probability difference), passed over for the token ids."""
    years = all(
        _is_yy(text) and ends_in_two_digits(pair.clean) for text, pair in zip(labels, pairs)
    )
    if not pairs or not years:
        return ()
    return (
        f"{label} has both correct_idx and a label column of years (YY): it is read "
        "by correct_idx (token ids, the metric at those tokens); without correct_idx it "
        "reads as EAP-IG's greater-than CSV (the years after label, prob-diff)",
    )


def _check_row_width(row: dict, n_columns: int, where: str) -> None:
    """Refuse a CSV row with more fields than the header names (a comma in an unquoted
    prompt splits it; DictReader would drop the rest) or fewer (it would fill them with
    None, refused later as a missing answer)."""
    extra = row.get(None)
    if extra:
        raise CircuitxError(
            f"{where} has {n_columns + len(extra)} fields and the header {n_columns}: quote "
            "a prompt that holds a comma"
        )
    given = sum(1 for key, value in row.items() if key is not None and value is not None)
    if given < n_columns:
        raise CircuitxError(f"{where} has {given} fields and the header {n_columns}")


def _read_greater_than(reader: csv.DictReader, label: str) -> list[PromptPair]:
    """EAP-IG's greater-than CSV (``clean``, ``corrupted``, ``label``): the answers are
    the two-digit years after ``label`` (YY, the start year's last two digits), the wrong
    ones YY and before, as Hanna et al.'s probability difference counts them."""
    pairs = []
    for number, row in enumerate(reader, 2):
        where = f"{label} row {number}"
        _check_row_width(row, len(reader.fieldnames or ()), where)
        text = (row.get("label") or "").strip()
        if not _is_yy(text):
            raise CircuitxError(
                f"{where}: label {quoted(text)} is not a year's last two digits from 00 to 98 "
                "(EAP-IG's greater-than CSV)"
            )
        year = int(text)
        pairs.append(
            PromptPair(
                _prompt(row, "clean", where),
                _prompt(row, "corrupted", where),
                tuple(f"{yy:02d}" for yy in range(year + 1, 100)),
                tuple(f"{yy:02d}" for yy in range(year + 1)),
                continues=False,
                where=where,
            )
        )
    return pairs


AUTO_CIRCUIT_HINT = (
    '; the file reads as auto-circuit\'s JSON ({"prompts": [...]}): name it .json or '
    "pass --task-format auto-circuit"
)


def _is_auto_circuit_json(text: str) -> bool:
    """Whether ``text`` is one JSON object with ``prompts`` (auto-circuit's), as a JSON
    Lines file whose line 1 is not JSON may be, written over several lines."""
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and "prompts" in data


def _read_auto_circuit(text: str, label: str) -> list[PromptPair]:
    try:
        data = load_json(text, label)
    except ValueError:
        if _json_lines(text):
            way = (  # a .jsonl file comes here only by --task-format auto-circuit
                "pass --task-format jsonl, or none (its name says JSON Lines)"
                if label.lower().endswith(".jsonl")
                else "name it .jsonl or pass --task-format jsonl"
            )
            raise CircuitxError(
                f"{label} is JSON Lines (an object a line), not one JSON document: {way}"
            ) from None
        raise CircuitxError(f"{label} is not JSON") from None
    if isinstance(data, dict) and (
        data.get("format") == "circuitx-graph" or {"nodes", "edges"} <= data.keys()
    ):
        raise CircuitxError(f"{label} is a circuit graph, {NOT_A_TASK_FILE}")
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        rows = isinstance(data, list) and data and isinstance(data[0], dict)
        ours = rows and "corrupted" in data[0]  # our JSONL's rows, as one JSON list
        raise CircuitxError(
            f'{label} is JSON but not a task: expected {{"prompts": [{{"clean", '
            '"corrupt", "answers", "wrong_answers"}, ...]}'
            + ("; rows of circuitx's JSONL go one a line in a .jsonl file" if ours else "")
        )
    pairs = []
    for number, row in enumerate(data["prompts"], 1):
        where = f"{label} prompt {number}"
        if not isinstance(row, dict):
            raise CircuitxError(f"{where} is not a JSON object")
        _check_keys(row, where, AUTO_CIRCUIT_KEYS, AUTO_CIRCUIT_FOREIGN_KEYS)
        for key in ("answers", "wrong_answers"):
            if key not in row:
                raise CircuitxError(f"{where} has no {key!r}")
        if isinstance(row.get("clean"), list) or isinstance(row.get("corrupt"), list):
            pairs.append(_pre_tokenised(row, where))
            continue
        for key in ("clean", "corrupt"):
            if key in row and not isinstance(row[key], str):
                raise CircuitxError(f"{where}: {key!r} must be text or a list of token ids")
        pairs.append(
            PromptPair(
                _prompt(row, "clean", where),
                _prompt(row, "corrupt", where),
                _strings(row["answers"], where, "answers"),
                _strings(row["wrong_answers"], where, "wrong_answers"),
                continues=False,
                where=where,
                position=read_position(row.get("position"), where),
                named=read_named_positions(row.get("positions"), where),
            )
        )
    return pairs


def _json_lines(text: str) -> bool:
    """Whether ``text``'s first two non-blank lines are each a JSON object."""
    lines = [line for line in text.splitlines() if line.strip()][:2]
    try:
        return len(lines) == 2 and all(isinstance(json.loads(line), dict) for line in lines)
    except ValueError:
        return False


def _pre_tokenised(row: dict, where: str) -> PromptPair:
    """An auto-circuit prompt pair given as token ids: prompts, answers and wrong answers."""
    for key in ("clean", "corrupt"):
        if key not in row:
            raise CircuitxError(f"{where} has no {key!r}")
        if not isinstance(row[key], list):
            raise CircuitxError(
                f"{where}: one prompt is token ids and the other not; give both as token ids "
                "or both as text"
            )
    for key in ("answers", "wrong_answers"):
        values = row[key] if isinstance(row[key], list) else [row[key]]
        if any(isinstance(v, str) for v in values):
            raise CircuitxError(
                f"{where}: the prompts are token ids, so {key!r} must be token ids too (a "
                "text answer is tokenised after a text prompt)"
            )
        if any(isinstance(v, list) for v in values):
            raise CircuitxError(
                f"{where}: {key!r} holds a list of tokens per position (auto-circuit's "
                "tracr datasets); circuitx reads answers at one position, and reads a tracr "
                "model's every position with --task tracr"
            )
    return PromptPair(
        "",
        "",
        answer_ids=_ids(row["answers"], where, "answers"),
        wrong_ids=_ids(row["wrong_answers"], where, "wrong_answers"),
        continues=False,
        where=where,
        position=read_position(row.get("position"), where),
        named=read_named_positions(row.get("positions"), where),
        clean_ids=_ids(row["clean"], where, "clean"),
        corrupted_ids=_ids(row["corrupt"], where, "corrupt"),
    )


def is_task_file(spec: str) -> bool:
    """Whether ``spec`` names a task file (an existing file, or a task file's suffix)."""
    path = Path(spec).expanduser()
    return path.suffix.lower() in SUFFIXES or path.is_file()


def read_task_file(spec: str, kind: str | None = None) -> TaskFile:
    """The prompt pairs in file ``spec`` (format ``kind``, else told by suffix and
    content); read once while the file is unchanged."""
    if kind is not None and kind not in FORMATS:
        raise CircuitxError(f"unknown task format {kind!r}; choose from {', '.join(FORMATS)}")
    path = check_input_file(Path(spec).expanduser(), "task file")
    stat = path.stat()
    return _read(str(path.resolve()), stat.st_size, stat.st_mtime_ns, kind)


@lru_cache(maxsize=8)
def _read(path: str, size: int, mtime: int, kind: str | None) -> TaskFile:
    raw, label = Path(path).read_bytes(), Path(path).name  # errors name it as rows do
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (as spreadsheets save) dropped
    except UnicodeDecodeError as error:
        raise CircuitxError(
            f"task file {label} is not UTF-8 text (byte {raw[error.start]:#04x} at offset "
            f"{error.start})"
        ) from None
    if text.lstrip().startswith("<"):
        raise CircuitxError(f"{label} is XML (a GraphML circuit graph?), {NOT_A_TASK_FILE}")
    read = read_pairs(text, kind or sniff_format(Path(path), text), label)
    if not read.pairs:
        raise CircuitxError(f"task file {label} has no prompt pairs")
    digest = hashlib.sha256(raw).hexdigest()  # as sha256sum prints it
    return TaskFile(tuple(read.pairs), Path(path).stem, digest, path, read.metric, read.notes)
