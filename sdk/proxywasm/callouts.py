"""HTTP and gRPC calls from a filter to other Envoy clusters, and delivery of their answers."""

from __future__ import annotations

from . import hostcalls
from .abi import BufferType, GrpcStatus, MapType

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    Pairs = list[tuple[bytes, bytes]]

    from .context import Context
    from .headers import HeaderValue

    class GrpcStreamHandler(Protocol):
        """Receives the events of a gRPC stream opened with :meth:`Context.grpc_stream`."""

        def on_initial_metadata(self, stream: GrpcStream, metadata: Pairs) -> None: ...
        def on_message(self, stream: GrpcStream, data: bytes) -> None: ...
        def on_trailing_metadata(self, stream: GrpcStream, metadata: Pairs) -> None: ...
        def on_close(self, stream: GrpcStream, status: GrpcStatus | int, message: str) -> None: ...


class HttpCallResponse:
    """The answer to :meth:`Context.http_call`. ``failed`` means Envoy got no response
    (connection failure, reset or timeout); ``status`` is then 0."""

    __slots__ = ("body", "headers", "token", "trailers")

    def __init__(self, token: int, headers: Pairs | None = None, body: bytes = b"", trailers: Pairs | None = None):
        self.token = token
        self.headers: Pairs = headers or []
        self.body = body
        self.trailers: Pairs = trailers or []

    def __repr__(self) -> str:
        return f"HttpCallResponse(token={self.token}, status={self.status}, body={len(self.body)} bytes)"

    @property
    def failed(self) -> bool:
        return not self.headers

    @property
    def status(self) -> int:
        value = self.header(":status")
        return int(value) if value and value.isdigit() else 0

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode(errors="surrogateescape")
        return None


class GrpcCallResponse:
    """The end of a unary gRPC call: its status, message and (on success) the reply bytes."""

    __slots__ = ("data", "message", "status", "token")

    def __init__(self, token: int, status: GrpcStatus | int, message: str = "", data: bytes = b"") -> None:
        self.token = token
        self.status = status
        self.message = message
        self.data = data

    def __repr__(self) -> str:
        return f"GrpcCallResponse(token={self.token}, status={self.status!r}, data={len(self.data)} bytes)"

    @property
    def ok(self) -> bool:
        return self.status == GrpcStatus.OK


class GrpcStream:
    """An open gRPC stream: send messages, half-close or cancel it."""

    __slots__ = ("token",)

    def __init__(self, token: int) -> None:
        self.token = token

    def send(self, message: bytes, end_stream: bool = False) -> None:
        hostcalls.grpc_send(self.token, message, end_stream)

    def close(self) -> None:
        """Half-close: no more messages from this side."""
        hostcalls.grpc_close(self.token)

    def cancel(self) -> None:
        hostcalls.grpc_cancel(self.token)
        _pending.pop(self.token, None)


# token -> (context that made the call, what to do with the answer)
_pending: dict[int, tuple[Context, Any]] = {}


def _pairs(headers: Sequence[tuple[HeaderValue, HeaderValue]]) -> Pairs:
    return [(hostcalls.to_bytes(k).lower(), hostcalls.to_bytes(v)) for k, v in headers]


_FRAMING = frozenset((b"content-length", b"transfer-encoding"))


def http_call(
    context: Context,
    cluster: str,
    callback: Callable[[HttpCallResponse], None],
    method: str,
    path: str,
    authority: str | None,
    headers: Sequence[tuple[HeaderValue, HeaderValue]],
    body: bytes | str,
    trailers: Sequence[tuple[HeaderValue, HeaderValue]],
    timeout_ms: int,
) -> int:
    # The call's own body decides its framing: headers copied from a request (content-length of
    # a body that is not sent along) would make the target wait for bytes that never come.
    data = hostcalls.to_bytes(body)
    given = [(k, v) for k, v in _pairs(headers) if k not in _FRAMING]
    if data:
        given.append((b"content-length", str(len(data)).encode()))
    names = {k for k, _ in given}
    pseudo = [
        (name, value)
        for name, value in (
            (b":method", method.encode()),
            (b":path", path.encode()),
            (b":authority", (authority or cluster).encode()),
        )
        if name not in names
    ]
    token = hostcalls.http_call(cluster, pseudo + given, data, _pairs(trailers), timeout_ms)
    _pending[token] = (context, callback)
    return token


