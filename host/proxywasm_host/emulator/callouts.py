"""Callouts: ``proxy_http_call`` through Envoy's async HTTP client, and gRPC calls and streams.

What the target cluster receives (:class:`~proxywasm_host.Request`), how an answer, a timeout, an
unreachable cluster or a reset reaches the filter, and when. Envoy files callouts under the root
context of the caller (cpp-host ``exports.cc``), so answers are delivered to the root context and
outlive the stream that made them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxywasm.abi import BufferType, LogLevel, MapType, Status

from ..errors import hide_host_frames
from ..messages import GrpcReply, Request, Response, pairs_of
from .headers import HeaderMap
from .http1 import PSEUDO_SENT, as_parsed, refused_details, refused_header

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .process import Timer
    from .vm import Vm

Pairs = list[tuple[bytes, bytes]]

TIMEOUT_BODY = b"upstream request timeout"
_BEFORE_HEADERS = b"upstream connect error or disconnect/reset before headers. reset reason: "
UNREACHABLE_BODY = _BEFORE_HEADERS + b"remote connection failure"
RESET_BODY = _BEFORE_HEADERS + b"connection termination"


class HttpCallout:
    """An ``http_call`` in flight. A test answers it with :meth:`respond`, or makes Envoy's other
    outcomes happen: :meth:`time_out` (504), :meth:`unreachable` (503), :meth:`reset` (503),
    :meth:`cut_off` (no response at all).

    ``request`` is what the cluster receives; ``timeout_ms`` is the call's timeout (0: none). Once
    the host clock passes the timeout the call times out by itself, as in Envoy.
    """

    def __init__(self, vm: Vm, token: int, cluster: str, request: Request, timeout_ms: int, context_id: int) -> None:
        self._vm = vm
        self.token = token
        self.cluster = cluster
        self.request = request
        self.timeout_ms = timeout_ms
        self.context_id = context_id
        self.done = False
        self.slow = False  # the cluster's handler answered SLOW: only the timeout can end it
        # Envoy's upstream codec refused the request's headers (http1.refused_header): the router
        # answers the call itself with a 503 saying why, and the cluster sees nothing.
        self.refused: str | None = None
        self._timer: Timer | None = None
        if timeout_ms > 0:
            self._timer = vm.envoy.schedule(timeout_ms, self.time_out)

    # Convenience views of the request.
    @property
    def headers(self) -> list[tuple[str, str]]:
        return self.request.headers

    @property
    def body(self) -> bytes:
        return self.request.body

    @property
    def trailers(self) -> list[tuple[str, str]]:
        return self.request.trailers

    def header(self, name: str) -> str | None:
        return self.request.header(name)

    def __repr__(self) -> str:
        return f"HttpCallout({self.cluster!r}, {self.request.method} {self.request.path}, token={self.token})"

    def respond(self, status: int = 200, headers: Any = (), body: bytes | str = b"", trailers: Any = ()) -> None:
        """Deliver an answer. Like a real HTTP/1 upstream's, it carries ``content-length`` (added
        when absent, unless there are trailers: then it was chunked), and its header values lose the
        whitespace around them as Envoy's codec parses them."""
        data = body.encode() if isinstance(body, str) else bytes(body)
        hmap = HeaderMap([(":status", str(status)), *as_parsed(HeaderMap(pairs_of(headers)))])
        if hmap.get(b"content-length") is None and hmap.get(b"transfer-encoding") is None and not trailers:
            hmap.add(b"content-length", str(len(data)))
        hmap.remove(b"transfer-encoding")
        if not self.done:
            self._vm.pools.give_back(self.cluster, hmap)
        self._deliver(hmap, data, HeaderMap(pairs_of(trailers)) if trailers else None)

    def answer(self, response: Response) -> None:
        """Deliver a :class:`~proxywasm_host.Response` as the cluster's answer."""
        self.respond(response.status, response.headers, response.body, response.trailers)

    def time_out(self) -> None:
        """Envoy's async client answers a call past its timeout with a local 504."""
        self._local_answer(504, TIMEOUT_BODY)

    def unreachable(self) -> None:
        """The cluster has no reachable host: Envoy answers with a synthetic 503."""
        self._local_answer(503, UNREACHABLE_BODY)

    def reset(self) -> None:
        """The cluster reset the connection before answering: Envoy's router answers with a
        synthetic 503 (``reset reason: connection termination``)."""
        self._local_answer(503, RESET_BODY)

    def cut_off(self) -> None:
        """The answer started but the connection broke before it was complete: Envoy calls
        ``on_http_call_response(token, 0, 0, 0)`` and ``proxy_get_status`` gives BROKEN_CONNECTION."""
        if not self._finish():
            return
        vm = self._vm
        root = vm.contexts.get(self.context_id)
        if root is None:
            return
        root.status_code, root.status_message = int(Status.BROKEN_CONNECTION), b"reset"
        try:
            vm.call("proxy_on_http_call_response", root, root.id, self.token, 0, 0, 0)
        finally:
            root.status_code, root.status_message = 0, b""

    def cancel(self) -> None:
        """Drop the call without an answer (Envoy cancels callouts of a VM that failed)."""
        self._finish()

    def refuse(self) -> None:
        """Envoy's router answers a call whose headers its codec refused (see ``refused``)."""
        self._local_answer(503, (self.refused or "").encode("latin-1"))

    def _local_answer(self, status: int, body: bytes) -> None:
        hmap = HeaderMap([(":status", str(status)), ("content-length", str(len(body))), ("content-type", "text/plain")])
        self._deliver(hmap, body, None)

    def _finish(self) -> bool:
        if self.done:
            return False
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
        self._vm.http_calls.pop(self.token, None)
        return True

    def _deliver(self, headers: HeaderMap, body: bytes, trailers: HeaderMap | None) -> None:
        if not self._finish():
            return
        vm = self._vm
        root = vm.contexts.get(self.context_id)
        if root is None:
            return
        root.callout_response = (headers, body, trailers)
        try:
            # Envoy passes the number of headers and trailers, and the body size.
            vm.call("proxy_on_http_call_response", root, root.id, self.token, len(headers), len(body),
                    len(trailers) if trailers is not None else 0)  # fmt: skip
        finally:
            root.callout_response = None


