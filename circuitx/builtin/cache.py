"""Where built-in models (and what is trained for them) are cached, and building into it.

``cache_dir`` is passed down explicitly from the command line or the caller; the
environment is read here alone, as the default: ``$CIRCUITX_CACHE_DIR``, else
``$XDG_CACHE_HOME/circuitx``, else ``~/.cache/circuitx``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from circuitx.errors import CircuitxError, stop_if_interrupted
from circuitx.files import plain_permissions, unfinished_beside
from circuitx.progress import announce

BUILD_THREADS = 1
"""Torch CPU threads every built-in build runs on: float sums depend on the thread count,
so a fixed count makes a build's bytes the same on any machine and in any process."""
BUILT_MARKER = "config.json"  # a built model directory holds it


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch CPU threads, then restore the process's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, or the default cache directory; an empty one is refused (it would
    be the working directory), where an empty ``$CIRCUITX_CACHE_DIR`` counts as unset."""
    if cache_dir is not None:
        if not os.fspath(cache_dir).strip():
            raise CircuitxError("the cache directory is empty: name a directory, or pass None")
        return Path(cache_dir).expanduser()
    if os.environ.get("CIRCUITX_CACHE_DIR"):
        return Path(os.environ["CIRCUITX_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "circuitx"


def build_once(
    target: Path,
    build: Callable[[Path], None],
    marker: str = BUILT_MARKER,
    announcement: str | None = None,
    option: str | None = None,
) -> Path:
    """``target``, built by ``build(directory)`` into a staging directory beside it and
    moved into place (a cache's ``target`` without ``marker``, damaged, replaced), unless
    it already holds ``marker``; ``announcement`` is written on
    stderr first when it builds. The build runs on ``BUILD_THREADS`` threads. Concurrent
    builders are safe: the first to finish wins, the others' work is dropped, or, where
    ``target`` is the user's ``option`` (``--out``) rather than a cache, the others fail
    in one line (two runs may have built different things)."""
    if (target / marker).is_file():
        return target
    if announcement:
        announce(announcement)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = unfinished_beside(target, ".staging")
    except OSError as error:
        raise CircuitxError(f"cannot write {target.parent}: {error}") from None
    try:
        with torch_threads(BUILD_THREADS):
            build(staging)
        plain_permissions(staging)
        stop_if_interrupted()
        if option is None and target.is_dir() and not (target / marker).is_file():
            # a cache entry damaged since it was built (its marker removed): "Directory
            # not empty" refused the move, on every run (a helper's trial). Moved aside
            # whole, then removed: another builder's move finds it gone, not half removed
            damaged = unfinished_beside(target, ".staging")
            try:
                os.replace(target, damaged)
            except FileNotFoundError:
                pass  # another builder moved it first
            shutil.rmtree(damaged, ignore_errors=True)
        os.replace(staging, target)
    except OSError:
        if option is not None and target.is_dir() and any(target.iterdir()):
            raise CircuitxError(
                f"{option} {target} was written by another run while this one built; this "
                "run's result is not kept"
            ) from None
        if not (target / marker).is_file():  # not merely lost a race to another builder
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
