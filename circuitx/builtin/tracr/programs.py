"""RASP programs: the built-in ones, and a user's ``PROGRAM`` (a function of
``tracr.compiler.lib`` or ``module:function``) made into a program.

tracr is an optional dependency (``pip install -e ".[tracr]"``); it is imported when a
program is made, so that commands which never compile one do not load jax.
"""

from __future__ import annotations

import importlib
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
    ``module:function`` called the same way."""
    _, lib, rasp = tracr_modules()
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            with _importing_from(Path.cwd()):  # as ``python -m`` would find it
                module = importlib.import_module(module_name)
        except Exception as error:  # ImportError, a SyntaxError in it, a path's TypeError
            hint = ""
            if "/" in module_name or module_name.endswith(".py"):
                dotted = module_name.removesuffix(".py").strip("/").replace("/", ".")
                hint = (
                    f" (name the module as python -m does, {dotted}:{attribute}, not a file path)"
                )
            said = " ".join(str(error).split())
            raise CircuitxError(
                f"cannot import {module_name!r}: {type(error).__name__}: {said}{hint}"
            ) from None
    else:
        module, attribute = lib, spec
    function = getattr(module, attribute, None)
    if not callable(function):
        where = module_name if ":" in spec else "tracr.compiler.lib"
        raise CircuitxError(f"no function {attribute!r} in {where}")
    program = _call(function, spec, max_seq_len, rasp)
    if not isinstance(program, rasp.SOp):
        raise CircuitxError(f"{spec} returned {type(program).__name__}, not a RASP program")
    return program


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
