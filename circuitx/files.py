"""Output files and JSON: atomic writes (a reader never sees a half-written file), output
paths checked before any work, and strict JSON (no NaN or Infinity)."""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import shutil
import socket
import tempfile
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from circuitx.errors import CircuitxError, ctrl_c_held, deferred_interrupts, stop_if_interrupted


def refuse_empty(path: str | os.PathLike, option: str, what: str) -> None:
    """Fail in one line where ``path``, given as ``option``, is empty or blank (an unset
    shell variable): ``Path("")`` is the working directory, which exists."""
    if not os.fspath(path).strip():
        raise CircuitxError(f"{option} is empty: name {what}")


def check_output_path(path: str | os.PathLike, option: str = "--out") -> Path:
    """Return ``path`` as a Path, or fail in one line unless a file can be written there:
    its directory exists and takes a new file (one is made and removed), and ``path`` is
    not a directory or a special file (a device, a pipe). A symbolic link is written
    through, as ``open`` writes: the path returned is its target's (``/dev/stdout``
    redirected to a file is that file), so the link stays a link. An empty path (an
    unset shell variable, given as ``option``) is refused: it would name no file."""
    refuse_empty(path, option, "a file")
    if os.fspath(path).endswith(("/", os.sep)):  # Path() drops the slash that says directory
        raise CircuitxError(f"output path ends in a slash, which names a directory: {path}")
    path = Path(path)
    if path.is_dir():
        raise CircuitxError(f"output path is a directory: {path}")
    if path.exists() and not path.is_file():
        raise CircuitxError(f"output path is not a regular file: {path}")
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise CircuitxError(f"output directory is not a directory: {parent}")
    if not parent.is_dir():
        raise CircuitxError(f"output directory does not exist: {parent}")
    refused = _refuses_new_files(parent, path.name)
    if refused:
        raise CircuitxError(f"cannot write to {parent}: {refused}")
    return path


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`Path`, refused in one line unless it is a regular file to read
    ``what`` (``graph file``) from: not found, a directory, or another kind (``/dev/null``)."""
    path = Path(path)
    if path.is_dir():
        raise CircuitxError(f"{os.fspath(path)} is a directory, not a {what}")
    if path.exists() and not path.is_file():
        raise CircuitxError(f"{os.fspath(path)} is not a regular file, so not a {what}")
    if not path.is_file():
        raise CircuitxError(f"{what} not found: {os.fspath(path)}")
    return path


def file_suffix(path: str | os.PathLike) -> str:
    """``path``'s extension, lower case without the dot; a symbolic link without one
    takes its target's (``/dev/stdout`` redirected to g.dot is a .dot)."""
    suffix = Path(path).suffix
    if not suffix and Path(path).is_symlink():
        suffix = Path(os.path.realpath(path)).suffix
    return suffix.lower().lstrip(".")


def check_directory_can_be_made(path: str | os.PathLike, option: str) -> Path:
    """Return ``path`` as a Path, or fail in one line unless it is a directory that takes
    new files or can be made as one: its nearest existing ancestor is a directory that
    takes a new file (one is made and removed). An empty ``path`` (an unset shell
    variable, given as ``option``) is refused: it would be the working directory."""
    refuse_empty(path, option, "a directory")
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CircuitxError(f"{option} {path} cannot be a directory: {existing} is not one")
    refused = _refuses_new_files(existing, "circuitx")
    if refused:
        raise CircuitxError(f"cannot make {path} in {existing}: {refused}")
    return path


def check_new_directory(path: str | os.PathLike, option: str = "--out") -> Path:
    """Return ``path`` (``~`` expanded) as a Path, or fail in one line unless it can be a
    new directory: it does not exist (or is an empty directory), and its parent is an
    existing directory that takes new files. Parents are never made: a mistyped one is
    an error, not a new tree."""
    refuse_empty(path, option, "a new directory")
    path = Path(path).expanduser()
    if _occupied(path):
        raise CircuitxError(f"{option} {path} exists; choose a new directory")
    parent = check_parent_directory(path, option)
    refused = _refuses_new_files(parent, path.name)
    if refused:
        raise CircuitxError(f"cannot write to {parent}: {refused}")
    return path