def _unknown_cluster(vm: Vm, what: str, cluster: str) -> None:
    """Envoy refuses the call without a word; the host says which cluster and which ones exist."""
    known = ", ".join(sorted(vm.clusters)) or "none (give Host.load clusters=...)"
    vm.log(LogLevel.WARN, f"{what} to unknown cluster {cluster!r}; clusters known: {known}", internal=True)


def start_http_call(
    vm: Vm, cluster: str, headers: Pairs, body: bytes, trailers: Pairs, timeout_ms: int
) -> tuple[int, int]:
    """Envoy's ``Context::httpCall`` and its async client: checks, then the request as sent."""
    if timeout_ms >= 1 << 31:  # Envoy takes the timeout as a signed int
        return int(Status.BAD_ARGUMENT), 0
    if cluster not in vm.clusters:
        _unknown_cluster(vm, "http_call", cluster)
        return int(Status.BAD_ARGUMENT), 0
    hmap = HeaderMap(headers)
    if hmap.get(b":path") is None or hmap.get(b":method") is None or hmap.get(b":authority") is None:
        return int(Status.BAD_ARGUMENT), 0
    if body:
        hmap.replace(b"content-length", str(len(body)).encode())
    # The router checks the names the filter gave (":x y" is refused as on a stream; callouts not
    # probed in Envoy for it: the SDK refuses such names itself), then the pseudo headers HTTP/1
    # cannot carry are dropped; the async client adds its own headers, and no x-request-id.
    refused_name = refused_header(HeaderMap([(k, b"") for k, v in hmap.pairs() if k[:1] == b":"]))
    hmap.set_pairs((k, v) for k, v in hmap.pairs() if k[:1] != b":" or k in PSEUDO_SENT)
    hmap.add(b"x-envoy-internal", b"true")
    if timeout_ms > 0:
        hmap.add(b"x-envoy-expected-rq-timeout-ms", str(timeout_ms).encode())
    token = vm.next_callout_token(0)  # Envoy numbers the call before sending it
    refused = refused_name or refused_header(hmap)
    if vm.pools.take(cluster) and refused is not None:
        # An idle connection was ready at once: the async client's router meets the codec's
        # refusal inside the call, and Envoy's httpCall answers INTERNAL_FAILURE (checked in Envoy).
        return int(Status.INTERNAL_FAILURE), 0
    items = hmap.items()
    request = Request(
        method=hmap.text(":method"),
        path=hmap.text(":path"),
        headers=items,
        body=bytes(body),
        trailers=HeaderMap(trailers).items(),
        cluster=cluster,
    )
    callout = vm.http_calls[token] = HttpCallout(vm, token, cluster, request, timeout_ms, vm.root_of(vm.ctx()).id)
    if refused is not None:  # on a new connection: the router answers the call with a 503 saying why
        callout.refused = refused
        vm.envoy.posted.append(callout.refuse)
    return int(Status.OK), token


