"""Fast calls between Python and the guest, under wasmtime-py.

``wasmtime.Func.__call__`` re-reads the function type on every call and its generic trampoline builds
``Val`` objects for every argument; a request crosses several times each way, so exports are called
through :class:`TypedFunc` (signature resolved once, raw value array filled directly) and host
functions are registered through :func:`host_func` (a lean ctypes trampoline reading raw slots). A
Python exception in a host function becomes a trap and is re-raised when the guest call returns.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import _func as wasmtime_func
from wasmtime._func import maybe_raise_last_exn

from ..emulator.vm import GuestTrap
from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

_I32 = ffi.WASMTIME_I32.value
_I64 = ffi.WASMTIME_I64.value
_MASK32 = 0xFFFFFFFF
_V8_TRAP_MESSAGES = {
    wasmtime.TrapCode.UNREACHABLE: "unreachable",
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "memory access out of bounds",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "table index is out of bounds",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "null function or function signature mismatch",
    wasmtime.TrapCode.BAD_SIGNATURE: "null function or function signature mismatch",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "divide result unrepresentable",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "divide by zero",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "float unrepresentable in integer range",
    wasmtime.TrapCode.STACK_OVERFLOW: "Maximum call stack size exceeded",
    # Not V8's (Envoy has no time limit on Wasm callbacks: the worker thread would be blocked for good).
    wasmtime.TrapCode.OUT_OF_FUEL: (
        "the callback ran for seconds of CPU time without returning: in Envoy it would block its worker "
        "thread for good (with the Python SDK: the CPU budget is 0, or C code never returned to Python)"
    ),
}


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
        """Call with unsigned/signed ints; returns the result as an unsigned int (0 when void).
        A trap raises :class:`~proxywasm_host.emulator.vm.GuestTrap` worded as V8 words it."""
        if len(args) != self.arity:
            args = adapt_args(self, args)
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
        error = ffi.wasmtime_func_call(
            self._context, self._func_ref, params, self.arity, results, self._nresults, ctypes.byref(trap)
        )
        if error or trap:
            # A Python exception raised by a host function during the call is re-raised as itself.
            maybe_raise_last_exn()
            failure: Exception = wasmtime.WasmtimeError._from_ptr(error) if error else wasmtime.Trap._from_ptr(trap)
            raise GuestTrap(describe_trap(failure), self.name) from failure
        if self._nresults == 0:
            return 0
        if self._result_i64:
            return int(results[0].of.i64) & 0xFFFFFFFFFFFFFFFF
        return int(results[0].of.i32) & 0xFFFFFFFF


def describe_trap(exc: BaseException) -> str:
    """Word a trap the way Envoy's V8 runtime logs it ("Uncaught RuntimeError: unreachable")."""
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        text = _V8_TRAP_MESSAGES.get(code) if code is not None else None
        if text is None:
            text = exc.message.strip().splitlines()[0] if exc.message.strip() else "trap"
        return f"Uncaught RuntimeError: {text}"
    return f"Uncaught RuntimeError: {str(exc).strip().splitlines()[0]}"


def adapt_args(func: TypedFunc, args: tuple[Any, ...]) -> tuple[int, ...]:
    """Older SDKs export callbacks with fewer parameters (ABI 0.1.0 headers without end_of_stream)."""
    return tuple(args[: func.arity]) + (0,) * max(0, func.arity - len(args))


# handle -> (callable taking unsigned i32 / signed i64 ints, parameter kinds, returns a value)
_FUNCS: dict[int, tuple[Callable[..., Any], str, bool]] = {}
_ids = itertools.count(1)


@ffi.wasmtime_func_callback_t  # type: ignore[misc]
def _trampoline(env: int | None, caller: Any, params: Any, nparams: int, results: Any, nresults: int) -> int:
    try:
        func, kinds, has_result = _FUNCS[env or 0]
        args = [params[i].of.i32 & _MASK32 if kinds[i] == "i" else params[i].of.i64 for i in range(nparams)]
        value = func(*args)
        if has_result:
            results[0].kind = _I32
            results[0].of.i32 = ctypes.c_int32(int(value)).value
        return 0
    except BaseException as exc:  # re-raised by wasmtime-py after the guest call unwinds
        wasmtime_func.LAST_EXCEPTION = exc  # type: ignore[assignment]
        trap = wasmtime.Trap("python exception")._consume()
        return ctypes.cast(trap, ctypes.c_void_p).value or 0


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # type: ignore[misc]
def _finalize(env: int | None) -> None:
    _FUNCS.pop(env or 0, None)


def host_func(store: wasmtime.Store, ty: wasmtime.FuncType, kinds: str, has_result: bool,
              func: Callable[..., Any]) -> wasmtime.Func:  # fmt: skip
    """A ``wasmtime.Func`` calling ``func`` with i32 arguments made unsigned."""
    handle = next(_ids)
    _FUNCS[handle] = (func, kinds, has_result)
    raw = ffi.wasmtime_func_t()
    ffi.wasmtime_func_new(store._context(), ty.ptr(), _trampoline, handle, _finalize, ctypes.byref(raw))
    return wasmtime.Func._from_raw(raw)