def _occupied(path: Path) -> bool:
    """Whether ``path`` is taken for a new directory: a file, or a directory with entries."""
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_parent_directory(path: Path, option: str = "--out") -> Path:
    """``path``'s parent directory, or fail in one line where it does not exist."""
    parent = path.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise CircuitxError(f"{option}'s parent is not a directory: {parent}")
    if not parent.is_dir():
        raise CircuitxError(f"{option}'s parent directory does not exist: {parent}")
    return parent


def check_not_an_input(out: str | os.PathLike, inputs: dict[str, Any]) -> None:
    """Fail in one line where the output path ``out`` is one of the command's input files
    (``inputs`` maps an option's name to its value; values that name no file are passed
    over): writing the result would destroy the input."""
    if not Path(out).exists():
        return
    for option, value in inputs.items():
        if isinstance(value, (str, os.PathLike)) and Path(value).is_file():
            if os.path.samefile(out, value):
                raise CircuitxError(
                    f"{out} is the {option} file: writing there would replace it; choose "
                    "another output path"
                )


def _refuses_new_files(directory: Path, name: str) -> str | None:
    """Why ``directory`` takes no new file (the OS's words), or None where it does: a
    probe file ``.NAME.*.probe`` is made there and removed."""
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{name}.", suffix=".probe", dir=directory)
    except OSError as error:
        said = str(error.strerror or error)
        if error.errno == errno.ENOENT and directory.is_dir():  # /proc: "no such file"
            return f"it takes no new files ({said})"
        return said
    os.close(fd)
    os.unlink(probe)
    return None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in lists, tuples and dicts) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def plain(value: Any) -> Any:
    """A value as JSON writes it: numpy scalars as Python's, NaN and infinite floats (in
    lists and dicts too) as None."""
    return finite(scalar(value))


def scalar(value: Any) -> Any:
    """A numpy or torch scalar as Python's, else ``value``."""
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def read_score(value: Any, element: str, nullable: bool = True) -> float | None:
    """A score read from a file: a finite number (not a string, a bool or NaN), or None
    where the format has ``nullable`` scores."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        allowed = "a finite number or null" if nullable else "a finite number"
        raise CircuitxError(f"{element}: score must be {allowed}, not {value!r}")
    return float(value)


def read_flag(value: Any, element: str, attribute: str) -> bool:
    """A membership read from a file: true or false (not a string, a number or null)."""
    if not isinstance(value, bool):
        raise CircuitxError(f"{element}: {attribute} must be true or false, not {value!r}")
    return value


def named_twice(names: Iterable[str]) -> str | None:
    """The first (in sorted order) of ``names`` that comes more than once, or None."""
    return min((name for name, count in Counter(names).items() if count > 1), default=None)


def load_json(text: str, where: str) -> Any:
    """Parse JSON ``text``, refusing an object that gives a key twice (json keeps the
    last: which was meant?); the message names it after ``where``."""

    def once_each(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found = dict(items)
        if len(found) < len(items):
            raise CircuitxError(f"{where} gives {named_twice(k for k, _ in items)!r} twice")
        return found

    return json.loads(text, object_pairs_hook=once_each)


def size_text(size: float) -> str:
    """A size in bytes in words: ``12.3 MiB``, ``1.5 GiB`` (three significant digits)."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} bytes"