# Envoy 1.40's gRPC client appends the stream's response code details to the status message the
# filter reads (Grpc::AsyncClient's enhancedGrpcMessage): "nope{via_upstream}" for a server's
# "nope", "via_upstream" alone for none. Local failures carry their own details (seen in Envoy).
VIA_UPSTREAM = "via_upstream"
GRPC_UNAVAILABLE = 14
GRPC_TIMEOUT = ("upstream request timeout", "response_timeout")  # a unary call past its timeout: 14
GRPC_UNREACHABLE = (
    UNREACHABLE_BODY.decode(),
    "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
)


def grpc_status_message(message: str, details: str) -> str:
    """The status message Envoy 1.40 hands the filter: the server's (or local reply's) message
    with the response code details appended in braces; either alone when the other is empty."""
    if not message:
        return details
    return f"{message}{{{details}}}" if details else message


class GrpcCallout:
    """A gRPC call (``stream`` false) or stream in flight; answer it with :meth:`respond`, push
    server messages with :meth:`send`, end it with :meth:`close`. A unary call with a timeout ends
    by itself once the host clock passes it (UNAVAILABLE ``upstream request timeout``, as Envoy
    1.40 reports it); :meth:`unreachable` is Envoy's answer when no host of the cluster answers."""

    def __init__(self, vm: Vm, token: int, cluster: str, service: str, method: str, metadata: list[tuple[str, str]],
                 request: bytes | None, stream: bool, context_id: int, timeout_ms: int = 0) -> None:  # fmt: skip
        self._vm = vm
        self.token = token
        self.cluster = cluster
        self.service = service
        self.method = method
        self.metadata = metadata
        self.request = request
        self.stream = stream
        self.context_id = context_id
        self.sent: list[bytes] = []
        self.local_closed = False
        self.remote_closed = False
        self.done = False
        self.slow = False  # the cluster's handler answered SLOW: only the timeout can end it
        # Envoy's codec refused the metadata (see start_grpc): the call ends with this local reply.
        self.refused: str | None = None
        self._timer: Timer | None = None
        if timeout_ms > 0 and not stream:
            self._timer = vm.envoy.schedule(timeout_ms, self.time_out)

    def __repr__(self) -> str:
        return f"GrpcCallout({self.cluster!r}, {self.service}/{self.method}, token={self.token})"

    def respond(self, message: bytes | None = b"", status: int = 0, status_message: str = "",
                initial_metadata: Any = (), trailing_metadata: Any = ()) -> None:  # fmt: skip
        """A unary call: status 0 delivers ``message`` (``on_grpc_receive``; no close follows, as in
        Envoy), any other status closes it (``on_grpc_close``). A stream: metadata, message, close."""
        if self.stream:
            if initial_metadata:
                self._deliver_map(MapType.GRPC_RECEIVE_INITIAL_METADATA, HeaderMap(pairs_of(initial_metadata)))
            if message is not None:
                self.send(message)
            if trailing_metadata:
                self._deliver_map(MapType.GRPC_RECEIVE_TRAILING_METADATA, HeaderMap(pairs_of(trailing_metadata)))
            self.close(status, status_message)
        elif status == 0 and message is not None:
            self.send(message)
            self.done = True
            self.cancel_timer()
        else:
            self.close(status, status_message)

    def reply(self, reply: GrpcReply) -> None:
        self.respond(reply.message, reply.status, reply.status_message, reply.initial_metadata,
                     reply.trailing_metadata)  # fmt: skip

    def send(self, message: bytes) -> None:
        """A message from the server (``on_grpc_receive``)."""
        root = self._root()
        if root is None:
            return
        root.grpc_receive[BufferType.GRPC_RECEIVE_BUFFER] = bytes(message)
        try:
            self._vm.call("proxy_on_grpc_receive", root, root.id, self.token, len(message))
        finally:
            root.grpc_receive.pop(BufferType.GRPC_RECEIVE_BUFFER, None)
            if not self.stream:
                self._vm.grpc_callouts.pop(self.token, None)

    def close(self, status: int = 0, message: str = "", *, details: str = VIA_UPSTREAM) -> None:
        """The server ends the call or stream with a gRPC status (``on_grpc_close``). The filter
        reads ``message`` with Envoy's response code ``details`` appended (see
        :func:`grpc_status_message`); a local failure passes its own."""
        self.remote_closed = True
        self.done = True
        self.cancel_timer()
        root = self._root()
        if root is None:
            return
        root.status_code = int(status)
        root.status_message = grpc_status_message(message, details).encode()
        try:
            self._vm.call("proxy_on_grpc_close", root, root.id, self.token, int(status))
        finally:
            root.status_code, root.status_message = 0, b""
            if not self.stream or self.local_closed:
                self._vm.grpc_callouts.pop(self.token, None)

    def cancel_timer(self) -> None:
        """The call is over (answered or cancelled): its timeout will not fire."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def time_out(self) -> None:
        """A unary call past its timeout: Envoy's router answers the call with a local 504, which
        its gRPC client reports as UNAVAILABLE (Envoy 1.40; not DEADLINE_EXCEEDED)."""
        if not self.done:
            self.close(GRPC_UNAVAILABLE, GRPC_TIMEOUT[0], details=GRPC_TIMEOUT[1])

    def unreachable(self) -> None:
        """No host of the cluster accepts the connection (refused): UNAVAILABLE, with the reason."""
        if not self.done:
            self.close(GRPC_UNAVAILABLE, GRPC_UNREACHABLE[0], details=GRPC_UNREACHABLE[1])

    def refuse(self) -> None:
        """Envoy's codec refused the metadata on a new connection (see ``refused``)."""
        if not self.done and self.refused is not None:
            self.close(GRPC_UNAVAILABLE, self.refused, details=refused_details(self.refused))

    def _root(self) -> Any:
        if self.token not in self._vm.grpc_callouts:
            return None
        return self._vm.contexts.get(self.context_id)

    def _deliver_map(self, map_type: MapType, metadata: HeaderMap) -> None:
        root = self._root()
        if root is None:
            return
        vm = self._vm
        name = "proxy_on_grpc_receive_initial_metadata"
        if map_type == MapType.GRPC_RECEIVE_TRAILING_METADATA:
            name = "proxy_on_grpc_receive_trailing_metadata"
            if not vm.has(name):
                name = "proxy_on_grpc_trailing_metadata"  # 0.2.0 SDKs (AssemblyScript) use this name
        root.grpc_receive[map_type] = metadata
        try:
            vm.call(name, root, root.id, self.token, len(metadata))
        finally:
            root.grpc_receive.pop(map_type, None)


