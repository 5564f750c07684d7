"""Registry of the host functions Envoy 1.40 links into a proxy-wasm module.

Each module in this package registers its functions with :func:`hostcall`. Implementations receive the
VM first, then the guest's arguments with i32 values made unsigned, and return a status/errno.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..vm import Vm

Impl = Callable[..., Any]
F = TypeVar("F", bound=Impl)

ABI_0_1_0 = "0_1_0"
ABI_0_2_0 = "0_2_0"
ABI_0_2_1 = "0_2_1"
ALL_ABIS = frozenset({ABI_0_1_0, ABI_0_2_0, ABI_0_2_1})


@dataclass(frozen=True)
class HostCall:
    module: str
    name: str
    params: str  # one char per parameter: "i" i32, "I" i64
    results: str
    impl: Impl
    abis: frozenset[str]


REGISTRY: dict[tuple[str, str], HostCall] = {}

WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")


def hostcall(
    name: str,
    params: str,
    results: str = "i",
    *,
    module: str = "env",
    abis: frozenset[str] = ALL_ABIS,
) -> Callable[[F], F]:
    def register(impl: F) -> F:
        modules = WASI_MODULES if module == "wasi" else (module,)
        for mod in modules:
            REGISTRY[(mod, name)] = HostCall(mod, name, params, results, impl, abis)
        return impl

    return register


_MODULES = (
    "general",
    "headers",
    "buffers",
    "stream",
    "http_calls",
    "grpc",
    "shared",
    "metrics",
    "properties",
    "wasi",
)


def registry() -> dict[tuple[str, str], HostCall]:
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    return REGISTRY


def lookup(vm: Vm, module: str, name: str) -> HostCall | None:
    call = registry().get((module, name))
    if call is None or vm.abi not in call.abis:
        return None
    return call
