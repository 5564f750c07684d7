"""The ABI plumbing: typed wrappers over the raw host functions of the builtin ``_proxywasm``.

Everything above this module speaks Python (str, enums, mappings); everything below is the
proxy-wasm ABI. Calls act on Envoy's *current* context: the one whose callback is running,
or the one chosen with :func:`set_effective_context`.
"""

from __future__ import annotations

from .abi import BufferType, LogLevel, MapType, MetricType, StreamType, decode_map, encode_map, loggable
from .errors import HostCallError as HostCallError  # defined in errors, importable from here as before

try:
    import _proxywasm as _raw

    OUTSIDE_VM = False
except ImportError:  # outside a VM: importable for tooling; host calls raise
    from . import _outside as _raw

    OUTSIDE_VM = True

#: The builtin module itself. The SDK's hot paths (header maps, shared data, bodies, the clock)
#: call it directly: in the VM each Python-level call of a wrapper below costs about 70 ns.
raw = _raw

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    Pairs = Sequence[tuple[bytes, bytes]]


raw.set_error_type(HostCallError)


def to_bytes(value: str | bytes) -> bytes:
    """``str`` as UTF-8 with ``surrogateescape``: text the SDK decoded from non-UTF-8 bytes (with
    ``surrogateescape``) turns back into exactly those bytes."""
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


# ---- logging, time, lifecycle ----


def log(level: LogLevel, message: str) -> None:
    """Never raises on text: a ``str`` holding surrogates is logged with escapes."""
    try:
        raw.log(level, message)
    except UnicodeEncodeError:
        raw.log(level, loggable(message))


def get_log_level() -> LogLevel:
    return LogLevel(raw.get_log_level())


def get_current_time_nanoseconds() -> int:
    return int(raw.get_current_time_nanoseconds())


def set_tick_period_milliseconds(period_ms: int) -> None:
    raw.set_tick_period_milliseconds(period_ms)


def set_effective_context(context_id: int) -> None:
    """Make host calls act on ``context_id`` (a no-op when it already is the current one)."""
    raw.set_effective_context(context_id)


def effective_context() -> int:
    """The context host calls act on now: the one whose callback is running, unless switched."""
    return int(raw.effective_context())


def done() -> None:
    raw.done()


def memory_bytes() -> int:
    """Not a host call: the size of this VM's linear memory (a runtime builtin)."""
    return int(raw.memory_size())


def python_entries() -> int:
    """Not a host call: how many of Envoy's callbacks have entered Python in this VM."""
    return int(raw.python_entries())


# Not a host call: ``update_callbacks(context_id, add, remove)`` adds and removes bits of a live
# context's callback mask (the runtime routes a callback to Python only when its bit is set; bits
# as in ``_dispatch.BIT``); returns False if Envoy has deleted the context already. The builtin
# itself, not a wrapper: tasks.py calls it twice per await-style stream.
update_callbacks: Callable[[int, int, int], bool] = raw.update_callbacks


def call_foreign_function(name: str, argument: bytes) -> bytes:
    return bytes(raw.call_foreign_function(name, argument))


# ---- buffers ----


def get_buffer(buffer_type: BufferType, start: int = 0, size: int = 0xFFFFFFFF) -> bytes:
    return bytes(raw.get_buffer_bytes(buffer_type, start, size))


def get_buffer_size(buffer_type: BufferType) -> int:
    length, _flags = raw.get_buffer_status(buffer_type)
    return int(length)


def set_buffer(buffer_type: BufferType, start: int, size: int, data: bytes) -> None:
    raw.set_buffer_bytes(buffer_type, start, size, data)


# ---- header maps ----


def get_map(map_type: MapType) -> list[tuple[bytes, bytes]]:
    return decode_map(raw.get_header_map_pairs(map_type))


def set_map(map_type: MapType, pairs: Iterable[tuple[bytes, bytes]]) -> None:
    raw.set_header_map_pairs(map_type, encode_map(pairs))