def json_text(value: Any, indent: int | None = 2) -> str:
    """Strict JSON of ``value``: a non-finite number is written as null."""
    return json.dumps(finite(value), indent=indent, allow_nan=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plain_permissions(directory: Path) -> None:
    """Give ``directory``, its subdirectories and files the permissions ``mkdir`` and a
    plain ``open`` would (a staging directory from mkdtemp is 0700, and some writers make
    their files 0600)."""
    mask = _umask()
    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _owner() -> str:
    """``PID@HOST``: this process, as the name of a file it writes before moving it into
    place records it."""
    return f"{os.getpid()}@{socket.gethostname()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # not ours to signal: alive
        return True
    return True


def unfinished_beside(path: Path, suffix: str) -> Path:
    """A new hidden file (``suffix`` ``.tmp``) or directory (``.staging``) beside ``path``,
    to be moved over it when done, named for this process (:func:`_owner`). Those that a
    process of this machine, now dead, left for ``path`` are removed first: a SIGKILL
    (the OOM killer, a batch system's hard stop) gives no chance to, and a killed build
    leaves a model's weights."""
    remove_orphans(path)
    prefix = f".{path.name}.{_owner()}."
    if suffix == ".staging":
        return Path(tempfile.mkdtemp(suffix, prefix, path.parent))
    descriptor, made = tempfile.mkstemp(suffix, prefix, path.parent)
    os.close(descriptor)
    return Path(made)


def remove_orphans(path: Path) -> None:
    """Remove the hidden temporary files and staging directories of ``path``
    (:func:`unfinished_beside`) whose process ran on this machine and is gone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)@(.+)\.[^.]+\.(tmp|staging)")
    host = socket.gethostname()
    for orphan in path.parent.glob(f".{glob.escape(path.name)}.*@*"):
        found = pattern.fullmatch(orphan.name)
        if found is None or found[2] != host or _alive(int(found[1])):
            continue
        directory = orphan.is_dir() and not orphan.is_symlink()
        if directory and found[3] == "staging":
            shutil.rmtree(orphan, ignore_errors=True)
        elif not directory and found[3] == "tmp":
            orphan.unlink(missing_ok=True)


def _claim_holder(claim: Path) -> str:
    try:
        return claim.read_text().strip()
    except OSError:
        return ""


def _claim_is_stale(claim: Path) -> bool:
    """Whether ``claim`` was left by a process of this machine that is gone (a SIGKILL
    gives no chance to remove it)."""
    pid, _, host = _claim_holder(claim).partition("@")
    return host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))


def _take_claim(claim: Path, path: Path, option: str) -> None:
    for _ in range(2):  # once more after removing a dead process's claim
        try:
            descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666 & ~_umask())
        except FileExistsError:
            if _claim_is_stale(claim):
                claim.unlink(missing_ok=True)
                continue
            holder = _claim_holder(claim) or "a process"
            raise CircuitxError(
                f"{option} {path} is being written by another run ({holder}); choose another "
                f"directory, or, if no run is writing it, remove {claim}"
            ) from None
        except OSError as error:
            raise CircuitxError(f"cannot write {claim.parent}: {error}") from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_owner())
        return
    raise CircuitxError(f"{option} {path} is being written by another run")


@contextmanager
def claim_directory(path: Path, option: str = "--out", new: bool = True) -> Iterator[Path]:
    """Hold the output directory ``path`` while the block writes into it, so that another
    run given it fails in one line rather than writing its files in among this one's (the
    claim is a hidden file beside it, naming this process); with ``new``, ``path`` must
    still be missing or empty."""
    path = path.absolute()
    claim = path.parent / f".{path.name}.circuitx-writing"
    _take_claim(claim, path, option)
    try:
        if new and _occupied(path):
            raise CircuitxError(
                f"{option} {path} was written by another run; choose a new directory"
            )
        yield path
    finally:
        if _claim_holder(claim) == _owner():
            claim.unlink(missing_ok=True)


# the files written inside :func:`written_together`, each (its temporary file, its path)
_together: ContextVar[list[tuple[Path, Path]] | None] = ContextVar("together", default=None)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside ``path``; move it over ``path`` only on success
    (inside :func:`written_together`, when every file of the set is written).

    The file gets the permissions a plain ``open`` would give it (mkstemp's are 0600). A
    failing write names ``path`` (a full disk's error names no file)."""
    path = check_output_path(path)
    tmp = unfinished_beside(path.absolute(), ".tmp")
    together = _together.get()
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        stop_if_interrupted()
        if together is None:
            os.replace(tmp, path)
        else:
            together.append((tmp, path))
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename is None and error.errno is not None:
            error.filename = str(path)  # not a library's own OSError: its message would go
        raise


@contextmanager
def written_together() -> Iterator[None]:
    """Inside, the files :func:`atomic_open` writes replace their paths together, once all
    are written: where one fails or the run is interrupted, none does, so a graph and its
    picture, or a leaderboard's tables and pages, are never of two runs. Nested: the
    outermost set moves them."""
    if _together.get() is not None:
        yield
        return
    staged: list[tuple[Path, Path]] = []
    token = _together.set(staged)
    try:
        try:
            yield
            stop_if_interrupted()
        finally:
            _together.reset(token)
        # renames in the files' own directories, a Ctrl-C held until all are done (a
        # rename that fails, a disk gone, leaves those before it done)
        with deferred_interrupts(), ctrl_c_held():
            for tmp, path in staged:
                os.replace(tmp, path)
    finally:  # what is not in place is not left beside it
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
