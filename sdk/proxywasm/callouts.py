"""HTTP and gRPC calls from a filter to other Envoy clusters, and delivery of their answers."""

from __future__ import annotations

from . import hostcalls
from .abi import BufferType, GrpcStatus, MapType, Status
from .errors import CalloutFailed, HostCallError, UsageError
from .headers import HeaderPairs

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, Protocol

    from .context import Context
    from .headers import HeaderValue
    from .tasks import GrpcCallFuture, HttpCallFuture

    class GrpcStreamHandler(Protocol):
        """Receives the events of a gRPC stream opened with :meth:`Context.grpc_stream`."""

        def on_initial_metadata(self, stream: GrpcStream, metadata: HeaderPairs) -> None: ...
        def on_message(self, stream: GrpcStream, data: bytes) -> None: ...
        def on_trailing_metadata(self, stream: GrpcStream, metadata: HeaderPairs) -> None: ...
        def on_close(self, stream: GrpcStream, status: GrpcStatus | int, message: str) -> None: ...


class HttpCallResponse:
    """The answer to :meth:`Context.http_call`: ``status``, ``headers`` and ``trailers`` (a
    :class:`~proxywasm.headers.HeaderPairs`, read like request headers: ``response.headers["x"]``
    gives a ``str``, ``get_bytes`` the raw value) and ``body`` (bytes).

    What Envoy 1.40 delivers: the target's response; for a timeout a 504 with body
    ``upstream request timeout``; for a target that cannot be reached (connection refused, closed
    before the response headers, no healthy host) a 503 with body ``upstream connect error or
    disconnect/reset before headers. reset reason: ...``. Only when the exchange breaks after that
    (a reset in the middle of the response) does Envoy deliver no response at all: then ``failed``
    is true and ``status`` 0 (an awaited call raises :class:`~proxywasm.errors.CalloutFailed`)."""

    __slots__ = ("body", "cluster", "headers", "token", "trailers")

    def __init__(
        self,
        token: int,
        headers: HeaderPairs | None = None,
        body: bytes = b"",
        trailers: HeaderPairs | None = None,
        cluster: str = "",
    ) -> None:
        self.token = token
        self.headers = headers if headers is not None else HeaderPairs()
        self.body = body
        self.trailers = trailers if trailers is not None else HeaderPairs()
        self.cluster = cluster

    def __repr__(self) -> str:
        return f"HttpCallResponse(token={self.token}, status={self.status}, body={len(self.body)} bytes)"

    @property
    def failed(self) -> bool:
        """Envoy delivered no response (a reset): no headers at all."""
        return not self.headers

    @property
    def status(self) -> int:
        value = self.headers.get(":status")
        return int(value) if value and value.isdigit() else 0

    def header(self, name: str) -> str | None:
        """The first value of ``name`` (same as ``response.headers.get(name)``)."""
        return self.headers.get(name)

    def text(self, encoding: str = "utf-8", errors: str = "surrogateescape") -> str:
        return self.body.decode(encoding, errors)


class GrpcCallResponse:
    """The end of a unary gRPC call: its ``status`` (:class:`~proxywasm.GrpcStatus`), ``message``
    and, when ``ok``, the reply bytes in ``data``.

    What Envoy 1.40 delivers (seen there; ``tests/runtime/test_grpc_outcomes.py``): ``message`` is
    the server's ``grpc-message`` with Envoy's response code details appended in braces
    (``"nope{via_upstream}"``; ``"via_upstream"`` alone when the server sent none), so compare
    with ``startswith``: the details are the last ``{...}`` group, which may nest. Envoy's own
    timeout is UNAVAILABLE (not DEADLINE_EXCEEDED) with ``"upstream request timeout{response_timeout}"``
    (a server that enforces the ``grpc-timeout`` Envoy sends may answer DEADLINE_EXCEEDED first); a
    cluster it cannot reach is UNAVAILABLE with ``"upstream connect error or disconnect/reset before
    headers. reset reason: ...{upstream_reset_before_response_started{...}}"``. The details tell
    Envoy's UNAVAILABLE from the server's own."""

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


# token -> (context that made the call, what to do with the answer, cluster, awaited). The answer
# goes to a callback, an HttpCallFuture / GrpcCallFuture (awaited), a (GrpcStream, handler), or
# None (detached).
_pending: dict[int, tuple[Context, Any, str, bool]] = {}


def _pairs(headers: Sequence[tuple[HeaderValue, HeaderValue]]) -> list[tuple[bytes, bytes]]:
    return [(hostcalls.to_bytes(k).lower(), hostcalls.to_bytes(v)) for k, v in headers]


_FRAMING = frozenset((b"content-length", b"transfer-encoding"))
_PSEUDO = frozenset((b":method", b":path", b":authority"))


