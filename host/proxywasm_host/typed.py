"""Fast calls into guest exports.

``wasmtime.Func.__call__`` re-reads the function type on every call; a filter call crosses into the guest
several times per request, so we resolve the signature once and fill the raw value array directly.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._func import maybe_raise_last_exn

_I32 = ffi.WASMTIME_I32.value
_I64 = ffi.WASMTIME_I64.value


class TypedFunc:
    """A guest export of integer parameters returning at most one integer."""

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, name: str) -> None:
        ty = func.type(store)
        kinds: list[int] = []
        for param in ty.params:
            if param == wasmtime.ValType.i32():
                kinds.append(_I32)
            elif param == wasmtime.ValType.i64():
                kinds.append(_I64)
            else:
                raise TypeError(f"export {name} has a non-integer parameter {param}")
        results = list(ty.results)
        if len(results) > 1:
            raise TypeError(f"export {name} returns {len(results)} values")
        self.name = name
        self.arity = len(kinds)
        self._store = store
        self._func = func
        self._kinds = kinds
        self._nresults = len(results)
        self._result_i64 = bool(results) and results[0] == wasmtime.ValType.i64()
        self._params_t = ffi.wasmtime_val_t * max(1, len(kinds))
        self._results_t = ffi.wasmtime_val_t * max(1, self._nresults)
        self._context = store._context()  # stable for the store's lifetime
        self._func_ref = ctypes.byref(func._func)

    def __call__(self, *args: int) -> int:
        """Call with unsigned/signed ints; returns the result as an unsigned int (0 when void)."""
        params = self._params_t()
        for i, (kind, value) in enumerate(zip(self._kinds, args, strict=False)):
            params[i].kind = kind  # type: ignore[assignment]
            if kind == _I32:
                params[i].of.i32 = ctypes.c_int32(value).value
            else:
                params[i].of.i64 = ctypes.c_int64(value).value
        results = self._results_t()
        # wasmtime's enter_wasm() inlined: a generator-based context manager per call is measurable here.
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        try:
            error = ffi.wasmtime_func_call(
                self._context, self._func_ref, params, self.arity, results, self._nresults, ctypes.byref(trap)
            )
            if error:
                raise wasmtime.WasmtimeError._from_ptr(error)
            if trap:
                trap_obj = wasmtime.Trap._from_ptr(trap)
                maybe_raise_last_exn()
                raise trap_obj
        except wasmtime.WasmtimeError:
            maybe_raise_last_exn()
            raise
        if self._nresults == 0:
            return 0
        if self._result_i64:
            return int(results[0].of.i64) & 0xFFFFFFFFFFFFFFFF
        return int(results[0].of.i32) & 0xFFFFFFFF


def adapt_args(func: TypedFunc, args: tuple[Any, ...]) -> tuple[int, ...]:
    """Older SDKs export callbacks with fewer parameters (ABI 0.1.0 headers without end_of_stream)."""
    return tuple(args[: func.arity]) + (0,) * max(0, func.arity - len(args))
