"""A proxy-wasm module on wasmtime, linked as Envoy links it: the ABI version from the module's
``proxy_abi_version_*`` export, every import resolved against Envoy 1.40's table for that version
(a missing or mistyped import fails the load with Envoy's message), traps worded as V8 words them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import wasmtime

from ..errors import LoadError, hide_host_frames
from .calls import TypedFunc, host_func
from .imports import ABI_0_1_0, ABI_0_2_0, ABI_0_2_1, Import, lookup
from .memory import GuestMemory
from .module import Compiled, engine

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from ..emulator.host_functions import HostFunctions
    from ..emulator.vm import Vm

_VALTYPE = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}

#: Virtual CPU time per unit of fuel. Calibrated on the Python runtime: one turn of
#: ``for _ in range(n): pass`` with the CPU budget armed costs 672 fuel here and 35 ns in Envoy 1.40
#: (V8) on the development machine. Other code runs faster or slower under V8 per unit of fuel:
#: the virtual clock is an estimate that is the same on every run, not a measurement.
NS_PER_FUEL = 35 / 672
#: A callback that runs this long (virtual) without returning traps (OUT_OF_FUEL): in Envoy it
#: would block its worker for good. Checked every _REFILL_EVERY calls, so the limit is 5 to 6 s.
HANG_NS = 5_000_000_000
_HANG_FUEL = round(HANG_NS / NS_PER_FUEL)
_MARGIN_FUEL = _HANG_FUEL // 5  # far more than _REFILL_EVERY ordinary callbacks use
_REFILL_EVERY = 16
_ABI_EXPORTS = {
    "proxy_abi_version_0_2_1": ABI_0_2_1,
    "proxy_abi_version_0_2_0": ABI_0_2_0,
    "proxy_abi_version_0_1_0": ABI_0_1_0,
}


def _type_str(types: list[wasmtime.ValType]) -> str:
    return " ".join(str(t) for t in types) or "void"


def detect_abi(module: Compiled) -> str:
    names = {e.name for e in module.exports}
    for export, abi in _ABI_EXPORTS.items():
        if export in names:
            return abi
    raise LoadError("Wasm module is missing the proxy-wasm ABI version or requires an unsupported version.")


class WasmGuest:
    """One instance of a compiled module serving one :class:`~proxywasm_host.emulator.vm.Vm`."""

    def __init__(self, module: Compiled, vm: Vm) -> None:
        self.vm = vm
        self.functions: HostFunctions = vm.host_functions
        self.abi = detect_abi(module)
        self.store = wasmtime.Store(engine())
        self._fuel_added = _HANG_FUEL + _MARGIN_FUEL
        self.store.set_fuel(self._fuel_added)
        self._entries = 0
        instance = self._link(module)
        exports = instance.exports(self.store)
        self._globals = {name: item for name, item in exports.items() if isinstance(item, wasmtime.Global)}
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

    def _link(self, module: Compiled) -> wasmtime.Instance:
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
            return module.instantiate(self.store, imports)
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

    def enter(self) -> None:
        """An outermost call begins: keep at least the hang limit's fuel in the store (checked every
        few calls: ``get_fuel`` costs about half a microsecond)."""
        self._entries += 1
        if self._entries % _REFILL_EVERY == 0:
            left = self.store.get_fuel()
            if left < _HANG_FUEL + _MARGIN_FUEL:
                self.store.set_fuel(left + _MARGIN_FUEL)
                self._fuel_added += _MARGIN_FUEL

    def exported_global(self, name: str) -> int | float:
        """The current value of the global the module exports as ``name`` (KeyError: none such)."""
        value = self._globals[name].value(self.store)
        if not isinstance(value, (int, float)):
            raise TypeError(f"global {name!r} is not a number (a {type(value).__name__})")
        return value

    def exported_globals(self) -> list[str]:
        """The names of the globals the module exports."""
        return list(self._globals)

    def cpu_ns(self) -> int:
        """Virtual CPU time the guest has used so far: the fuel it burnt, at :data:`NS_PER_FUEL`.
        The guest's clocks run this far ahead of Envoy's, so they advance while it computes (the
        SDK's CPU budget reads them) and never go back."""
        return int((self._fuel_added - self.store.get_fuel()) * NS_PER_FUEL)

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
