"""Discovery methods, registered by short name."""

from __future__ import annotations

from circuitx.errors import CircuitxError
from circuitx.methods.acdc import ACDC
from circuitx.methods.activation_patching import ActivationPatching
from circuitx.methods.base import Method, MethodRun
from circuitx.methods.cdt import CDT
from circuitx.methods.eap import EAP
from circuitx.methods.eap_ig import EAPIG
from circuitx.methods.path_patching import PathPatching
from circuitx.methods.sae import SAE
from circuitx.methods.transcoder import TranscoderMethod

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        ActivationPatching(),
        PathPatching(),
        CDT(),
        SAE(),
        TranscoderMethod(),
        ACDC(),
        EAP(),
        EAPIG(),
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise CircuitxError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_options(method: Method, given: dict | None = None) -> dict:
    """``method``'s options: its defaults, overridden by the ``given`` ones that are not
    None; giving an option the method does not have is an error."""
    options = dict(method.options)
    for key, value in (given or {}).items():
        if value is None:
            continue
        if key not in options:
            flag = "--" + key.replace("_", "-")
            users = [m.name for m in METHODS.values() if key in m.options]
            raise CircuitxError(f"{flag} applies to {', '.join(users)}, not {method.name}")
        options[key] = value
    return options


__all__ = ["METHODS", "Method", "MethodRun", "get_method", "method_options"]
