"""Discovery methods, registered by short name."""

from __future__ import annotations

from circuitx.errors import CircuitxError
from circuitx.methods.activation_patching import ActivationPatching
from circuitx.methods.base import Method, MethodRun

METHODS: dict[str, Method] = {method.name: method for method in (ActivationPatching(),)}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise CircuitxError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "MethodRun", "get_method"]
