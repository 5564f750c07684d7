"""``_proxywasm`` in Python: the runtime's builtin module (``sdk/runtime/module.c``) for a filter
running natively, each function a thin wrapper over the emulator's host functions.

It keeps module.c's contract exactly, so the SDK above it cannot tell: arguments taken as module.c
parses them (``str`` encoded as strict UTF-8 where C takes ``s#``, bytes-like only where it takes
``y#``), a non-OK status raising the error type the SDK registers (``error_type(name, status)``),
``None`` or empty bytes where module.c treats NOT_FOUND/EMPTY as an ordinary answer.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from proxywasm.abi import Status, decode_map, encode_map

from ..emulator.http1 import BAD_NAME, BAD_VALUE
from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from ..emulator.host_functions import HostFunctions
    from .budget import NativeBudget

OK, NOT_FOUND, EMPTY = int(Status.OK), int(Status.NOT_FOUND), int(Status.EMPTY)
UNIMPLEMENTED = int(Status.UNIMPLEMENTED)


def _s(value: object) -> bytes:
    """module.c's ``s#``: a str (strict UTF-8, as ``PyUnicode_AsUTF8AndSize``) or a bytes-like object."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"argument must be str or read-only bytes-like object, not {type(value).__name__}")


def _y(value: object) -> bytes:
    """module.c's ``y#``: a bytes-like object only."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'")


def _header(key: bytes, value: bytes, *, grpc: bool = False) -> None:
    """module.c's header_or_metadata_ok: a name that is an HTTP token (a leading ':' for
    pseudo-headers), a value without a control character but HT: what Envoy can send."""
    name = key[1:] if len(key) > 1 and key[:1] == b":" else key
    if not name or BAD_NAME.search(name):
        raise ValueError(
            f"{key.decode('latin-1')!r} is not a valid {'gRPC metadata' if grpc else 'header'} name: an HTTP token "
            "(letters, digits and !#$%&'*+-.^_`|~) that Envoy can send"
        )
    if BAD_VALUE.search(value):
        if grpc:
            raise ValueError(
                f"the value of gRPC metadata {key.decode('latin-1')!r} contains a control character (CR, LF, NUL, "
                "... any below 0x20 but HT, or DEL): Envoy refuses to send it and the call fails; remove or encode "
                "them, or give binary data a name ending in -bin (Envoy base64-encodes those)"
            )
        raise ValueError(
            f"the value of header {key.decode('latin-1')!r} contains a control character (CR, LF, NUL, ... any "
            "below 0x20 but HT, or DEL): Envoy refuses to send it on a request (503 invalid header value) and "
            "writes it to the client as it is on a response (header injection); remove or encode them"
        )
    if not grpc and key in (b":path", b":method") and (b" " in value or b"\t" in value):
        raise ValueError(
            f"the value of {key.decode('latin-1')!r} contains a space or a tab: Envoy writes it into the request "
            "line as it is, and the upstream reads a broken request (400); percent-encode it (%20)"
        )


def _checked_pairs(raw: bytes, *, grpc: bool = False) -> list[tuple[bytes, bytes]]:
    """A serialized map the filter sends (a local reply's or a callout's headers, a gRPC call's
    metadata), each pair checked as module.c's map_ok_for does: in gRPC metadata the value of a
    ``-bin`` key is any bytes (Envoy base64-encodes it), only its name is checked."""
    pairs = _pairs(raw)
    for key, value in pairs:
        _header(key, b"" if grpc and key.endswith(b"-bin") else value, grpc=grpc)
    return pairs


def _pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    try:
        return decode_map(raw)
    except ValueError:
        return []  # cpp-host's toPairs: malformed input gives no pairs


class AtBuildTime:
    """The host functions while the filter is imported. That import is ``proxywasm build``'s, where
    no Envoy answers: its snapshotter (``proxywasm_build/snapshot.py``) lets ``proxy_log`` through
    and answers every other call UNIMPLEMENTED. Natively the same, so a filter that asks Envoy for
    something at module level fails its native test as its build fails."""

    def __init__(self, functions: HostFunctions) -> None:
        self._functions = functions

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name == "proxy_log":
            return self._functions.proxy_log
        returns = str(inspect.signature(getattr(type(self._functions), name)).return_annotation)
        # "int" (a status), or "tuple[int, ...]": the status and the values written back
        width = returns.count(",") + 1 if returns.startswith("tuple[") else 1
        answer: object = UNIMPLEMENTED if width == 1 else (UNIMPLEMENTED,) + (None,) * (width - 1)
        return lambda *args: answer


class ProxyWasmModule(ModuleType):
    """One VM's ``_proxywasm``; installed as ``sys.modules["_proxywasm"]`` while its filter runs."""

    def __init__(self, functions: HostFunctions, budget: NativeBudget) -> None:
        super().__init__("_proxywasm", "proxy-wasm ABI v0.2.1 host functions (native mode)")
        self._f = functions
        self.budget = budget
        self._error_type: Callable[[str, int], BaseException] | None = None
        self.dispatcher: Any = None
        self.contexts: dict[int, Any] | None = None
        self.effective = 0  # the context Envoy's host calls act on (module.c's effective_context)
        self.callback = ""  # the innermost callback running (callbacks.c's current_callback)
        self.entries = 0  # callbacks that entered Python (module.c's python_entries)
        self.masks: dict[int, int] = {}  # context id -> callback mask (callbacks.c's table)

    def _raise(self, call: str, status: int) -> None:
        if self._error_type is None:
            raise RuntimeError(f"{call} failed with status {status}")
        raise self._error_type(call, status)

    def _check(self, call: str, status: int) -> None:
        if status != OK:
            self._raise(call, status)

    # -- runtime plumbing -----------------------------------------------------------------------------
    def set_error_type(self, error_type: Callable[[str, int], BaseException]) -> None:
        self._error_type = error_type

    def set_dispatcher(self, dispatcher: Any, contexts: dict[int, Any]) -> None:
        if not isinstance(contexts, dict):
            raise TypeError("set_dispatcher() argument 2 must be dict")
        self.dispatcher, self.contexts = dispatcher, contexts

    def set_budget(self, *args: Any) -> None:
        """The SDK's budget settings (``proxywasm/budget.py``); see :mod:`.budget`."""
        self.budget.set_budget(*args)

    def budget_stats(self) -> dict[str, int]:
        """budget.c's counters; natively only ``armed`` means anything (no checks, no linear memory)."""
        return {"checks": 0, "clock_reads": 0, "memory_refusals": 0, "armed": 0, "memory_limit": 0, "heap_top": 0}

    def memory_size(self) -> int:
        """Not meaningful natively (no linear memory): 0."""
        return 0

    def update_callbacks(self, context_id: int, add: int, remove: int) -> bool:
        """callbacks.c's runtime_update_mask: add and remove callback bits of a live context;
        False if it was deleted already."""
        if context_id not in self.masks:
            return False
        self.masks[context_id] = (self.masks[context_id] | add) & ~remove
        return True

    def python_entries(self) -> int:
        return self.entries

    def environ(self) -> list[bytes]:
        """module.c's environ: the VM's environment (``Host.load(env=...)``), as b"NAME=value"."""
        return [f"{name}={value}".encode("utf-8", "surrogateescape") for name, value in self._f.vm.env.items()]

    def effective_context(self) -> int:
        return self.effective

    def running_callback(self) -> str:
        return self.callback

    # -- logging, time, lifecycle ---------------------------------------------------------------------
    def log(self, level: int, message: object) -> None:
        self._check("proxy_log", self._f.proxy_log(int(level), _s(message)))

    def get_log_level(self) -> int:
        status, level = self._f.proxy_get_log_level()
        self._check("proxy_get_log_level", status)
        return level

    def get_current_time_nanoseconds(self) -> int:
        status, now = self._f.proxy_get_current_time_nanoseconds()
        self._check("proxy_get_current_time_nanoseconds", status)
        return now

    def set_tick_period_milliseconds(self, period_ms: int) -> None:
        self._check("proxy_set_tick_period_milliseconds", self._f.proxy_set_tick_period_milliseconds(int(period_ms)))

    def set_effective_context(self, context_id: int) -> None:
        if context_id == self.effective:
            return
        self._check("proxy_set_effective_context", self._f.proxy_set_effective_context(int(context_id)))
        self.effective = int(context_id)

    def done(self) -> None:
        self._check("proxy_done", self._f.proxy_done())

    def call_foreign_function(self, name: object, data: object) -> bytes:
        status, result = self._f.proxy_call_foreign_function(_s(name), _y(data))
        self._check("proxy_call_foreign_function", status)
        return result

    # -- buffers --------------------------------------------------------------------------------------
    def get_buffer_bytes(self, buffer_type: int, start: int, size: int) -> bytes:
        status, data = self._f.proxy_get_buffer_bytes(int(buffer_type), int(start), int(size))
        if status in (NOT_FOUND, EMPTY):
            return b""
        self._check("proxy_get_buffer_bytes", status)
        return data

    def get_buffer_status(self, buffer_type: int) -> tuple[int, int]:
        status, length, flags = self._f.proxy_get_buffer_status(int(buffer_type))
        self._check("proxy_get_buffer_status", status)
        return length, flags

    def set_buffer_bytes(self, buffer_type: int, start: int, size: int, data: object) -> None:
        status = self._f.proxy_set_buffer_bytes(int(buffer_type), int(start), int(size), _y(data))
        self._check("proxy_set_buffer_bytes", status)

    # -- header maps ----------------------------------------------------------------------------------
    def get_header_map_pairs(self, map_type: int) -> bytes:
        status, pairs = self._f.proxy_get_header_map_pairs(int(map_type))
        self._check("proxy_get_header_map_pairs", status)
        return encode_map(pairs) if pairs else b""

    def set_header_map_pairs(self, map_type: int, data: object) -> None:
        pairs = _checked_pairs(_y(data))
        status = self._f.proxy_set_header_map_pairs(int(map_type), pairs)
        self._check("proxy_set_header_map_pairs", status)

    def get_header_map_size(self, map_type: int) -> int:
        status, size = self._f.proxy_get_header_map_size(int(map_type))
        self._check("proxy_get_header_map_size", status)
        return size

    def get_header_map_value(self, map_type: int, key: object) -> bytes | None:
        status, value = self._f.proxy_get_header_map_value(int(map_type), _y(key))
        if status == NOT_FOUND:
            return None
        self._check("proxy_get_header_map_value", status)
        return value

    def add_header_map_value(self, map_type: int, key: object, value: object) -> None:
        key, value = _y(key), _y(value)
        _header(key, value)
        status = self._f.proxy_add_header_map_value(int(map_type), key, value)
        self._check("proxy_add_header_map_value", status)

    def replace_header_map_value(self, map_type: int, key: object, value: object) -> None:
        key, value = _y(key), _y(value)
        _header(key, value)
        status = self._f.proxy_replace_header_map_value(int(map_type), key, value)
        self._check("proxy_replace_header_map_value", status)

    def remove_header_map_value(self, map_type: int, key: object) -> None:
        self._check("proxy_remove_header_map_value", self._f.proxy_remove_header_map_value(int(map_type), _y(key)))

    # -- stream control -------------------------------------------------------------------------------
    def continue_stream(self, stream_type: int) -> None:
        self._check("proxy_continue_stream", self._f.proxy_continue_stream(int(stream_type)))

    def close_stream(self, stream_type: int) -> None:
        self._check("proxy_close_stream", self._f.proxy_close_stream(int(stream_type)))

    def send_local_response(
        self, status: int, details: object, body: object, headers: object, grpc_status: int
    ) -> None:
        result = self._f.proxy_send_local_response(
            int(status), _s(details), _y(body), _checked_pairs(_y(headers)), int(grpc_status)
        )
        self._check("proxy_send_local_response", result)

    def get_status(self) -> tuple[int, bytes]:
        status, code, message = self._f.proxy_get_status()
        self._check("proxy_get_status", status)
        return code, message

    # -- callouts -------------------------------------------------------------------------------------
    def http_call(self, upstream: object, headers: object, body: object, trailers: object, timeout: int) -> int:
        status, token = self._f.proxy_http_call(
            _s(upstream), _checked_pairs(_y(headers)), _y(body), _checked_pairs(_y(trailers)), int(timeout)
        )
        self._check("proxy_http_call", status)
        return token

    def grpc_call(self, service: object, service_name: object, method: object, metadata: object, message: object,
                  timeout: int) -> int:  # fmt: skip
        metadata_pairs = _checked_pairs(_y(metadata), grpc=True)
        status, token = self._f.proxy_grpc_call(
            _y(service), _s(service_name), _s(method), metadata_pairs, _y(message), int(timeout)
        )
        self._check("proxy_grpc_call", status)
        return token

    def grpc_stream(self, service: object, service_name: object, method: object, metadata: object) -> int:
        metadata_pairs = _checked_pairs(_y(metadata), grpc=True)
        status, token = self._f.proxy_grpc_stream(_y(service), _s(service_name), _s(method), metadata_pairs)
        self._check("proxy_grpc_stream", status)
        return token

    def grpc_send(self, token: int, message: object, end_stream: object) -> None:
        self._check("proxy_grpc_send", self._f.proxy_grpc_send(int(token), _y(message), bool(end_stream)))

    def grpc_cancel(self, token: int) -> None:
        self._check("proxy_grpc_cancel", self._f.proxy_grpc_cancel(int(token)))

    def grpc_close(self, token: int) -> None:
        self._check("proxy_grpc_close", self._f.proxy_grpc_close(int(token)))

    # -- shared data and queues -----------------------------------------------------------------------
    def get_shared_data(self, key: object) -> tuple[bytes, int] | None:
        status, value, cas = self._f.proxy_get_shared_data(_s(key))
        if status == NOT_FOUND:
            return None
        self._check("proxy_get_shared_data", status)
        return value, cas

    def set_shared_data(self, key: object, value: object, cas: int) -> None:
        self._check("proxy_set_shared_data", self._f.proxy_set_shared_data(_s(key), _y(value), int(cas)))

    def register_shared_queue(self, name: object) -> int:
        status, token = self._f.proxy_register_shared_queue(_s(name))
        self._check("proxy_register_shared_queue", status)
        return token

    def resolve_shared_queue(self, vm_id: object, name: object) -> int | None:
        status, token = self._f.proxy_resolve_shared_queue(_s(vm_id), _s(name))
        if status == NOT_FOUND:
            return None
        self._check("proxy_resolve_shared_queue", status)
        return token

    def enqueue_shared_queue(self, token: int, data: object) -> None:
        self._check("proxy_enqueue_shared_queue", self._f.proxy_enqueue_shared_queue(int(token), _y(data)))

    def dequeue_shared_queue(self, token: int) -> bytes | None:
        status, data = self._f.proxy_dequeue_shared_queue(int(token))
        if status == EMPTY:
            return None
        self._check("proxy_dequeue_shared_queue", status)
        return data

    # -- metrics --------------------------------------------------------------------------------------
    def define_metric(self, metric_type: int, name: object) -> int:
        status, metric_id = self._f.proxy_define_metric(int(metric_type), _s(name))
        self._check("proxy_define_metric", status)
        return metric_id

    def increment_metric(self, metric_id: int, offset: int) -> None:
        # operator.index: an int only, as the runtime's C takes it (a float raises TypeError there)
        self._check("proxy_increment_metric", self._f.proxy_increment_metric(int(metric_id), operator.index(offset)))

    def record_metric(self, metric_id: int, value: int) -> None:
        if not isinstance(value, int):  # module.c's arg_u64
            raise TypeError(f"an int is required, not {type(value).__name__}")
        self._check("proxy_record_metric", self._f.proxy_record_metric(int(metric_id), value))

    def get_metric(self, metric_id: int) -> int:
        status, value = self._f.proxy_get_metric(int(metric_id))
        self._check("proxy_get_metric", status)
        return value

    # -- properties -----------------------------------------------------------------------------------
    def get_property(self, path: object) -> bytes | None:
        status, value = self._f.proxy_get_property(_y(path))
        if status == NOT_FOUND:
            return None
        self._check("proxy_get_property", status)
        return value

    def set_property(self, path: object, value: object) -> None:
        self._check("proxy_set_property", self._f.proxy_set_property(_y(path), _y(value)))