def _track(context: Context, callback: Any, detach: bool, what: tuple[str, str], future: Any) -> None:
    """Count a callout the stream should wait for (see Dispatcher.check_unwaited)."""
    if detach:
        return
    context._unwaited_what = what
    if future is not None:
        future._claimed = False  # counted until awaited (Future.claim), not a mistake then
    if future is not None or callback is not None:
        context._unwaited += 1


def _refused(err: HostCallError, cluster: str) -> HostCallError:
    """Envoy's refusal of a callout, with the cluster named (Envoy says only BAD_ARGUMENT)."""
    why = (
        ": Envoy has no cluster of that name (most often), or the call lacks :method/:path/:authority, or its "
        "timeout is out of range"
        if err.status == Status.BAD_ARGUMENT
        else ""
    )
    return HostCallError(err.call, int(err.status), f"cluster {cluster!r}{why}")


def http_call(
    context: Context,
    cluster: str,
    callback: Callable[[HttpCallResponse], Any] | None,
    method: str | None,
    path: str | None,
    authority: str | None,
    headers: Sequence[tuple[HeaderValue, HeaderValue]],
    body: bytes | str,
    trailers: Sequence[tuple[HeaderValue, HeaderValue]],
    timeout_ms: int,
    detach: bool,
) -> int | HttpCallFuture:
    # The call's own body decides its framing: headers copied from a request (content-length of
    # a body that is not sent along) would make the target wait for bytes that never come.
    # Explicit method=/path=/authority= win over pseudo headers copied in headers= (the last copy
    # of each); those win over the defaults (GET, /, the cluster's name). One pass over headers.
    data = hostcalls.to_bytes(body)
    copied: dict[bytes, bytes] = {}
    rest: list[tuple[bytes, bytes]] = []
    for k, v in _pairs(headers):
        if k in _PSEUDO:
            copied[k] = v
        elif k not in _FRAMING:
            rest.append((k, v))
    if data:
        rest.append((b"content-length", str(len(data)).encode()))
    pseudo = [
        (b":method", hostcalls.to_bytes(method) if method is not None else copied.get(b":method", b"GET")),
        (b":path", hostcalls.to_bytes(path) if path is not None else copied.get(b":path", b"/")),
        (b":authority", hostcalls.to_bytes(authority) if authority is not None else copied.get(b":authority")
         or hostcalls.to_bytes(cluster)),
    ]  # fmt: skip
    try:
        token = hostcalls.http_call(cluster, pseudo + rest, data, _pairs(trailers) if trailers else (), timeout_ms)
    except HostCallError as err:
        raise _refused(err, cluster) from None
    if callback is not None or detach:
        _pending[token] = (context, callback, cluster, False)
        _track(context, callback, detach, ("http_call", cluster), None)
        return token
    # An awaited call: HttpCallFuture(context, cluster) and _track(), inlined without their frames
    # (once per awaited callout).
    driver = _driver or _awaitable(context, cluster, "http_call")
    future: HttpCallFuture = driver.clone(driver.HTTP_CALL_FUTURE)  # pending, not claimed
    future.context = context
    future.cluster = cluster
    future.token = token
    _pending[token] = (context, future, cluster, True)
    context._unwaited_what = ("http_call", cluster)
    context._unwaited += 1
    return future


def grpc_call(
    context: Context,
    cluster: str,
    service: str,
    method: str,
    message: bytes,
    callback: Callable[[GrpcCallResponse], Any] | None,
    metadata: Sequence[tuple[HeaderValue, HeaderValue]],
    timeout_ms: int,
    detach: bool,
) -> int | GrpcCallFuture:
    tasks = _awaitable(context, cluster, "grpc_call") if callback is None and not detach else None
    try:
        token = hostcalls.grpc_call(hostcalls.to_bytes(cluster), service, method, _pairs(metadata), message, timeout_ms)
    except HostCallError as err:
        raise _refused(err, cluster) from None
    future = tasks.GrpcCallFuture(context, cluster) if tasks is not None else None
    if future is not None:
        future.token = token
    _pending[token] = (context, callback if future is None else future, cluster, future is not None)
    _track(context, callback, detach, (f"grpc_call {service}/{method}", cluster), future)
    return token if future is None else future


def grpc_stream(
    context: Context,
    cluster: str,
    service: str,
    method: str,
    handler: GrpcStreamHandler,
    metadata: Sequence[tuple[HeaderValue, HeaderValue]],
) -> GrpcStream:
    try:
        stream = GrpcStream(hostcalls.grpc_stream(hostcalls.to_bytes(cluster), service, method, _pairs(metadata)))
    except HostCallError as err:
        raise _refused(err, cluster) from None
    _pending[stream.token] = (context, (stream, handler), cluster, False)
    return stream


