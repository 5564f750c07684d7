"""The proxy-wasm ABI v0.2.1 as data: status codes, enums and the header-map wire format.

This module is the one definition shared by the guest SDK (inside the wasm module) and the
local host (``proxywasm_host``). It must stay pure Python with stdlib imports only.
"""

from __future__ import annotations

import struct

__all__ = [
    "AUTHOR_MISTAKE_PREFIX",
    "BUILD_FACT_PREFIX",
    "CALLBACKS",
    "CONTEXTS_FACT",
    "KEEP_COMPILER_FACT",
    "Action",
    "BufferType",
    "GrpcStatus",
    "IntConstants",
    "LogLevel",
    "MapType",
    "MetricType",
    "PeerType",
    "Status",
    "StreamType",
    "decode_map",
    "encode_map",
    "encode_property_path",
]


#: Starts every log line in which the SDK reports a mistake in the filter's code (a callback that
#: started a callout and let the stream continue, a misnamed callback, a UsageError that escaped a
#: callback...). Logged at error level; the local host raises on such lines in tests.
AUTHOR_MISTAKE_PREFIX = "proxywasm: author mistake: "
#: Starts the log lines in which the build-time bootstrap hands facts about the filter (e.g. the
#: labels of its metrics) to ``proxywasm build``, which removes them from the build's logs.
BUILD_FACT_PREFIX = "proxywasm-build: "
#: The build fact of a filter that called proxywasm.vm.keep_compiler(): the snapshotter keeps
#: CPython's compiler in the module (proxywasm_build/served_code.py).
KEEP_COMPILER_FACT = BUILD_FACT_PREFIX + "keep-compiler"
#: The build fact naming what the registered plugins serve, followed by ``http``, ``stream`` (L4)
#: or both: ``proxywasm run`` serves an L4-only filter on a TCP listener.
CONTEXTS_FACT = BUILD_FACT_PREFIX + "contexts"

TYPE_CHECKING = False  # collections.abc and enum stay out of the VM: see IntConstants
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from enum import IntEnum as IntConstants
else:

    class _Members(type):
        def __iter__(cls) -> Iterator[int]:
            return iter(cls._members.values())

        def __len__(cls) -> int:
            return len(cls._members)

    class IntConstants(int, metaclass=_Members):
        """A light ``IntEnum``: named int constants, ``Cls(value)`` lookup, iteration and ``.name``.

        The ``enum`` module (with ``functools`` and ``collections``, which it pulls in) costs
        about 300 KB in every Envoy worker's VM; type checkers see a real ``IntEnum``."""

        _members: dict[int, IntConstants] = {}  # noqa: RUF012 - replaced per subclass

        def __init_subclass__(cls) -> None:
            super().__init_subclass__()
            members: dict[int, IntConstants] = {}
            for key, value in list(vars(cls).items()):
                if not key.startswith("_") and type(value) is int:
                    member = int.__new__(cls, value)
                    member._name_ = key
                    setattr(cls, key, member)
                    members.setdefault(value, member)
            cls._members = members

        def __new__(cls, value: int) -> IntConstants:
            member = cls._members.get(value)
            if member is None:
                raise ValueError(f"{value!r} is not a valid {cls.__name__}")
            return member

        @property
        def name(self) -> str:
            return self._name_

        @property
        def value(self) -> int:
            return int(self)

        def __repr__(self) -> str:
            return f"<{type(self).__name__}.{self._name_}: {int(self)}>"

        __str__ = int.__repr__  # as IntEnum since Python 3.11
        __format__ = int.__format__


class Status(IntConstants):
    """Result codes of host functions (``WasmResult`` in proxy-wasm-cpp-host)."""

    OK = 0
    NOT_FOUND = 1
    BAD_ARGUMENT = 2
    SERIALIZATION_FAILURE = 3
    PARSE_FAILURE = 4
    BAD_EXPRESSION = 5
    INVALID_MEMORY_ACCESS = 6
    EMPTY = 7
    CAS_MISMATCH = 8
    RESULT_MISMATCH = 9
    INTERNAL_FAILURE = 10
    BROKEN_CONNECTION = 11
    UNIMPLEMENTED = 12


class Action(IntConstants):
    """What a stream callback tells Envoy to do next (``FilterHeadersStatus`` and friends)."""

    CONTINUE = 0
    PAUSE = 1
    # Not part of 0.2.1 proper, but Envoy honours them: stop and buffer (body) / watermark.
    END_STREAM = 2
    STOP_ALL_ITERATION_AND_BUFFER = 3
    STOP_ALL_ITERATION_AND_WATERMARK = 4


class LogLevel(IntConstants):
    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    CRITICAL = 5


class BufferType(IntConstants):
    HTTP_REQUEST_BODY = 0
    HTTP_RESPONSE_BODY = 1
    DOWNSTREAM_DATA = 2
    UPSTREAM_DATA = 3
    HTTP_CALL_RESPONSE_BODY = 4
    GRPC_RECEIVE_BUFFER = 5
    VM_CONFIGURATION = 6
    PLUGIN_CONFIGURATION = 7
    CALL_DATA = 8


class MapType(IntConstants):
    HTTP_REQUEST_HEADERS = 0
    HTTP_REQUEST_TRAILERS = 1
    HTTP_RESPONSE_HEADERS = 2
    HTTP_RESPONSE_TRAILERS = 3
    GRPC_RECEIVE_INITIAL_METADATA = 4
    GRPC_RECEIVE_TRAILING_METADATA = 5
    HTTP_CALL_RESPONSE_HEADERS = 6
    HTTP_CALL_RESPONSE_TRAILERS = 7


