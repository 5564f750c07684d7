"""An HTTP stream through one Wasm filter: the router on the request side, the client on the
response side, and the two ways a test drives them.

* Step level (like proxy-wasm-go-sdk's proxytest): ``request_headers()``, ``request_body()`` ...
  deliver one event each, as Envoy's codec or the upstream would; the test plays client and upstream.
* Request level: :meth:`HttpStream.run` plays an HTTP/1 client sending the whole request at once and
  an upstream answering through ``upstream``, and runs the event loop (callouts, queues, timers) until
  the client has its response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from proxywasm.abi import Action, LogLevel, StreamType

from ..errors import BodyOverrun, StreamStalled, hide_host_frames
from ..messages import Request, Response, Route, Tls, pairs_of, to_response
from . import http1
from .attributes import metadata_message
from .filter_manager import DEFAULT_BUFFER_LIMIT, FilterManager
from .headers import HeaderInput, HeaderMap, response_status

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .contexts import Context
    from .vm import Vm

UpstreamHandler = Callable[[Request], Any]
ROUTE_TIMEOUT_MS = 15000
STREAM_IDLE_TIMEOUT_MS = 300_000  # Envoy's default: how long a stream may wait with nothing happening
UPSTREAM_CLUSTER = "upstream"
UPSTREAM_ADDRESS = "127.0.0.1:8080"
CONNECT_FAILURE_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"


def echo_upstream(request: Request) -> Response:
    """Default upstream: 200 with the request body echoed back."""
    ctype = request.header("content-type") or "text/plain"
    return Response(200, [("content-type", ctype), ("x-upstream", "echo")], request.body)


class _Router:
    """The router filter: collects what goes upstream; once the request is complete, the
    exchange with the upstream runs on the event loop (request level only)."""

    def __init__(self, stream: HttpStream) -> None:
        self.stream = stream
        self.sent_headers: HeaderMap | None = None
        self.sent_body = bytearray()
        self.sent_trailers: HeaderMap | None = None
        self.complete = False
        self.connected = False
        self.refused = False  # Envoy's codec refused the headers (http1.refused_header): nothing went out
        self.checked = False  # ... and whether they were checked yet

    def headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self.sent_headers = HeaderMap(headers)  # the router sends them at once: later edits do not count
        if self.stream._vm.pools.take(UPSTREAM_CLUSTER) and self.stream._refused():
            return  # an idle connection was ready at once: Envoy's codec refused them inside decodeHeaders
        if end_stream:
            self._complete()
        else:
            # The upstream connection is ready one event-loop turn later at the earliest: a local
            # reply or reset in the same turn ends the stream before the upstream saw anything.
            self.stream._vm.envoy.posted.append(self._connected)

    def _connected(self) -> None:
        self.connected = True
        self.stream._refused()

    def data(self, data: bytes, end_stream: bool) -> None:
        self.sent_body += data
        if end_stream:
            self._complete()

    def trailers(self, trailers: HeaderMap) -> None:
        self.sent_trailers = HeaderMap(trailers)
        self._complete()

    def _complete(self) -> None:
        self.complete = True
        self.stream._request_forwarded()

    def request(self) -> Request:
        """The request as the upstream reads it."""
        assert self.sent_headers is not None
        sent = http1.upstream_request_headers(self.sent_headers, bool(self.sent_body), ROUTE_TIMEOUT_MS)
        body, missing = http1.read_body(sent, bytes(self.sent_body))
        if self.complete and len(body) < len(self.sent_body):
            self.stream._overrun(
                f"the request says content-length: {len(body)} but the filter left {len(self.sent_body)} bytes of "
                "body: Envoy sends them all, and the upstream reads the extra bytes as the start of another request "
                "(request smuggling). Remove content-length in on_request_headers when the filter changes the body"
            )
        if missing is not None and self.complete:
            raise StreamStalled(
                f"the request says content-length: {missing} but the filter left {len(self.sent_body)} bytes of body: "
                f"in Envoy the upstream would wait for the rest until the route timeout ({ROUTE_TIMEOUT_MS} ms)",
                self.stream._vm.logs,
            )
        return Request(
            method=sent.text(":method"),
            path=sent.text(":path"),
            headers=sent.items(),
            body=body,
            trailers=self.sent_trailers.items() if self.sent_trailers is not None else [],
            cluster=UPSTREAM_CLUSTER,
            complete=self.complete,
        )


class _Client:
    """What the downstream codec writes to the client."""

    def __init__(self) -> None:
        self.headers_map: HeaderMap | None = None
        self.headers_only = False
        self.body = bytearray()
        self.trailers_map: HeaderMap | None = None
        self.complete = False

    def headers(self, headers: HeaderMap, end_stream: bool) -> None:
        self.headers_map = HeaderMap(headers)
        self.headers_only = end_stream
        self.complete = end_stream

    def data(self, data: bytes, end_stream: bool) -> None:
        self.body += data
        self.complete = end_stream

    def trailers(self, trailers: HeaderMap) -> None:
        self.trailers_map = HeaderMap(trailers)
        self.complete = True


class HttpStream:
    """One HTTP stream through the plugin's filter. Created by :meth:`Host.http_stream`.

    Step methods return ``Action.CONTINUE`` when that direction flows past the filter after the
    event, ``Action.PAUSE`` when the filter holds it (see :attr:`request_paused`).
    """

    def __init__(
        self,
        vm: Vm,
        root: Context,
        *,
        source: str = "127.0.0.1:54321",
        destination: str = "127.0.0.1:10000",
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        request_trailers: bool = False,
        skip_filter: bool = False,
        pump: Callable[[], bool] | None = None,
        wait: Callable[[float], bool] | None = None,
        routes: Sequence[Route] = (),
        tls: Tls | None = None,
    ) -> None:
        self._vm = vm
        self._routes = routes
        self._tls = tls
        self._route: Route | None = None
        self._pump = pump
        self._wait = wait
        self.source, self.destination = source, destination
        self._trailers_enabled = request_trailers
        self._router = _Router(self)
        self._client = _Client()
        self._upstream: UpstreamHandler | None = None
        self._upstream_request: Request | None = None
        self._start_ns = vm.envoy.time_ns
        self._method = "GET"
        self._manager = FilterManager(
            vm, root, self._router, self._client,
            buffer_limit=buffer_limit, attributes=self._attributes, skip_filter=skip_filter,
        )  # fmt: skip

    # -- state a test may inspect -------------------------------------------------------------------------
    @property
    def context_id(self) -> int | None:
        """The proxy-wasm context id of this stream (``None`` when a FAIL_OPEN policy skips the filter)."""
        f = self._manager.filter
        return f.ctx.id if f is not None else None

    @property
    def request_paused(self) -> bool:
        """The filter holds the request (headers, body or trailers) and has not continued it."""
        return self._manager.decoding.state != "continuing" and not self._manager.ended

    @property
    def response_paused(self) -> bool:
        return self._manager.encoding.state != "continuing" and not self._manager.ended

    @property
    def paused_in(self) -> str | None:
        """The callback whose PAUSE holds the stream (request side first), or ``None``."""
        f = self._manager.filter
        if f is None:
            return None
        if self.request_paused:
            return f.stopped_in.get(StreamType.REQUEST)
        if self.response_paused:
            return f.stopped_in.get(StreamType.RESPONSE)
        return None

    @property
    def ended(self) -> bool:
        """The stream is over (response sent or stream reset): ``on_log``/``on_done`` have run."""
        return self._manager.ended

    @property
    def reset(self) -> bool:
        """The stream was reset (``proxy_close_stream``, or a local reply too late to send)."""
        return self._manager.reset

    @property
    def local_reply(self) -> Response | None:
        """The local reply the stream answered with (the filter's, or Envoy's own), if any."""
        reply = self._manager.local_reply
        if reply is None:
            return None
        status = response_status(reply.headers) or 0
        return Response(status, [(k, v) for k, v in reply.headers.items() if not k.startswith(":")],
                        reply.body or b"", local_reply=True, details=reply.details)  # fmt: skip

    @property
    def upstream_request(self) -> Request | None:
        """What the router sent upstream (``None`` while the request has not gone past the filter,
        or when Envoy's codec refused its headers: nothing went out)."""
        if self._upstream_request is not None:
            return self._upstream_request
        if self._router.sent_headers is None or self._router.refused:
            return None
        return self._router.request()

    @property
    def request_headers_map(self) -> HeaderMap | None:
        """The request headers as the filter left them (the live map Envoy holds)."""
        return self._manager.decoding.headers

    @property
    def response_headers_map(self) -> HeaderMap | None:
        """The response headers as the filter left them (the live map Envoy holds)."""
        return self._manager.encoding.headers

    @property
    def details(self) -> str:
        """Envoy's response code details (``wasm_fail_stream``, ``request_payload_too_large`` ...)."""
        return self._manager.details

    # -- step API: request side ------------------------------------------------------------------------------
    def request_headers(self, headers: HeaderInput = (), end_of_stream: bool = False) -> Action:
        hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
        self._method = hmap.text(":method", "GET")
        self._manager.decode_headers(hmap, end_of_stream)
        return self._action(StreamType.REQUEST)

    def request_body(self, data: bytes | str = b"", end_of_stream: bool = False) -> Action:
        self._manager.decode_data(_b(data), end_of_stream)
        return self._action(StreamType.REQUEST)

    def request_trailers(self, trailers: HeaderInput = ()) -> Action:
        self._manager.decode_trailers(HeaderMap(trailers))
        return self._action(StreamType.REQUEST)

    # -- step API: response side -----------------------------------------------------------------------------
    def response_headers(self, headers: HeaderInput = (), end_of_stream: bool = False) -> Action:
        hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
        if hmap.get(b":status") is None:
            hmap.add(b":status", b"200")
        self._manager.encode_headers(hmap, end_of_stream)
        return self._action(StreamType.RESPONSE)

    def response_body(self, data: bytes | str = b"", end_of_stream: bool = False) -> Action:
        self._manager.encode_data(_b(data), end_of_stream)
        return self._action(StreamType.RESPONSE)

    def response_trailers(self, trailers: HeaderInput = ()) -> Action:
        self._manager.encode_trailers(HeaderMap(trailers))
        return self._action(StreamType.RESPONSE)

    def complete(self) -> None:
        """End the stream now (Envoy's teardown: ``proxy_on_log``, ``proxy_on_done``, ``proxy_on_delete``)."""
        self._manager.end()

    def _action(self, side: StreamType) -> Action:
        direction = self._manager.decoding if side == StreamType.REQUEST else self._manager.encoding
        return Action.CONTINUE if direction.state == "continuing" else Action.PAUSE

    # -- request level ---------------------------------------------------------------------------------------
    def run(
        self,
        method: str,
        path: str,
        headers: HeaderInput,
        body: bytes | list[bytes] | None,
        trailers: HeaderInput | None,
        upstream: UpstreamHandler,
        authority: str = "example.com",
    ) -> Response:
        """One HTTP/1 exchange: the client sends the whole request at once (Envoy's codec reads all of
        it, buffering what the filter holds); the event loop runs until the client has its answer."""
        self._upstream = upstream
        chunks = [body] if isinstance(body, (bytes, bytearray)) else list(body or [])
        data = b"".join(bytes(c) for c in chunks)
        message = http1.request_message(
            method, path, authority, HeaderMap(headers), data,
            HeaderMap(trailers) if trailers is not None else None, trailers_enabled=self._trailers_enabled,
            scheme="https" if self._tls is not None else "http",
        )  # fmt: skip
        self._method = method
        manager = self._manager
        manager.decode_headers(message.headers, message.headers_end_stream)
        for chunk, end in message.frames:
            manager.decode_data(chunk, end)
        if message.trailers is not None:
            manager.decode_trailers(message.trailers)
        self._drive()
        return self.response

    def _request_forwarded(self) -> None:
        if self._upstream is not None:
            self._vm.envoy.posted.append(self._exchange)

    def _exchange(self) -> None:
        """The router's exchange with the upstream, on the event loop."""
        manager = self._manager
        if manager.ended or self._upstream is None:
            return
        if self._refused():
            return
        request = self._upstream_request = self._router.request()
        started = time.perf_counter()
        try:
            answer = to_response(self._upstream(request))
        except (ConnectionError, OSError):
            manager.send_local_reply(503, CONNECT_FAILURE_BODY, [], -1,
                                     "upstream_reset_before_response_started{connection_failure}")  # fmt: skip
            return
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        headers = HeaderMap(answer.headers if isinstance(answer.headers, list) else pairs_of(answer.headers))
        self._vm.pools.give_back(UPSTREAM_CLUSTER, headers)
        message = http1.response_message(
            self._method, answer.status, headers, answer.body,
            HeaderMap(pairs_of(answer.trailers)) if answer.trailers else None, elapsed_ms,
        )  # fmt: skip
        manager.encode_headers(message.headers, message.headers_end_stream)
        for chunk, end in message.frames:
            manager.encode_data(chunk, end)
        if message.trailers is not None:
            manager.encode_trailers(message.trailers)

    def _overrun(self, message: str) -> None:
        """A body longer than its content-length (see BodyOverrun): raised, as an author mistake is;
        with ``raise_on_mistake=False`` logged (as Envoy's own line) and the peer's view shown: what
        it reads for this message."""
        if self._vm.raise_on_mistake:
            raise BodyOverrun(message, self._vm.logs)
        self._vm.log(LogLevel.WARN, message, internal=True)

    def _refused(self) -> bool:
        """Whether Envoy's upstream codec refuses the request headers (http1.refused_header): it
        does when the upstream connection is ready, and the router answers 503 then."""
        router = self._router
        if not router.checked and router.sent_headers is not None and not self._manager.ended:
            router.checked = True  # what the router sent does not change
            refused = http1.refused_header(router.sent_headers)
            if refused is not None:
                router.refused = True  # Envoy closes the connection it could not encode on: not given back
                self._manager.send_local_reply(503, refused.encode("latin-1"), [], -1, http1.refused_details(refused))
        return router.refused

    def _drive(self) -> None:
        """The event loop until the client has its answer. When nothing else can happen, time passes
        to the next timer (a tick, a callout's timeout), up to Envoy's stream idle timeout."""
        waited_ms = 0.0
        while not self._manager.ended:
            if self._pump is not None and self._pump():
                continue
            before = self._vm.envoy.monotonic_ns
            if self._wait is not None and self._wait(STREAM_IDLE_TIMEOUT_MS - waited_ms):
                waited_ms += (self._vm.envoy.monotonic_ns - before) / 1_000_000
                continue
            raise StreamStalled(self._stall_message(), self._vm.logs)

    def _stall_message(self) -> str:
        where = self.paused_in
        side = "request" if self.request_paused else "response"
        if where is None:
            return f"the {side} cannot go on and nothing is pending that could move it"
        resume = "resume_request" if side == "request" else "resume_response"
        return (
            f"the filter paused the {side} in {where} and nothing is pending that could resume it: no callout "
            f"is waiting for an answer, no queue item is ready, no timer falls due within Envoy's stream idle "
            f"timeout ({STREAM_IDLE_TIMEOUT_MS // 1000} s), after which Envoy would answer 408. Resume it with "
            f"proxy_continue_stream ({resume} in the Python SDK), answer with a local reply, or start a "
            "callout whose answer resumes it"
        )

    # -- what the client gets -------------------------------------------------------------------------------
    @property
    def response(self) -> Response:
        """The response as the HTTP/1 client reads it (status 0 when the stream was reset before a
        complete response went out)."""
        manager, client = self._manager, self._client
        upstream = self._upstream_request
        router = self._router
        if upstream is None and router.sent_headers is not None and router.connected and not router.refused:
            upstream = router.request()  # the stream ended while the request was unfinished: what the upstream saw
        logs = list(self._vm.logs)
        if manager.reset and not self._complete_before_reset():
            return Response(0, upstream_request=upstream, details="reset", logs=logs)
        if client.headers_map is None:
            return Response(0, upstream_request=upstream, details=manager.details or "no response", logs=logs)
        body = bytes(client.body)
        reads_body = client.complete and self._method != "HEAD" and http1.has_body(client.headers_map)
        read, missing = http1.read_body(client.headers_map, body) if reads_body else (body, None)
        if len(read) < len(body):
            self._overrun(
                f"the response says content-length: {len(read)} but the filter left {len(body)} bytes of body: Envoy "
                "sends them all, and the client reads the extra bytes as the start of another response. Remove "
                "content-length in on_response_headers when the filter changes the body"
            )
        if missing is not None:
            raise StreamStalled(
                f"the response says content-length: {missing} but the filter left {len(body)} bytes of body: "
                "Envoy's HTTP/1 client would wait for the rest forever (fix content-length, or remove it "
                "when changing the body)",
                self._vm.logs,
            )
        out = http1.client_response(
            client.headers_map, body, request_method=self._method, headers_only=client.headers_only,
            close_connection=manager.close_connection, time_ns=self._vm.envoy.time_ns,
        )  # fmt: skip
        trailers = client.trailers_map.items() if client.trailers_map is not None else []
        return Response(out.status, out.headers, out.body, trailers, upstream_request=upstream,
                        local_reply=manager.local_reply is not None, details=manager.details, logs=logs)  # fmt: skip

    def _complete_before_reset(self) -> bool:
        """A reset after the headers went out: had the client already read a whole response
        (content-length satisfied)? Then it never notices the reset."""
        client = self._client
        if client.headers_map is None:
            return False
        length = client.headers_map.get(b"content-length")
        if length is None or not length.isdigit():
            return False
        return len(client.body) >= int(length)

    # -- attributes (stream info) ----------------------------------------------------------------------------
    def _attributes(self, request_visible: bool) -> dict[str, Any]:
        manager = self._manager
        req = manager.decoding.headers or HeaderMap()
        path = req.text(":path")
        src_host, _, src_port = self.source.rpartition(":")
        dst_host, _, dst_port = self.destination.rpartition(":")
        request: dict[str, Any] = {
            "protocol": "HTTP/1.1",
            "time": self._start_ns,
            "size": len(self._router.sent_body),
        }
        if request_visible:
            # Envoy reads these from the request headers, which it only holds while the filter has
            # them (paused or in the callback) and in the access-log phase.
            request.update(
                path=path,
                url_path=path.split("?", 1)[0],
                query=path.split("?", 1)[1] if "?" in path else "",
                host=req.text(":authority"),
                scheme=req.text(":scheme", "http"),
                method=req.text(":method"),
                headers=req.joined(),
                referer=req.text("referer") or None,
                useragent=req.text("user-agent") or None,
                id=req.text("x-request-id") or None,
            )
        response: dict[str, Any] = {"code_details": manager.details, "flags": 0}
        resp = manager.encoding.headers
        code = response_status(resp) if resp is not None else None
        if resp is not None and code is not None:
            response["code"] = code & 0xFFFFFFFF  # Envoy's stream info keeps a uint32
            response["headers"] = resp.joined()
            response["size"] = len(self._client.body)
        if manager.encoding.trailers is not None:
            response["trailers"] = manager.encoding.trailers.joined()
        attrs: dict[str, Any] = {
            "filter_state": {k.decode("latin-1"): v for k, v in self._manager.filter_state().items()},
            "request": {k: v for k, v in request.items() if v is not None},
            "response": response,
            "source": {"address": self.source, "port": int(src_port or 0)},
            "destination": {"address": self.destination, "port": int(dst_port or 0)},
            "connection": {"id": 1, **(self._tls.attributes() if self._tls else _PLAINTEXT)},
            "xds": self._route_attributes(),
        }
        if self._router.sent_headers is not None:
            attrs["upstream"] = {"address": UPSTREAM_ADDRESS, "port": int(UPSTREAM_ADDRESS.rpartition(":")[2])}
        return attrs

    def _route_attributes(self) -> dict[str, Any]:
        """``xds.*`` of the route: Envoy picks it by the request's path when first asked, and keeps it."""
        if self._route is None:
            headers = self._manager.decoding.headers
            if headers is None:
                return {"route_name": "", "cluster_name": UPSTREAM_CLUSTER, "route_metadata": metadata_message({})}
            path = headers.text(":path")
            self._route = next((r for r in self._routes if path.startswith(r.prefix)), _CATCH_ALL)
        route = self._route
        return {"route_name": route.name, "cluster_name": UPSTREAM_CLUSTER,
                "route_metadata": metadata_message(route.metadata)}  # fmt: skip


_CATCH_ALL = Route("/")
_PLAINTEXT = {"mtls": False, "requested_server_name": ""}


def _b(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)
