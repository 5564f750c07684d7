"""An HTTP stream through one Wasm filter, as Envoy's HTTP connection manager drives it.

Step methods (``request_headers`` ...) call the filter once each, like proxy-wasm-go-sdk's proxytest.
:meth:`HttpStream.run` strings them together the way Envoy's filter manager does: pauses wait for
``continue_stream``, paused bodies are buffered, local replies go back through the response callbacks,
and the stream ends with ``on_log``, ``on_done``, ``on_delete``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxywasm.abi import Action, BufferType, MapType, StreamType

from .context import Context, HeaderInput, HeaderMap
from .errors import StreamStalled
from .messages import Request, Response, pairs_of, to_response

if TYPE_CHECKING:
    from .host import Host

UpstreamHandler = Callable[[Request], Any]

_DATA_CONTINUE, _DATA_BUFFER, _DATA_WATERMARK, _DATA_NO_BUFFER = 0, 1, 2, 3


def echo_upstream(request: Request) -> Response:
    """Default upstream: 200 with the request body echoed back."""
    ctype = request.header("content-type") or "text/plain"
    return Response(200, [("content-type", ctype), ("x-upstream", "echo")], request.body)


class HttpStream:
    def __init__(self, host: Host, *, source: str = "127.0.0.1:54321", destination: str = "127.0.0.1:10000") -> None:
        self.host = host
        self.vm = host.vm
        self.ctx: Context = self.vm.new_stream(host.root, "http", self)
        self.request_headers_map = HeaderMap()
        self.request_trailers_map: HeaderMap | None = None
        self.response_headers_map = HeaderMap()
        self.response_trailers_map: HeaderMap | None = None
        self.request_body_sent = bytearray()  # what went on towards the upstream
        self.response_body_sent = bytearray()  # what went on towards the client
        self.local_response: Response | None = None
        self.reset = False
        self.access_log_phase = False
        self.source, self.destination = source, destination
        self.start_ns = host.envoy.time_ns
        self.response_code_details = ""
        self._paused = {StreamType.REQUEST: False, StreamType.RESPONSE: False}
        self._buffering = {StreamType.REQUEST: False, StreamType.RESPONSE: False}
        self._encoding = False
        self._failure_reply_sent = False
        self._local_through_filter = False
        self._destroyed = False
        self._request_complete = False  # the codec saw the request's end of stream
        self._close_connection = False  # HTTP/1: a reply went out before the request was complete
        self._response_headers_sent = False  # the client already has the response headers
        self.upstream_request: Request | None = None

    # -- helpers ------------------------------------------------------------------------------------
    def _fail_stream(self) -> None:
        """Envoy's failStream: a bare 503 local reply that skips this filter's response callbacks."""
        if not self._failure_reply_sent:
            self._failure_reply_sent = True
            self.response_code_details = "wasm_fail_stream"
            self._set_local(503, b"", [], "wasm_fail_stream")

    def _call(self, name: str, *args: int) -> int | None:
        if self.vm.failed:
            # Already failed: fail closed (503), or with fail_open skip the filter entirely.
            if not self.host.fail_open:
                self._fail_stream()
            return None
        result = self.vm.call(name, self.ctx, *args)
        if self.vm.failed:
            self._fail_stream()  # the request that trapped gets a 503 whatever the policy
            return None
        return result

    def _headers_action(self, raw: int | None, stopped: bool) -> Action:
        if raw is None:
            return (
                Action.CONTINUE
                if (self.host.fail_open or not self.vm.failed)
                else Action.STOP_ALL_ITERATION_AND_WATERMARK
            )
        if stopped or raw > Action.STOP_ALL_ITERATION_AND_WATERMARK:
            return Action.STOP_ALL_ITERATION_AND_WATERMARK
        if raw == Action.PAUSE:
            return Action.STOP_ALL_ITERATION_AND_WATERMARK  # 0.2.x: StopIteration means stop all
        return Action(raw)

    def _run_headers(self, side: StreamType, map_type: MapType, hmap: HeaderMap, eos: bool, name: str) -> Action:
        self.vm.create_in_vm(self.ctx)
        self.ctx.maps[map_type] = hmap
        self.ctx.end_of_stream = eos
        stop_before = self.vm.stop_next_iteration
        raw = self._call(name, self.ctx.id, len(hmap), int(eos))
        action = self._headers_action(raw, stop_before or self._local_pending())
        if action == Action.CONTINUE:
            self.ctx.maps[map_type] = None  # Envoy drops its pointer once the filter continues
            if side == StreamType.RESPONSE and not self.reset:
                self._response_headers_sent = True
        else:
            self._paused[side] = True
        return action

    def _local_pending(self) -> bool:
        return self.local_response is not None

    # -- step API: request side ---------------------------------------------------------------------
    def request_headers(self, headers: HeaderInput = (), end_of_stream: bool = False) -> Action:
        if isinstance(headers, HeaderMap):
            self.request_headers_map = headers
        elif headers:
            self.request_headers_map = HeaderMap(headers)
        self._request_complete = self._request_complete or end_of_stream
        return self._run_headers(StreamType.REQUEST, MapType.HTTP_REQUEST_HEADERS, self.request_headers_map,
                                 end_of_stream, "proxy_on_request_headers")  # fmt: skip

    def request_body(self, data: bytes | str = b"", end_of_stream: bool = False) -> Action:
        self._request_complete = self._request_complete or end_of_stream
        return self._body(StreamType.REQUEST, data, end_of_stream)

    def request_trailers(self, trailers: HeaderInput = ()) -> Action:
        self.request_trailers_map = HeaderMap(trailers)
        self._request_complete = True
        return self._trailers(StreamType.REQUEST, self.request_trailers_map)

    # -- step API: response side --------------------------------------------------------------------
    def response_headers(self, headers: HeaderInput = (), end_of_stream: bool = False) -> Action:
        self._encoding = True
        if isinstance(headers, HeaderMap):
            self.response_headers_map = headers
        elif headers:
            self.response_headers_map = HeaderMap(headers)
        return self._run_headers(StreamType.RESPONSE, MapType.HTTP_RESPONSE_HEADERS, self.response_headers_map,
                                 end_of_stream, "proxy_on_response_headers")  # fmt: skip

    def response_body(self, data: bytes | str = b"", end_of_stream: bool = False) -> Action:
        self._encoding = True
        return self._body(StreamType.RESPONSE, data, end_of_stream)

    def response_trailers(self, trailers: HeaderInput = ()) -> Action:
        self._encoding = True
        self.response_trailers_map = HeaderMap(trailers)
        return self._trailers(StreamType.RESPONSE, self.response_trailers_map)

    def _body(self, side: StreamType, data: bytes | str, eos: bool) -> Action:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        buf_type = BufferType.HTTP_REQUEST_BODY if side == StreamType.REQUEST else BufferType.HTTP_RESPONSE_BODY
        name = "proxy_on_request_body" if side == StreamType.REQUEST else "proxy_on_response_body"
        if not self.ctx.created_in_vm:
            self._forward(side, chunk)
            return Action.CONTINUE
        current = self.ctx.buffers.get(buf_type)
        if self._buffering[side] and current is not None:
            current += chunk  # StopIterationAndBuffer: the filter sees the whole body so far
            buffer = current
        else:
            buffer = bytearray(chunk)
        self.ctx.buffers[buf_type] = buffer
        self.ctx.end_of_stream = eos
        stop_before = self.vm.stop_next_iteration
        raw = self._call(name, self.ctx.id, len(buffer), int(eos))
        self.ctx.end_of_stream = False
        self._buffering[side] = False
        if raw is None:
            if self.local_response is None:
                self._forward(side, bytes(buffer))
                self.ctx.buffers[buf_type] = None
                return Action.CONTINUE
            return Action.PAUSE
        status = _DATA_NO_BUFFER if (stop_before or self._local_pending() or raw > _DATA_NO_BUFFER) else raw
        if status == _DATA_CONTINUE:
            self._forward(side, bytes(buffer))
            self.ctx.buffers[buf_type] = None
            return Action.CONTINUE
        if status in (_DATA_BUFFER, _DATA_WATERMARK):
            self._buffering[side] = True
        if eos or status == _DATA_NO_BUFFER:
            self._paused[side] = True
        return Action.PAUSE

    def _trailers(self, side: StreamType, hmap: HeaderMap) -> Action:
        map_type = MapType.HTTP_REQUEST_TRAILERS if side == StreamType.REQUEST else MapType.HTTP_RESPONSE_TRAILERS
        name = "proxy_on_request_trailers" if side == StreamType.REQUEST else "proxy_on_response_trailers"
        if not self.ctx.created_in_vm:
            return Action.CONTINUE
        self.ctx.maps[map_type] = hmap
        stop_before = self.vm.stop_next_iteration
        raw = self._call(name, self.ctx.id, len(hmap))
        if raw is None:
            return Action.CONTINUE if self.local_response is None else Action.PAUSE
        if raw == 0 and not stop_before and not self._local_pending():
            self.ctx.maps[map_type] = None
            self._flush_buffered(side)
            return Action.CONTINUE
        self._paused[side] = True
        return Action.PAUSE

    def _forward(self, side: StreamType, data: bytes) -> None:
        (self.request_body_sent if side == StreamType.REQUEST else self.response_body_sent).extend(data)

    def _flush_buffered(self, side: StreamType) -> None:
        buf_type = BufferType.HTTP_REQUEST_BODY if side == StreamType.REQUEST else BufferType.HTTP_RESPONSE_BODY
        buffered = self.ctx.buffers.get(buf_type)
        if buffered is not None:
            self._forward(side, bytes(buffered))
        self.ctx.buffers[buf_type] = None
        self._buffering[side] = False

    # -- effects requested by the filter (run after the VM call returns) -----------------------------
    def resume(self, side: StreamType) -> None:
        """``continue_stream``: Envoy continues decoding/encoding and forgets the paused maps/buffers."""
        if side not in self._paused:
            return
        self._paused[side] = False
        if side == StreamType.REQUEST:
            self.ctx.maps[MapType.HTTP_REQUEST_HEADERS] = None
            self.ctx.maps[MapType.HTTP_REQUEST_TRAILERS] = None
        else:
            self.ctx.maps[MapType.HTTP_RESPONSE_HEADERS] = None
            self.ctx.maps[MapType.HTTP_RESPONSE_TRAILERS] = None
            self._response_headers_sent = True
        self._flush_buffered(side)

    def close(self, side: StreamType) -> None:
        """``close_stream``: the stream is reset; no response reaches the client."""
        self.reset = True
        if not self.response_code_details:
            self.response_code_details = "wasm_close_stream"

    def trailers_added(self, map_type: int, hmap: HeaderMap) -> None:
        if map_type == MapType.HTTP_REQUEST_TRAILERS:
            self.request_trailers_map = hmap
        else:
            self.response_trailers_map = hmap

    def send_local_reply(self, code: int, body: bytes, headers: list[tuple[bytes, bytes]], grpc_status: int,
                         details: str) -> None:  # fmt: skip
        if self.local_response is not None and not self._encoding:
            return
        if self._response_headers_sent:
            # Too late for a reply: the client has the headers. Envoy resets the stream instead.
            self.close(StreamType.RESPONSE)
            return
        self.response_code_details = details
        self._set_local(code, body, headers, details)

    def _set_local(self, code: int, body: bytes, headers: list[tuple[bytes, bytes]], details: str) -> None:
        # Envoy builds the reply as :status, the filter's extra headers, then sets content-length and a
        # text/plain content-type unless the filter chose one.
        hmap = HeaderMap([(":status", str(code))])
        for k, v in headers:
            hmap.add(k, v)
        if body:
            hmap.replace("content-length", str(len(body)))
            if hmap.get("content-type") is None:
                hmap.add("content-type", "text/plain")
        if self.host.http1 and ((not self._encoding and not self._request_complete) or int(code) == 400):
            # Envoy's HTTP/1 connection manager will not wait for the rest of the request, and it
            # does not keep a connection after a 400 reply.
            self._close_connection = True
        self.local_response = Response(int(code), [], bytes(body), local_reply=True, details=details)
        self._local_headers = hmap
        # A reply sent while decoding goes back through this filter's response callbacks; one sent
        # while encoding replaces the response directly.
        self._local_through_filter = not self._encoding and not self._failure_reply_sent

    def _complete_before_reset(self) -> bool:
        """A reset after the headers went out: did the client already read a whole response
        (content-length satisfied)? Then it never notices the reset."""
        length = self.response_headers_map.get("content-length")
        if not self._response_headers_sent or length is None or not length.isdigit():
            return False
        return len(self.response_body_sent) >= int(length)

    # -- attributes for get_property ---------------------------------------------------------------
    def attributes(self) -> dict[str, Any]:
        from .properties import headers_dict

        req = self.request_headers_map
        path = (req.get(":path") or b"").decode("latin-1")
        src_host, _, src_port = self.source.rpartition(":")
        dst_host, _, dst_port = self.destination.rpartition(":")
        request: dict[str, Any] = {
            "path": path,
            "url_path": path.split("?", 1)[0],
            "query": path.split("?", 1)[1] if "?" in path else "",
            "host": (req.get(":authority") or b"").decode("latin-1"),
            "scheme": (req.get(":scheme") or b"http").decode("latin-1"),
            "method": (req.get(":method") or b"").decode("latin-1"),
            "headers": {k: v for k, v in _joined(req).items()},
            "referer": (req.get("referer") or b"").decode("latin-1") or None,
            "useragent": (req.get("user-agent") or b"").decode("latin-1") or None,
            "id": (req.get("x-request-id") or b"").decode("latin-1") or None,
            "protocol": "HTTP/1.1",
            "time": self.start_ns,
            "size": len(self.request_body_sent),
        }
        if self.ctx.maps.get(MapType.HTTP_REQUEST_HEADERS) is None and not self.access_log_phase:
            # Envoy's CEL activation reads these from the request headers, which it only holds while
            # the filter has them (paused or in the callback) and in the access-log phase.
            for key in ("path", "url_path", "query", "host", "scheme", "method", "headers", "referer",
                        "useragent", "id"):  # fmt: skip
                request.pop(key, None)
        attrs: dict[str, Any] = {
            "request": {k: v for k, v in request.items() if v is not None},
            "source": {"address": self.source, "port": int(src_port or 0)},
            "destination": {"address": self.destination, "port": int(dst_port or 0)},
            "connection": {"id": 1, "mtls": False},
        }
        status = self.response_headers_map.get(":status")
        response: dict[str, Any] = {"code_details": self.response_code_details, "flags": 0, "grpc_status": None}
        if status is not None:
            response["code"] = int(status)
            response["headers"] = _joined(self.response_headers_map)
            response["size"] = len(self.response_body_sent)
        if self.response_trailers_map is not None:
            response["trailers"] = headers_dict(self.ctx, MapType.HTTP_RESPONSE_TRAILERS) or {}
        attrs["response"] = {k: v for k, v in response.items() if v is not None}
        if self.upstream_request is not None:
            attrs["upstream"] = {"address": "127.0.0.1:8080", "port": 8080}
        return attrs

    def log_map(self, map_type: int) -> HeaderMap | None:
        if map_type == MapType.HTTP_REQUEST_HEADERS:
            return self.request_headers_map
        if map_type == MapType.HTTP_RESPONSE_HEADERS:
            return self.response_headers_map
        if map_type == MapType.HTTP_RESPONSE_TRAILERS:
            return self.response_trailers_map
        return None

    # -- end of stream ---------------------------------------------------------------------------
    def log(self) -> None:
        """Access-log phase (``proxy_on_log``): headers are readable, not writable."""
        if not self.ctx.created_in_vm:
            self.vm.create_in_vm(self.ctx)
        self.access_log_phase = True
        try:
            if not self.vm.failed:
                self.vm.call("proxy_on_log", self.ctx, self.ctx.id)
        finally:
            self.access_log_phase = False

    def destroy(self) -> None:
        """Filter destruction: ``proxy_on_done`` then ``proxy_on_delete``."""
        if self._destroyed:
            return
        self._destroyed = True
        if self.ctx.created_in_vm and not self.vm.failed:
            self.vm.call("proxy_on_done", self.ctx, self.ctx.id)
        self.vm.delete(self.ctx)

    def complete(self) -> None:
        """Envoy's stream teardown order: access log first, then the filter is destroyed."""
        self.log()
        self.destroy()

    # -- whole-stream driver ----------------------------------------------------------------------
    def _await(self, side: StreamType) -> bool:
        """Wait (delivering callouts and queue events) until ``side`` resumes; False: stream ended."""
        if side == StreamType.REQUEST and self.local_response is None:
            # The client sent the whole request at once: while the filter holds it, the codec reads
            # (and Envoy buffers) the rest, so a later reply does not find the request incomplete.
            self._request_complete = True
        while True:
            if self.local_response is not None or self.reset:
                return False
            if not self._paused[side]:
                return True
            if not self.host.pump():
                where = "request" if side == StreamType.REQUEST else "response"
                raise StreamStalled(
                    f"the filter paused the {where} and nothing is pending that could resume it "
                    "(in Envoy the stream would hang until a timeout)",
                    self.vm.logs,
                )

    def run(
        self,
        method: str,
        path: str,
        headers: HeaderInput,
        body: bytes | str | list[bytes] | None,
        trailers: HeaderInput | None,
        upstream: UpstreamHandler,
        authority: str = "example.com",
    ) -> Response:
        # As Envoy's HTTP/1 codec and connection manager hand them to the first filter: :authority,
        # :path, :method, :scheme, the client's headers, then x-forwarded-proto and x-request-id.
        req = HeaderMap([(":authority", authority), (":path", path), (":method", method), (":scheme", "http")])
        user = HeaderMap(headers)
        for k, v in user.pairs():
            if k.startswith(b":"):
                req.set_in_place(k, v)
            else:
                req.add(k, v)
        raw_chunks: list[bytes | str] = [body] if isinstance(body, (bytes, str)) else list(body or [])
        chunks = [c.encode() if isinstance(c, str) else bytes(c) for c in raw_chunks if c]
        if chunks and req.get("content-length") is None and req.get("transfer-encoding") is None:
            req.add("content-length", str(sum(len(c) for c in chunks)))
        if req.get("x-forwarded-proto") is None:
            req.add("x-forwarded-proto", "http")
        if req.get("x-request-id") is None:
            req.add("x-request-id", str(uuid.UUID(int=random.getrandbits(128), version=4)))
        if self._decode(req, chunks, trailers):
            started = time.perf_counter()
            sent = HeaderMap(req)
            # The router adds its timeout header after the filters; HTTP/1 chunks a body without length.
            sent.add("x-envoy-expected-rq-timeout-ms", "15000")
            if self.request_body_sent and sent.get("content-length") is None:
                sent.add("transfer-encoding", "chunked")
            self.upstream_request = Request(
                method=(req.get(":method") or b"").decode("latin-1"),
                path=(req.get(":path") or b"").decode("latin-1"),
                headers=sent.items(),
                body=_cut_to_length(sent, bytes(self.request_body_sent)),
                trailers=self.request_trailers_map.items() if self.request_trailers_map else [],
            )
            try:
                upstream_response = to_response(upstream(self.upstream_request))
            except (ConnectionError, OSError):
                # The router's answer to an unreachable upstream: a local 503 through the filter chain.
                body = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"
                self.send_local_reply(503, body, [], -1, "upstream_reset_before_response_started{connection_failure}")
                self._send_local()
                result = self._result()
                self.complete()
                self.host.pump()
                return result
            resp_headers = HeaderMap([(":status", str(upstream_response.status))])
            for name, value in pairs_of(upstream_response.headers):
                resp_headers.add(name, value)
            if upstream_response.body and resp_headers.get("content-length") is None:
                resp_headers.add("content-length", str(len(upstream_response.body)))
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            resp_headers.add("x-envoy-upstream-service-time", str(elapsed_ms))
            self._encode(resp_headers, upstream_response.body, upstream_response.trailers or None)
        if self.local_response is not None:
            self._send_local()
        result = self._result()
        self.complete()
        self.host.pump()
        return result

    @staticmethod
    def _frames(chunks: list[bytes], has_trailers: bool, http1: bool) -> list[tuple[bytes, bool]]:
        """Data frames as Envoy's codec delivers them. HTTP/1 hands over the body with
        end_stream=false and ends the message with an empty end_stream=true frame."""
        if not chunks:
            return []
        if http1 and not has_trailers:
            return [(c, False) for c in chunks] + [(b"", True)]
        return [(c, i == len(chunks) - 1 and not has_trailers) for i, c in enumerate(chunks)]

    def _decode(self, headers: HeaderMap, chunks: list[bytes], trailers: HeaderInput | None) -> bool:
        eos = not chunks and trailers is None
        self.request_headers_map = headers
        action = self.request_headers(headers, eos)
        if action != Action.CONTINUE and not self._await(StreamType.REQUEST):
            return False
        if action != Action.CONTINUE and len(chunks) > 1:
            chunks = [b"".join(chunks)]  # it all arrived (and was buffered) while the filter paused
        for chunk, last in self._frames(chunks, trailers is not None, self.host.http1):
            self.request_body(chunk, last)
            if self.local_response is not None or self.reset:
                return False
            if self._paused[StreamType.REQUEST] and not self._await(StreamType.REQUEST):
                return False
        if trailers is not None:
            self.request_trailers(trailers)
            if self._paused[StreamType.REQUEST] and not self._await(StreamType.REQUEST):
                return False
        return self.local_response is None and not self.reset

    def _encode(self, headers: HeaderMap, body: bytes, trailers: Any, *, local: bool = False) -> None:
        self._encoding = True
        chunks = [body] if body else []
        eos = not chunks and not trailers
        action = self.response_headers(headers, eos)
        if action != Action.CONTINUE and not self._await(StreamType.RESPONSE):
            return
        # A local reply's body is encoded in one end_stream=true frame.
        for chunk, last in self._frames(chunks, bool(trailers), self.host.http1 and not local):
            self.response_body(chunk, last)
            if self._paused[StreamType.RESPONSE] and not self._await(StreamType.RESPONSE):
                return
        if trailers:
            self.response_trailers(pairs_of(trailers))
            if self._paused[StreamType.RESPONSE]:
                self._await(StreamType.RESPONSE)

    def _send_local(self) -> None:
        local = self.local_response
        assert local is not None
        headers = self._local_headers
        if self._local_through_filter and self.ctx.created_in_vm:
            self._local_through_filter = False
            self._encoding = True
            self._paused[StreamType.RESPONSE] = False
            self.response_body_sent.clear()
            saved = self.local_response
            self.local_response = None  # let the response callbacks run
            self._encode(headers, local.body, None, local=True)
            if self.local_response is None:
                self.local_response = saved
                self.response_headers_map = headers
                return
            headers = self._local_headers
            local = self.local_response
        self.response_headers_map = headers
        self.response_body_sent = bytearray(local.body)

    def _result(self) -> Response:
        if self.reset and not self._complete_before_reset():
            return Response(0, upstream_request=self.upstream_request, details="reset", logs=list(self.vm.logs))
        final = HeaderMap(self.response_headers_map)
        # What Envoy's HTTP/1 codec adds on the way to the client, after every filter ran.
        if final.get("date") is None:
            final.add("date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(self.host.envoy.time_ns / 1e9)))
        final.set_in_place("server", "envoy")
        status = int(final.get(":status") or b"0")
        # HTTP/1 frames no body for 1xx and 204: no content-length, no chunking.
        no_body = status < 200 or status == 204
        if final.get("content-length") is None and final.get("transfer-encoding") is None and not no_body:
            if self.response_body_sent:
                final.add("transfer-encoding", "chunked")
            else:
                final.add("content-length", "0")
        if self._close_connection:
            final.add("connection", "close")
        # ... and a client reads no body after a 1xx or 204 status, whatever was sent.
        body = b"" if no_body else _cut_to_length(final, bytes(self.response_body_sent))
        headers = [(k, v) for k, v in final.items() if not k.startswith(":")]
        return Response(
            status=status,
            headers=headers,
            body=body,
            trailers=self.response_trailers_map.items() if self.response_trailers_map else [],
            upstream_request=self.upstream_request,
            local_reply=self.local_response is not None,
            details=self.response_code_details,
            logs=list(self.vm.logs),
        )


def _joined(hmap: HeaderMap) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in hmap.items():
        out[k] = f"{out[k]},{v}" if k in out else v
    return out


def _cut_to_length(headers: HeaderMap, body: bytes) -> bytes:
    """HTTP/1 peers read exactly content-length bytes: Envoy does not fix the header after a filter
    rewrote the body, so a longer body gets cut."""
    raw = headers.get("content-length")
    if raw is None or not raw.isdigit():
        return body
    return body[: int(raw)]
