"""A proxy-wasm module on wasmtime, linked as Envoy links it: the ABI version from the module's
``proxy_abi_version_*`` export, every import resolved against Envoy 1.40's table for that version
(a missing or mistyped import fails the load with Envoy's message), traps worded as V8 words them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import wasmtime

from ..errors import LoadError
from .calls import TypedFunc, host_func
from .imports import ABI_0_1_0, ABI_0_2_0, ABI_0_2_1, Import, lookup
from .memory import GuestMemory
from .module import engine

if TYPE_CHECKING:
    from ..emulator.host_functions import HostFunctions
    from ..emulator.vm import Vm

_VALTYPE = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
_ABI_EXPORTS = {
    "proxy_abi_version_0_2_1": ABI_0_2_1,
    "proxy_abi_version_0_2_0": ABI_0_2_0,
    "proxy_abi_version_0_1_0": ABI_0_1_0,
}


def _type_str(types: list[wasmtime.ValType]) -> str:
    return " ".join(str(t) for t in types) or "void"


def detect_abi(module: wasmtime.Module) -> str:
    names = {e.name for e in module.exports}
    for export, abi in _ABI_EXPORTS.items():
        if export in names:
            return abi
    raise LoadError("Wasm module is missing the proxy-wasm ABI version or requires an unsupported version.")


class WasmGuest:
    """One instance of a compiled module serving one :class:`~proxywasm_host.emulator.vm.Vm`."""

    def __init__(self, module: wasmtime.Module, vm: Vm) -> None:
        self.vm = vm
        self.functions: HostFunctions = vm.host_functions
        self.abi = detect_abi(module)
        self.store = wasmtime.Store(engine())
        instance = self._link(module)
        exports = instance.exports(self.store)
        memory = exports.get("memory")
        self.mem = GuestMemory(self.store, memory if isinstance(memory, wasmtime.Memory) else None)
        self.exports: dict[str, TypedFunc] = {}
        for exp in module.exports:
            item = exports.get(exp.name)
            if isinstance(item, wasmtime.Func):
                try:
                    self.exports[exp.name] = TypedFunc(self.store, item, exp.name)
                except TypeError:
                    continue
        malloc = self.exports.get("malloc") or self.exports.get("proxy_on_memory_allocate")
        if malloc is None:
            raise LoadError("Wasm module is missing malloc function.")
        self.mem.malloc = malloc

    def _link(self, module: wasmtime.Module) -> wasmtime.Instance:
        imports: list[wasmtime.Func] = []
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            ty = imp.type
            found = lookup(self.abi, imp.module, imp.name or "") if isinstance(ty, wasmtime.FuncType) else None
            if found is None or not isinstance(ty, wasmtime.FuncType):
                raise LoadError(f"Failed to load Wasm module due to a missing import: {where}")
            want = (list(ty.params), list(ty.results))
            have = ([_VALTYPE[c] for c in found.params], [_VALTYPE[c] for c in found.results])
            if want != have:
                raise LoadError(
                    f"Failed to load Wasm module due to an import type mismatch: {where}, "
                    f"want: {_type_str(want[0])} -> {_type_str(want[1])}, "
                    f"but host exports: {_type_str(have[0])} -> {_type_str(have[1])}"
                )
            imports.append(host_func(self.store, ty, found.params, bool(found.results), self._bind(found)))
        try:
            return wasmtime.Instance(self.store, module, imports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise LoadError(f"Failed to create new Wasm instance: {exc}") from exc

    def _bind(self, found: Import) -> Callable[..., object]:
        impl = found.impl

        def invoke(*args: int) -> object:
            return impl(self, *args)

        return invoke

    # -- the Guest protocol --------------------------------------------------------------------------------
    def has(self, export: str) -> bool:
        return export in self.exports

    def call(self, export: str, *args: int) -> int:
        return self.exports[export](*args)

    def start(self) -> None:
        """cpp-host's start: ``_initialize`` then ``main`` (or ``__main_void``), or ``_start``."""
        if self.has("_initialize"):
            self.call("_initialize")
            if self.has("main"):
                self.call("main", 0, 0)
            elif self.has("__main_void"):
                self.call("__main_void")
        elif self.has("_start"):
            self.call("_start")