_driver: Any = None  # tasks.py once looked up: an import statement per callout costs an import-machinery lookup


def _awaitable(context: Context, cluster: str, call: str) -> Any:
    """The coroutine driver, to return an awaitable: loaded only for filters that await."""
    global _driver
    if _driver is not None:
        return _driver
    from ._dispatch import tasks

    try:
        _driver = tasks()
        return _driver
    except UsageError:
        raise UsageError(
            f"{call} to cluster {cluster!r} without a callback returns something to await, but "
            f"{type(context).__name__} has no async def callback: pass a callback (and return Action.PAUSE), "
            "or detach=True to fire and forget, or make the callback async def and await the call"
        ) from None


def owner(token: int) -> Context | None:
    entry = _pending.get(token)
    return entry[0] if entry else None


def pending_for(context: Context) -> bool:
    """Whether a callout of ``context`` still waits for its answer."""
    return any(entry[0] is context for entry in _pending.values())


def forget(token: int) -> None:
    """Drop a callout whose answer must not be delivered (its context has ended)."""
    _pending.pop(token, None)


def deliver_http_response(token: int, num_headers: int, body_size: int, num_trailers: int) -> Any:
    """Hand Envoy's answer to whoever waits for it; returns what a callback returned."""
    entry = _pending.pop(token, None)
    if entry is None:
        return None
    context, target, cluster, awaited = entry
    if target is None:
        return None  # detached without a callback: the answer is not wanted
    response = HttpCallResponse(
        token,
        HeaderPairs(hostcalls.get_map(MapType.HTTP_CALL_RESPONSE_HEADERS)) if num_headers else None,
        hostcalls.get_buffer(BufferType.HTTP_CALL_RESPONSE_BODY, 0, body_size) if body_size else b"",
        HeaderPairs(hostcalls.get_map(MapType.HTTP_CALL_RESPONSE_TRAILERS)) if num_trailers else None,
        cluster,
    )
    if awaited:
        if num_headers:
            if target._state == 0:  # target.set_result(response), inlined: once per awaited callout
                target._state, target._value = 1, response
                waiters, target._waiters = target._waiters, None
                for waiter in waiters or ():
                    waiter(target)
        else:
            code, message = hostcalls.get_status()
            detail = message.decode("utf-8", "replace") or "no response"
            target.set_exception(CalloutFailed(cluster, token, f"{detail} (status {code})"))
        return None
    return target(response)


def deliver_grpc_initial_metadata(token: int, count: int) -> Any:
    entry = _pending.get(token)
    if entry and isinstance(entry[1], tuple):
        stream, handler = entry[1]
        metadata = HeaderPairs(hostcalls.get_map(MapType.GRPC_RECEIVE_INITIAL_METADATA))
        return handler.on_initial_metadata(stream, metadata)
    return None


def _finish_unary(entry: tuple[Context, Any, str, bool], response: GrpcCallResponse) -> Any:
    target = entry[1]
    if target is None:
        return None
    if entry[3]:  # awaited
        target.set_result(response)
        return None
    return target(response)


def deliver_grpc_message(token: int, size: int) -> Any:
    entry = _pending.get(token)
    if entry is None:
        return None
    data = hostcalls.get_buffer(BufferType.GRPC_RECEIVE_BUFFER, 0, size)
    if isinstance(entry[1], tuple):
        stream, handler = entry[1]
        return handler.on_message(stream, data)
    # Envoy completes a successful unary call with its one message; no close follows.
    del _pending[token]
    return _finish_unary(entry, GrpcCallResponse(token, GrpcStatus.OK, "", data))


def deliver_grpc_trailing_metadata(token: int, count: int) -> Any:
    entry = _pending.get(token)
    if entry and isinstance(entry[1], tuple):
        stream, handler = entry[1]
        metadata = HeaderPairs(hostcalls.get_map(MapType.GRPC_RECEIVE_TRAILING_METADATA))
        return handler.on_trailing_metadata(stream, metadata)
    return None


def deliver_grpc_close(token: int, status: int) -> Any:
    """The end of a stream, or the failure of a unary call (``status`` is the gRPC status)."""
    entry = _pending.pop(token, None)
    if entry is None:
        return None
    _code, message = hostcalls.get_status()
    try:
        grpc_status: GrpcStatus | int = GrpcStatus(status)
    except ValueError:
        grpc_status = status
    text = message.decode(errors="replace")
    if isinstance(entry[1], tuple):
        stream, handler = entry[1]
        return handler.on_close(stream, grpc_status, text)
    return _finish_unary(entry, GrpcCallResponse(token, grpc_status, text))
