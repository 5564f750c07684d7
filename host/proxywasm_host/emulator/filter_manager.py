"""Envoy's HTTP filter manager for a chain of one Wasm filter and the router: each direction's
phases as a state machine, body buffering and its limit, continuing a stopped filter, local
replies, resets and the end of the stream (access log, then destroy).

One direction (:class:`Direction`) moves through these states for the Wasm filter:

* ``CONTINUING``: frames pass the filter (after being shown to it) to the next stage.
* ``STOPPED`` (StopSingleIteration): the filter answered PAUSE to a body or trailers callback, or
  (with ``allow_on_headers_stop_iteration``) to headers. Later frames are still shown to it;
  a CONTINUE from one of them, or ``proxy_continue_stream``, releases what was held.
* ``STOPPED_ALL`` (StopAllIterationAndWatermark/AndBuffer from headers): later frames are buffered
  WITHOUT calling the filter. On continue the held headers go on, then the filter is shown all the
  buffered body in ONE callback (``end_of_stream`` true if the direction is complete), then trailers.

Buffered body data is limited by the connection's buffer limit (``per_connection_buffer_limit_bytes``,
1 MiB by default). Past it, data buffered for a PAUSE from a body callback (StopIterationAndBuffer) or
a StopAllIterationAndBuffer ends the stream: 413 ``Payload Too Large`` on the request side; on the
response side a 500 if the response headers have not gone out, else a reset. Watermark buffering
(the Wasm default for headers) only applies flow control: nothing fails.

Local replies (``sendLocalReply``): before any response started, the reply goes through the filter's
response callbacks; once a response started but its headers were not sent, it goes straight to the
client; once headers were sent, the stream is reset. A second local reply straight to the client on
one stream crashes Envoy 1.40 (SIGSEGV): :class:`~proxywasm_host.EnvoyCrash` is raised instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from proxywasm.abi import StreamType

from ..errors import EnvoyCrash, hide_host_frames
from . import local_reply
from .headers import HeaderMap, response_status
from .http_filter import (
    CONTINUE,
    DATA_STOP_AND_BUFFER,
    DATA_STOP_AND_WATERMARK,
    STOP_ALL_AND_BUFFER,
    STOP_ALL_AND_WATERMARK,
    HttpFilter,
)

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .vm import Vm

Pairs = list[tuple[bytes, bytes]]
DEFAULT_BUFFER_LIMIT = 1024 * 1024  # Envoy's default per_connection_buffer_limit_bytes

CONTINUING, STOPPED, STOPPED_ALL = "continuing", "stopped", "stopped_all"


class Stage(Protocol):
    """What comes after the Wasm filter in one direction: the router (request) or the downstream
    codec (response)."""

    def headers(self, headers: HeaderMap, end_stream: bool) -> None: ...
    def data(self, data: bytes, end_stream: bool) -> None: ...
    def trailers(self, trailers: HeaderMap) -> None: ...


class Direction:
    """One direction of the stream as the filter manager tracks it for the Wasm filter."""

    __slots__ = (
        "buffered",
        "complete",
        "headers",
        "headers_passed",
        "name",
        "passed_end",
        "state",
        "streaming",
        "trailers",
        "trailers_passed",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = CONTINUING
        self.headers: HeaderMap | None = None
        self.trailers: HeaderMap | None = None
        self.buffered: bytearray | None = None  # data held for the filter
        self.streaming = True  # watermark buffering: no limit error
        self.complete = False  # the codec (or upstream) delivered this direction's end
        self.headers_passed = False  # headers went past the filter
        self.passed_end = False  # the end of the direction went past the filter
        self.trailers_passed = False  # the trailers went past the filter


class FilterManager:
    """One stream's filter chain: ``filter`` (``None`` when FAIL_OPEN skips a failed VM's filter),
    then ``upstream`` for the request and ``downstream`` for the response."""

    def __init__(
        self,
        vm: Vm,
        root: Any,
        upstream: Stage,
        downstream: Stage,
        *,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        http1: bool = True,
        attributes: Callable[[bool], dict[str, Any]] | None = None,
        skip_filter: bool = False,
    ) -> None:
        self.vm = vm
        self.upstream = upstream
        self.downstream = downstream
        self.buffer_limit = buffer_limit
        self.http1 = http1
        self._attributes = attributes
        self.filter: HttpFilter | None = None if skip_filter else HttpFilter(vm, root, self)
        self.decoding = Direction("request")
        self.encoding = Direction("response")
        self.details = ""
        self.is_head = False
        self.is_grpc = False
        self.response_started = False  # response headers exist (upstream's or a local reply's)
        self.response_headers_sent = False  # ... and went to the client
        self.local_reply: local_reply.LocalReply | None = None
        self.direct_replies = 0
        self.close_connection = False
        self.reset = False
        self.ended = False
        self.request_trailers_added: HeaderMap | None = None
        self._in_decode = False
        self._in_encode = False
        self._decode_aborted = False
        self._encode_aborted = False
        self._replying = False
        self.reply_generation = 0

    # -- request: decoding -------------------------------------------------------------------------------
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        side = self.decoding
        side.headers, side.complete = headers, end_stream
        self.is_head = headers.get(b":method") == b"HEAD"
        self.is_grpc = local_reply.is_grpc_request(headers)
        status = CONTINUE
        f = self.filter
        if f is not None:
            self._in_decode = True
            try:
                status = f.decode_headers(headers, end_stream)
            finally:
                self._in_decode = False
            if self._stop_decoding():
                return
        if status == CONTINUE:
            self._pass_headers(side, end_stream)
        else:
            self._stop(side, status)

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        side = self.decoding
        if self._stop_decoding():
            return  # after a local reply or reset, Envoy drops further request data
        side.complete = side.complete or end_stream
        self._data(side, bytearray(data), end_stream)

    def decode_trailers(self, trailers: HeaderMap) -> None:
        side = self.decoding
        if self._stop_decoding():
            return
        side.trailers, side.complete = trailers, True
        self._trailers(side)

    def continue_decoding(self) -> None:
        self._continue(self.decoding)

    def add_decoded_data(self, data: bytearray) -> None:
        """The filter (buffering) adds a new frame to the buffered body (``addDecodedData``)."""
        self._hold(self.decoding, data, streaming=False)

    def add_decoded_trailers(self) -> HeaderMap:
        trailers = HeaderMap()
        self.decoding.trailers = trailers
        self.request_trailers_added = trailers
        return trailers

    # -- response: encoding ------------------------------------------------------------------------------
    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> None:
        side = self.encoding
        if self.reset or self.ended:
            return
        self.response_started = True
        side.headers, side.complete = headers, end_stream
        status = CONTINUE
        f = self.filter
        if f is not None:
            self._in_encode = True
            try:
                status = f.encode_headers(headers, end_stream)
            finally:
                self._in_encode = False
            if self._stop_encoding():
                return
        if status == CONTINUE:
            self._pass_headers(side, end_stream)
        else:
            self._stop(side, status)

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        side = self.encoding
        if self._stop_encoding():
            return
        side.complete = side.complete or end_stream
        self._data(side, bytearray(data), end_stream)

    def encode_trailers(self, trailers: HeaderMap) -> None:
        side = self.encoding
        if self._stop_encoding():
            return
        side.trailers, side.complete = trailers, True
        self._trailers(side)

    def continue_encoding(self) -> None:
        self._continue(self.encoding)

    def add_encoded_data(self, data: bytearray) -> None:
        self._hold(self.encoding, data, streaming=False)

    def add_encoded_trailers(self) -> HeaderMap:
        trailers = HeaderMap()
        self.encoding.trailers = trailers
        return trailers

    def buffered(self, side: StreamType) -> bytearray:
        direction = self.decoding if side == StreamType.REQUEST else self.encoding
        if direction.buffered is None:
            direction.buffered = bytearray()
        return direction.buffered

    # -- the state machine, shared by both directions ------------------------------------------------------
    def _decoder_call(self, call: Callable[[HttpFilter], int]) -> int:
        assert self.filter is not None
        self._in_decode = True
        try:
            return call(self.filter)
        finally:
            self._in_decode = False

    def _encoder_call(self, call: Callable[[HttpFilter], int]) -> int:
        assert self.filter is not None
        self._in_encode = True
        try:
            return call(self.filter)
        finally:
            self._in_encode = False

    def _filter_data(self, side: Direction, data: bytearray, end_stream: bool) -> int:
        if side is self.decoding:
            return self._decoder_call(lambda f: f.decode_data(data, end_stream))
        return self._encoder_call(lambda f: f.encode_data(data, end_stream))

    def _filter_trailers(self, side: Direction, trailers: HeaderMap) -> int:
        if side is self.decoding:
            return self._decoder_call(lambda f: f.decode_trailers(trailers))
        return self._encoder_call(lambda f: f.encode_trailers(trailers))

    def _stopped_now(self, side: Direction) -> bool:
        return self._stop_decoding() if side is self.decoding else self._stop_encoding()

    def _stop_decoding(self) -> bool:
        return self.reset or self.ended or self._decode_aborted

    def _stop_encoding(self) -> bool:
        return self.reset or self.ended or self._encode_aborted

    def _next(self, side: Direction) -> Stage:
        return self.upstream if side is self.decoding else self.downstream

    def _stop(self, side: Direction, status: int) -> None:
        if status in (STOP_ALL_AND_BUFFER, STOP_ALL_AND_WATERMARK):
            side.state = STOPPED_ALL
            side.streaming = status == STOP_ALL_AND_WATERMARK
        else:
            side.state = STOPPED

    def _pass_headers(self, side: Direction, end_stream: bool) -> None:
        assert side.headers is not None
        side.headers_passed = True
        if end_stream:
            side.passed_end = True
        if side is self.encoding:
            if response_status(side.headers) is None:
                # The connection manager reads :status once the encoder filters are done with it;
                # none it can read: a 502 straight to the client instead (the filters saw theirs).
                self.details = "filter_removed_required_response_headers{missing_required_header:_:status}"
                self._reply_to_client(local_reply.build(502, b"missing required header: :status", [], -1,
                                                        is_grpc=self.is_grpc, is_head=self.is_head,
                                                        details=self.details))  # fmt: skip
                return
            self.response_headers_sent = True
        self._next(side).headers(side.headers, end_stream)
        self._maybe_end()

    def _pass_data(self, side: Direction, data: bytes, end_stream: bool) -> None:
        if end_stream:
            side.passed_end = True
        self._next(side).data(data, end_stream)
        self._maybe_end()

    def _pass_trailers(self, side: Direction) -> None:
        assert side.trailers is not None
        side.passed_end = side.trailers_passed = True
        self._next(side).trailers(side.trailers)
        self._maybe_end()

    def _hold(self, side: Direction, data: bytearray, *, streaming: bool) -> None:
        """``commonHandleBufferData``: move ``data`` into the buffered body, then apply the limit."""
        if side.buffered is None:
            side.buffered = bytearray()
        if data is not side.buffered:
            side.buffered += data
            del data[:]
        if self.buffer_limit and len(side.buffered) > self.buffer_limit and not streaming:
            self._too_large(side)

    def _too_large(self, side: Direction) -> None:
        if side is self.decoding:
            self.send_local_reply(413, b"Payload Too Large", [], -1, "request_payload_too_large")
        else:
            self.send_local_reply(500, b"Internal Server Error", [], -1, "response_payload_too_large")

    def _data(self, side: Direction, data: bytearray, end_stream: bool) -> None:
        if side.state == STOPPED_ALL:
            self._hold(side, data, streaming=side.streaming)
            return
        if self.filter is None or side.passed_end:
            self._pass_data(side, bytes(data), end_stream)
            return
        end = end_stream and side.trailers is None
        status = self._filter_data(side, data, end)
        if self._stopped_now(side):
            return
        self._after_data(side, status, data)

    def _after_data(self, side: Direction, status: int, data: bytearray) -> None:
        """``commonHandleAfterDataCallback``."""
        if status == CONTINUE:
            if side.state != CONTINUING:
                self._hold(side, data, streaming=True)
                self._resume(side, from_filter=False)
            else:
                # Trailers the filter added at the end of the body follow the data.
                added = side.trailers is not None and not side.trailers_passed
                self._pass_data(side, bytes(data), side.complete and not added)
                if added and not self._stopped_now(side):
                    self._pass_trailers(side)
            return
        side.state = STOPPED
        if status in (DATA_STOP_AND_BUFFER, DATA_STOP_AND_WATERMARK):
            side.streaming = status == DATA_STOP_AND_WATERMARK
            self._hold(side, data, streaming=side.streaming)
        elif side.complete and side.trailers is None and side.buffered is None:
            side.buffered = bytearray()  # StopIterationNoBuffer at the end: continue sends an empty end

    def _trailers(self, side: Direction) -> None:
        if side.state == STOPPED_ALL:
            return
        if self.filter is None:
            self._pass_trailers(side)
            return
        trailers = side.trailers
        assert trailers is not None
        status = self._filter_trailers(side, trailers)
        if self._stopped_now(side):
            return
        if status == CONTINUE:
            if side.state != CONTINUING:
                self._resume(side, from_filter=False)
            else:
                self._pass_trailers(side)
        else:
            side.state = STOPPED

    def _continue(self, side: Direction) -> None:
        """``continueDecoding``/``continueEncoding`` asked by the filter."""
        if self._stopped_now(side) or side.state == CONTINUING:
            return
        self._resume(side, from_filter=side.state == STOPPED_ALL)

    def _resume(self, side: Direction, *, from_filter: bool) -> None:
        """``commonContinue``: pass the held headers, then the held body, then held trailers. After a
        stop-all the filter itself sees the held body (one callback) and trailers first."""
        side.state = CONTINUING
        had_trailers = side.trailers is not None and not side.trailers_passed
        if not side.headers_passed:
            self._pass_headers(side, side.complete and not side.buffered and not had_trailers)
            if self._stopped_now(side):
                return
        if side.buffered is not None:
            data, side.buffered = side.buffered, None
            end = side.complete and not had_trailers
            if from_filter and self.filter is not None:
                status = self._filter_data(side, data, end)
                if self._stopped_now(side):
                    return
                if status != CONTINUE:
                    self._after_data(side, status, data)
                    return
            self._pass_data(side, bytes(data), end)
            if self._stopped_now(side):
                return
        if had_trailers:
            if from_filter:
                self._trailers(side)
            else:
                self._pass_trailers(side)

    # -- local replies, resets, the end --------------------------------------------------------------------
    def set_details_if_unset(self, details: str) -> None:
        if not self.details:
            self.details = details

    def send_local_reply(
        self, code: int, body: bytes, headers: Pairs, grpc_status: int, details: str, *, asked_in: int | None = None
    ) -> None:
        """``sendLocalReply``. ``asked_in``: the :attr:`reply_generation` when the filter asked for it."""
        if asked_in is not None and self._replying and asked_in != self.reply_generation:
            # Real Envoy 1.40 (differential suite): a reply the filter asked for before another local
            # reply started through the filter (a second send_local_response in the same callback) is
            # dropped; one asked for while that reply is in the filter goes to the client.
            return
        if self.direct_replies:
            raise EnvoyCrash(
                "a second local reply on a stream whose response already got one straight to the client (e.g. two "
                "send_local_response calls in on_response_headers, or at the end of on_response_body): Envoy 1.40 "
                "runs on_log twice and crashes with SIGSEGV",
                self.vm.logs,
            )
        if self.reset or self.ended:
            return
        if self._in_encode:
            self._encode_aborted = True
        self.details = details
        reply = local_reply.build(code, body, headers, grpc_status, is_grpc=self.is_grpc, is_head=self.is_head,
                                  details=details)  # fmt: skip
        if self.http1 and (code == 400 or not self.decoding.complete):
            # Envoy's HTTP/1 connection manager will not wait for the rest of the request, and does not
            # keep a connection after a 400.
            self.close_connection = True
        self._decode_aborted = True  # the request goes no further once a reply is on its way
        if not self.response_started:
            self.local_reply = reply
            self.reply_generation += 1
            self._replying = True
            try:
                self.encode_headers(reply.headers, reply.body is None)
                if reply.body is not None:
                    self.encode_data(reply.body, True)
            finally:
                self._replying = False
        elif not self.response_headers_sent:
            # A response started (and is held by the filter): the reply goes straight to the client.
            self.direct_replies += 1
            self._reply_to_client(reply)
        else:
            self.reset_stream()

    def _reply_to_client(self, reply: local_reply.LocalReply) -> None:
        """A local reply past the encoder filters: the response so far is dropped."""
        self.local_reply = reply
        side = self.encoding
        side.state, side.buffered, side.headers = CONTINUING, None, reply.headers
        self.response_headers_sent = True
        side.headers_passed = side.passed_end = True
        self.downstream.headers(reply.headers, reply.body is None)
        if reply.body is not None:
            self.downstream.data(reply.body, True)
        self._maybe_end()

    def reset_stream(self) -> None:
        if self.reset or self.ended:
            return
        self.reset = True
        self.end()

    def _maybe_end(self) -> None:
        """HTTP/1: the stream ends once the whole response went out."""
        if self.encoding.passed_end and not self.ended:
            self.end()

    def end(self) -> None:
        """Stream teardown, in Envoy's order: the access log first, then the filter is destroyed."""
        if self.ended:
            return
        self.ended = True
        if self.filter is not None:
            self.filter.log()
            self.filter.destroy()

    def filter_state(self) -> dict[bytes, bytes]:
        """The stream's filter state (``wasm.<path>`` entries the filter set)."""
        return self.filter.filter_state if self.filter is not None else {}

    def log_maps(self) -> dict[int, HeaderMap | None]:
        return {0: self.decoding.headers, 2: self.encoding.headers, 3: self.encoding.trailers}

    def attributes(self, request_visible: bool) -> dict[str, Any]:
        return self._attributes(request_visible) if self._attributes is not None else {}