class StreamType(IntConstants):
    REQUEST = 0
    RESPONSE = 1
    DOWNSTREAM = 2
    UPSTREAM = 3


class PeerType(IntConstants):
    """Which side closed an L4 connection (``proxy_on_*_connection_close``)."""

    UNKNOWN = 0
    LOCAL = 1
    REMOTE = 2


class MetricType(IntConstants):
    COUNTER = 0
    GAUGE = 1
    HISTOGRAM = 2


class GrpcStatus(IntConstants):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


#: The guest callbacks (exports) of ABI 0.2.1 the runtime implements, in its mask-bit order (the
#: index is the bit): (export, dispatcher method, arguments after the context id, the answer when
#: the filter does not define the callback; None: the export returns nothing). The C runtime
#: (runtime/callbacks.c), the SDK dispatcher and the host's native mode follow this table; a test
#: checks the C side agrees. ``proxy_on_context_create`` is not in it: it always enters Python.
CALLBACKS = (
    ("proxy_on_vm_start", "on_vm_start", 1, 1),
    ("proxy_on_configure", "on_configure", 1, 1),
    ("proxy_validate_configuration", "validate_configuration", 1, 1),
    ("proxy_on_tick", "on_tick", 0, None),
    ("proxy_on_queue_ready", "on_queue_ready", 1, None),
    ("proxy_on_new_connection", "on_new_connection", 0, 0),
    ("proxy_on_downstream_data", "on_downstream_data", 2, 0),
    ("proxy_on_upstream_data", "on_upstream_data", 2, 0),
    ("proxy_on_downstream_connection_close", "on_downstream_connection_close", 1, None),
    ("proxy_on_upstream_connection_close", "on_upstream_connection_close", 1, None),
    ("proxy_on_request_headers", "on_request_headers", 2, 0),
    ("proxy_on_request_body", "on_request_body", 2, 0),
    ("proxy_on_request_trailers", "on_request_trailers", 1, 0),
    ("proxy_on_response_headers", "on_response_headers", 2, 0),
    ("proxy_on_response_body", "on_response_body", 2, 0),
    ("proxy_on_response_trailers", "on_response_trailers", 1, 0),
    ("proxy_on_done", "on_done", 0, 1),
    ("proxy_on_log", "on_log", 0, None),
    ("proxy_on_delete", "on_delete", 0, None),
    ("proxy_on_http_call_response", "on_http_call_response", 4, None),
    ("proxy_on_grpc_receive_initial_metadata", "on_grpc_receive_initial_metadata", 2, None),
    ("proxy_on_grpc_receive", "on_grpc_receive", 2, None),
    ("proxy_on_grpc_receive_trailing_metadata", "on_grpc_receive_trailing_metadata", 2, None),
    ("proxy_on_grpc_close", "on_grpc_close", 2, None),
    ("proxy_on_foreign_function", "on_foreign_function", 2, None),
)

_U32 = struct.Struct("<I")


def loggable(message: str) -> str | bytes:
    """``message`` in a form Envoy's log takes: lone surrogates (from non-UTF-8 bytes decoded with
    ``surrogateescape``) become ``\\xNN`` escapes instead of failing the UTF-8 encoding."""
    try:
        return message.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that surrogateescape did not make
        return message.encode("utf-8", "backslashreplace")


def encode_map(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Serialise header pairs: u32 count, count x (u32 key_len, u32 value_len), then
    ``key\\0value\\0`` for each pair. All integers little-endian."""
    # Few operations per pair: inside the VM each costs tens of nanoseconds.
    items = pairs if type(pairs) is list else list(pairs)
    count = len(items)
    if not count:
        return b"\0\0\0\0"
    sizes = [count]
    for key, value in items:
        sizes += (len(key), len(value))
    return struct.pack(f"<{2 * count + 1}I", *sizes) + b"\0".join(map(b"\0".join, items)) + b"\0"


def decode_map(data: bytes | bytearray | memoryview) -> list[tuple[bytes, bytes]]:
    """Parse the wire format written by :func:`encode_map`.

    Raises ``ValueError`` when the sizes do not fit the data.
    """
    if type(data) is not bytes:
        data = bytes(data)
    size = len(data)
    if size < 4:
        if size == 0:
            return []
        raise ValueError("header map shorter than its count field")
    (count,) = _U32.unpack_from(data, 0)
    header_end = 4 + 8 * count
    if header_end > size:
        raise ValueError(f"header map claims {count} pairs but has {size} bytes")
    sizes = struct.unpack_from(f"<{2 * count}I", data, 4)
    # Slices of the bytes themselves, no view: inside the VM each step costs tens of nanoseconds.
    # (Splitting a copy of the data at its NULs is no faster, and the copy, as large as the map,
    # raised the VM's memory high-water mark under load.)
    out: list[tuple[bytes, bytes]] = []
    pos = header_end
    for i in range(0, 2 * count, 2):
        key_end = pos + sizes[i]
        value_end = key_end + 1 + sizes[i + 1]
        if value_end >= size:  # the value's NUL must fit too
            raise ValueError(f"header map pair {i // 2} runs past the end of the data")
        out.append((data[pos:key_end], data[key_end + 1 : value_end]))
        pos = value_end + 1
    return out


def encode_property_path(path: Sequence[str | bytes]) -> bytes:
    """Property paths travel as their segments joined by NUL (``("request", "path")``)."""
    return b"\0".join(p.encode() if isinstance(p, str) else p for p in path)
