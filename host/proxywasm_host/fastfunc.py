"""Host functions with a lean ctypes trampoline.

wasmtime-py's generic trampoline re-derives value types and builds ``Val`` objects for every argument
and result; a request makes dozens of host calls, so ours reads and writes the raw i32/i64 slots
directly. A Python exception becomes a trap and is re-raised by wasmtime-py when the guest call returns.
"""

from __future__ import annotations

import ctypes
import itertools
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi
from wasmtime import _func as wasmtime_func

_I32 = ffi.WASMTIME_I32.value
_I64 = ffi.WASMTIME_I64.value
_MASK32 = 0xFFFFFFFF

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