def grpc_call(
    context: Context,
    cluster: str,
    service: str,
    method: str,
    message: bytes,
    callback: Callable[[GrpcCallResponse], None],
    metadata: Sequence[tuple[HeaderValue, HeaderValue]],
    timeout_ms: int,
) -> int:
    token = hostcalls.grpc_call(cluster.encode(), service, method, _pairs(metadata), message, timeout_ms)
    _pending[token] = (context, callback)
    return token


def grpc_stream(
    context: Context,
    cluster: str,
    service: str,
    method: str,
    handler: GrpcStreamHandler,
    metadata: Sequence[tuple[HeaderValue, HeaderValue]],
) -> GrpcStream:
    stream = GrpcStream(hostcalls.grpc_stream(cluster.encode(), service, method, _pairs(metadata)))
    _pending[stream.token] = (context, (stream, handler))
    return stream


def owner(token: int) -> Context | None:
    entry = _pending.get(token)
    return entry[0] if entry else None


def deliver_http_response(token: int, num_headers: int, body_size: int, num_trailers: int) -> None:
    entry = _pending.pop(token, None)
    if entry is None:
        return
    response = HttpCallResponse(token)
    if num_headers:
        response.headers = hostcalls.get_map(MapType.HTTP_CALL_RESPONSE_HEADERS)
    if body_size:
        response.body = hostcalls.get_buffer(BufferType.HTTP_CALL_RESPONSE_BODY, 0, body_size)
    if num_trailers:
        response.trailers = hostcalls.get_map(MapType.HTTP_CALL_RESPONSE_TRAILERS)
    entry[1](response)


def deliver_grpc_initial_metadata(token: int, count: int) -> None:
    entry = _pending.get(token)
    if entry and isinstance(entry[1], tuple):
        stream, handler = entry[1]
        handler.on_initial_metadata(stream, hostcalls.get_map(MapType.GRPC_RECEIVE_INITIAL_METADATA))


def deliver_grpc_message(token: int, size: int) -> None:
    entry = _pending.get(token)
    if entry is None:
        return
    data = hostcalls.get_buffer(BufferType.GRPC_RECEIVE_BUFFER, 0, size)
    if isinstance(entry[1], tuple):
        stream, handler = entry[1]
        handler.on_message(stream, data)
    else:
        # Envoy completes a successful unary call with its one message; no close follows.
        del _pending[token]
        entry[1](GrpcCallResponse(token, GrpcStatus.OK, "", data))


def deliver_grpc_trailing_metadata(token: int, count: int) -> None:
    entry = _pending.get(token)
    if entry and isinstance(entry[1], tuple):
        stream, handler = entry[1]
        handler.on_trailing_metadata(stream, hostcalls.get_map(MapType.GRPC_RECEIVE_TRAILING_METADATA))


def deliver_grpc_close(token: int, status: int) -> None:
    """The end of a stream, or the failure of a unary call (``status`` is the gRPC status)."""
    entry = _pending.pop(token, None)
    if entry is None:
        return
    _code, message = hostcalls.get_status()
    try:
        grpc_status: GrpcStatus | int = GrpcStatus(status)
    except ValueError:
        grpc_status = status
    text = message.decode(errors="replace")
    if isinstance(entry[1], tuple):
        stream, handler = entry[1]
        handler.on_close(stream, grpc_status, text)
    else:
        entry[1](GrpcCallResponse(token, grpc_status, text))
