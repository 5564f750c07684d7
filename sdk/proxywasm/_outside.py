"""Stands in for the builtin ``_proxywasm`` when the SDK is imported outside a proxy-wasm VM
(by tooling, type checkers or the build), so imports work and host calls fail clearly."""

from __future__ import annotations

from typing import Any, NoReturn


def set_error_type(error_type: type) -> None:
    pass


def set_budget(*args: object) -> None:
    pass


def environ() -> list[bytes]:
    return []  # no VM environment outside a VM


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # __all__, __path__...: asked by tools (pydoc), not host functions
        raise AttributeError(name)

    def unavailable(*args: object) -> NoReturn:
        raise RuntimeError(
            f"proxywasm host function {name}() is only available inside a proxy-wasm VM: build the filter "
            "with `proxywasm build` and run it in Envoy or in proxywasm_host"
        )

    return unavailable