def get_map_size(map_type: MapType) -> int:
    """Envoy's ``proxy_get_header_map_size``: the map's size in BYTES (Envoy 1.40 answers 234 for
    10 pairs), not the number of pairs; see :func:`get_map_count`."""
    return int(raw.get_header_map_size(map_type))


def get_map_count(map_type: MapType) -> int:
    """The number of pairs: the count field that leads the serialised map."""
    data = raw.get_header_map_pairs(map_type)
    return int.from_bytes(data[:4], "little") if len(data) >= 4 else 0


def get_map_value(map_type: MapType, key: bytes) -> bytes | None:
    value: bytes | None = raw.get_header_map_value(map_type, key)
    return value


def add_map_value(map_type: MapType, key: bytes, value: bytes) -> None:
    raw.add_header_map_value(map_type, key, value)


def replace_map_value(map_type: MapType, key: bytes, value: bytes) -> None:
    raw.replace_header_map_value(map_type, key, value)


def remove_map_value(map_type: MapType, key: bytes) -> None:
    raw.remove_header_map_value(map_type, key)


# ---- streams ----


def continue_stream(stream: StreamType) -> None:
    raw.continue_stream(stream)


def close_stream(stream: StreamType) -> None:
    raw.close_stream(stream)


def send_local_response(status: int, details: str, body: bytes, headers: Pairs, grpc_status: int) -> None:
    raw.send_local_response(status, to_bytes(details), body, encode_map(headers), grpc_status)


def get_status() -> tuple[int, bytes]:
    code, message = raw.get_status()
    return int(code), bytes(message)


# ---- callouts ----


def http_call(upstream: str, headers: Pairs, body: bytes, trailers: Pairs, timeout_ms: int) -> int:
    return int(raw.http_call(upstream, encode_map(headers), body, encode_map(trailers), timeout_ms))


def grpc_call(service: bytes, service_name: str, method: str, metadata: Pairs, message: bytes, timeout_ms: int) -> int:
    return int(raw.grpc_call(service, service_name, method, encode_map(metadata), message, timeout_ms))


def grpc_stream(service: bytes, service_name: str, method: str, metadata: Pairs) -> int:
    return int(raw.grpc_stream(service, service_name, method, encode_map(metadata)))


def grpc_send(token: int, message: bytes, end_stream: bool) -> None:
    raw.grpc_send(token, message, end_stream)


def grpc_cancel(token: int) -> None:
    raw.grpc_cancel(token)


def grpc_close(token: int) -> None:
    raw.grpc_close(token)


# ---- shared data and queues ----


def get_shared_data(key: str) -> tuple[bytes, int] | None:
    found: tuple[bytes, int] | None = raw.get_shared_data(key)
    return found


def set_shared_data(key: str, value: bytes, cas: int) -> None:
    raw.set_shared_data(key, value, cas)


def register_shared_queue(name: str) -> int:
    return int(raw.register_shared_queue(name))


def resolve_shared_queue(vm_id: str, name: str) -> int | None:
    found: int | None = raw.resolve_shared_queue(vm_id, name)
    return found


def enqueue_shared_queue(queue_id: int, data: bytes) -> None:
    raw.enqueue_shared_queue(queue_id, data)


def dequeue_shared_queue(queue_id: int) -> bytes | None:
    found: bytes | None = raw.dequeue_shared_queue(queue_id)
    return found


# ---- metrics ----


def define_metric(metric_type: MetricType, name: str) -> int:
    return int(raw.define_metric(metric_type, name))


def increment_metric(metric_id: int, offset: int) -> None:
    raw.increment_metric(metric_id, offset)


def record_metric(metric_id: int, value: int) -> None:
    raw.record_metric(metric_id, value)


def get_metric(metric_id: int) -> int:
    return int(raw.get_metric(metric_id))


# ---- properties ----


def get_property(path: bytes) -> bytes | None:
    found: bytes | None = raw.get_property(path)
    return found


def set_property(path: bytes, value: bytes) -> None:
    raw.set_property(path, value)