def start_grpc(
    vm: Vm, service: bytes, service_name: bytes, method: bytes, metadata: Pairs, message: bytes | None, timeout_ms: int
) -> tuple[int, int]:
    """``proxy_grpc_call`` (``message`` given) or ``proxy_grpc_stream`` (``None``)."""
    cluster = service.decode("utf-8", "replace")
    if cluster not in vm.clusters:
        # Envoy: neither a GrpcService proto nor a cluster name.
        _unknown_cluster(vm, "grpc_call" if message is not None else "grpc_stream", cluster)
        return int(Status.PARSE_FAILURE), 0
    stream = message is None
    refused = refused_metadata(metadata)
    if refused is not None and vm.pools.h2_ready(cluster):
        # The cluster's HTTP/2 connection is up: the codec refuses inside the call (Envoy 1.40).
        return int(Status.INTERNAL_FAILURE), 0
    if not vm.pools.h2_ready(cluster):
        vm.pools.h2_open(cluster)
        vm.envoy.posted.append(vm.pools.h2_connected)
    token = vm.next_callout_token(2 if stream else 1)
    callout = vm.grpc_callouts[token] = GrpcCallout(
        vm, token, cluster, service_name.decode("utf-8", "replace"), method.decode("utf-8", "replace"),
        HeaderMap(metadata).items(), message, stream, vm.root_of(vm.ctx()).id, timeout_ms,
    )  # fmt: skip
    if refused is not None:  # on the new connection, once it is up: the call ends UNAVAILABLE saying why
        callout.refused = refused
        vm.envoy.posted.append(callout.refuse)
    return int(Status.OK), token


def refused_metadata(metadata: Pairs) -> str | None:
    """Why Envoy's codec refuses a gRPC call's metadata, as :func:`~.http1.refused_header` says it
    for request headers; the value of a ``-bin`` key is any bytes (Envoy base64-encodes it)."""
    pairs = [(k, b"" if k.endswith(b"-bin") else v) for k, v in metadata if k[:1] != b":"]
    return refused_header(HeaderMap(pairs))
