"""RASP programs: the built-in ones, and a user's ``PROGRAM`` (a function of
``tracr.compiler.lib``, ``module:function`` or ``file.py:function``) made into a program.

tracr is an optional dependency (``pip install -e ".[tracr]"``); it is imported when a
program is made, so that commands which never compile one do not load jax.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from circuitx.errors import CircuitxError

INSTALL_HINT = "tracr models need the tracr extra: pip install 'circuitx[tracr]'"


def tracr_modules() -> tuple[Any, Any, Any]:
    """``(compiling, lib, rasp)`` from tracr, or a one-line error when it is missing."""
    try:
        from tracr.compiler import compiling, lib
        from tracr.rasp import rasp
    except ImportError:
        raise CircuitxError(INSTALL_HINT) from None
    return compiling, lib, rasp


def reverse() -> Any:
    """The input reversed (ACDC's tracr-reverse: ``make_reverse(tokens)``)."""
    _, lib, rasp = tracr_modules()
    return lib.make_reverse(rasp.tokens)


def proportion() -> Any:
    """At each position, the fraction of tokens so far that are ``x`` (ACDC's
    tracr-proportion: ``make_frac_prevs(tokens == "x")``)."""
    _, lib, rasp = tracr_modules()
    return lib.make_frac_prevs(rasp.tokens == "x")


def sort() -> Any:
    """The (unique) tokens sorted: ``make_sort_unique(tokens, tokens)``."""
    _, lib, rasp = tracr_modules()
    return lib.make_sort_unique(rasp.tokens, rasp.tokens)


def hist() -> Any:
    """At each position, how often its token occurs: ``make_hist()``."""
    _, lib, _ = tracr_modules()
    return lib.make_hist()


@contextmanager
def _importing_from(directory: Path) -> Iterator[None]:
    """Imports inside also look in ``directory`` first (the command line's working
    directory, where a user's module sits; an installed script's path lacks it)."""
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        sys.path.remove(str(directory))


def _takes_a_sop(parameter: inspect.Parameter, rasp: Any) -> bool:
    kind = parameter.annotation
    if kind is parameter.empty:
        return parameter.name == "sop"
    if isinstance(kind, str):  # a module with postponed annotations
        return kind.rpartition(".")[2] == "SOp"
    return isinstance(kind, type) and issubclass(kind, rasp.SOp)


def user_program(spec: str, max_seq_len: int) -> Any:
    """The RASP program ``spec`` names: a function of ``tracr.compiler.lib`` (each required
    SOp argument gets ``tokens``, a ``max_seq_len`` argument the maximum length) or
    ``module:function`` (``file.py:function``) called the same way."""
    _, lib, rasp = tracr_modules()
    if ":" in spec:
        module_name, _, attribute = spec.rpartition(":")
        module = _user_module(module_name)
    else:
        module_name, module, attribute = "tracr.compiler.lib", lib, spec
    function = getattr(module, attribute, None)
    if function is None:
        hint = (
            "" if ":" in spec else " (a program of your own: MODULE:FUNCTION or FILE.py:FUNCTION)"
        )
        raise CircuitxError(f"no function {attribute!r} in {module_name}{hint}")
    if not callable(function):
        raise CircuitxError(
            f"{attribute!r} in {module_name} is a {type(function).__name__}, not a function"
        )
    program = _call(function, spec, max_seq_len, rasp)
    if not isinstance(program, rasp.SOp):
        raise CircuitxError(f"{spec} returned {type(program).__name__}, not a RASP program")
    return program


def _user_module(name: str) -> Any:
    """The module ``name`` names: a .py file's path (imported with its folder first on the
    path, for its own imports), or a module named as ``python -m`` would find it from
    the current directory."""
    path = Path(name)
    is_path = name.endswith(".py") or "/" in name or "\\" in name
    if is_path and not path.is_file():
        raise CircuitxError(f"no program file {name} (a .py file's path, or a module name)")
    try:
        with _importing_from(path.parent.resolve() if is_path else Path.cwd()):
            if not is_path:
                return importlib.import_module(name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    except Exception as error:  # ImportError, a SyntaxError in it, anything it raised
        said = " ".join(str(error).split())
        raise CircuitxError(f"cannot import {name!r}: {type(error).__name__}: {said}") from None


def _call(function: Callable[..., Any], spec: str, max_seq_len: int, rasp: Any) -> Any:
    """``function`` called with ``tokens`` for each required SOp argument (annotated
    ``SOp``, or a bare ``sop``) and the length for ``max_seq_len``; refused in one line
    where it requires another argument, which only the user can choose."""
    args, kwargs = [], {}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.default is not inspect.Parameter.empty or parameter.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            continue
        if parameter.name == "max_seq_len":
            value = max_seq_len
        elif _takes_a_sop(parameter, rasp):
            value = rasp.tokens
        else:
            kind = parameter.annotation
            said = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
            named = f" ({said})" if kind is not parameter.empty else ""
            raise CircuitxError(
                f"{spec} needs {parameter.name}{named}, which build-tracr cannot choose: "
                "call it from a module:function of your own (see docs/tracr.md)"
            )
        if parameter.kind == inspect.Parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = value
        else:
            args.append(value)
    try:
        return function(*args, **kwargs)
    except Exception as error:  # a user's program: report what it raised, in one line
        raise CircuitxError(f"{spec} failed: {type(error).__name__}: {error}") from None
