"""Discovery methods, registered by short name.

Adding a method is one module with a :class:`Method` subclass and one line in the
registry below (or :func:`register` at run time): the command line, ``circuitx methods``
and the leaderboard read its name and :class:`Option` declarations from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from circuitx.errors import CircuitxError
from circuitx.methods.acdc import ACDC
from circuitx.methods.activation_patching import ActivationPatching
from circuitx.methods.atp import ATP
from circuitx.methods.base import FeatureScores, Method, MethodRun, Option, Scores
from circuitx.methods.cdt import CDT
from circuitx.methods.eap import EAP
from circuitx.methods.eap_ig import EAPIG
from circuitx.methods.hisp import HISP
from circuitx.methods.learned_masks import EdgePruning, SubnetworkProbing
from circuitx.methods.path_patching import PathPatching
from circuitx.methods.sae import SAE
from circuitx.methods.transcoder import TranscoderMethod

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry under its name (replacing one of the same name)."""
    METHODS[method.name] = method
    return method


for _method in (
    ActivationPatching(),
    PathPatching(),
    CDT(),
    SAE(),
    TranscoderMethod(),
    ACDC(),
    EAP(),
    EAPIG(),
    ATP(),
    HISP(),
    SubnetworkProbing(),
    EdgePruning(),
):
    register(_method)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise CircuitxError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def all_options() -> dict[str, list[tuple[Method, Option]]]:
    """Every option name of the registered methods, with the methods that declare it."""
    found: dict[str, list[tuple[Method, Option]]] = {}
    for method in METHODS.values():
        for option in method.options:
            found.setdefault(option.name, []).append((method, option))
    return found


def method_options(method: Method, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``method``'s options: its defaults, overridden by the ``given`` ones that are not
    None, each checked by its declaration; an option the method lacks is an error."""
    declared = {option.name: option for option in method.options}
    options = {name: option.default for name, option in declared.items()}
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key not in declared and key.replace("-", "_") in declared:
            raise CircuitxError(
                f"{method.name}'s option {key!r} is named {key.replace('-', '_')} in Python"
            )
        if key not in declared:
            flag = "--" + key.replace("_", "-")
            users = [m.name for m, _ in all_options().get(key, [])]
            if not users:
                raise CircuitxError(f"{method.name} has no option {flag}")
            raise CircuitxError(f"{flag} applies to {', '.join(users)}, not {method.name}")
        options[key] = declared[key].check(value)
    return options


def variant_label(method_name: str, settings: Iterable[tuple[str, Any]]) -> str:
    """A method with settings of its own, as the leaderboard writes a variant:
    ``eap[qk-fix=on,grad-drop=on]`` (the name alone without settings)."""
    shown = ",".join(f"{name.replace('_', '-')}={value}" for name, value in settings)
    return f"{method_name}[{shown}]" if shown else method_name


def unused_options(
    method: Method, given: Mapping[str, Any], options: Mapping[str, Any]
) -> list[str]:
    """A note for each option ``given`` (not None) that does nothing under the other
    ``options`` (``--n-paths`` without ``--search paths``)."""
    declared = {option.name: option for option in method.options}
    said = []
    for name, value in given.items():
        option = declared.get(name)
        if value is None or option is None or option.only_with is None:
            continue
        other, values = option.only_with
        if options.get(other) not in values:
            wanted = " or ".join(values)
            said.append(
                f"{option.flag} does nothing with {declared[other].flag} {options.get(other)} "
                f"(only with {declared[other].flag} {wanted})"
            )
    return said


__all__ = [
    "METHODS",
    "FeatureScores",
    "Method",
    "MethodRun",
    "Option",
    "Scores",
    "all_options",
    "get_method",
    "method_options",
    "register",
    "unused_options",
    "variant_label",
]
