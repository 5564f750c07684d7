"""Envoy's Wasm HTTP filter for one stream (``Context`` in Envoy's ``wasm/context.cc`` with
proxy-wasm-cpp-host's ``ContextBase``): which header maps and body buffers host calls see and when,
how a callback's return value becomes a filter status, and the failure policy of a failed VM.

Visibility rules (Envoy 1.40):

* Request (response) headers are visible from their callback until the filter lets them go: a
  ``CONTINUE`` from that callback, or ``proxy_continue_stream`` (which clears every request-side
  pointer, whichever direction it continues).
* A body callback sees the data frame, or, after the filter answered PAUSE (StopIterationAndBuffer),
  everything buffered so far; trailers may be added from the end-of-stream body callback.
* In the access-log phase (``proxy_on_log``) the final request and response headers are readable
  (request trailers are not); nothing is writable.
* A PAUSE (StopIteration) from a headers callback stops everything (StopAllIterationAndWatermark)
  unless the plugin allows ``allow_on_headers_stop_iteration``; a callback that sent a local reply
  always stops.
* Once the VM failed: FAIL_OPEN streams skip the filter; otherwise the stream gets one 503 local
  reply (``wasm_fail_stream``) and the filter is not called again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxywasm.abi import BufferType, MapType, StreamType

from ..errors import hide_host_frames
from .headers import HeaderMap

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .contexts import Context
    from .filter_manager import FilterManager
    from .vm import Vm

# Envoy's filter statuses (proxy-wasm's FilterHeadersStatus / FilterDataStatus / FilterTrailersStatus).
CONTINUE = 0
STOP_ITERATION = 1
STOP_ALL_AND_BUFFER = 3
STOP_ALL_AND_WATERMARK = 4
DATA_STOP_AND_BUFFER = 1
DATA_STOP_AND_WATERMARK = 2
DATA_STOP_NO_BUFFER = 3


class HttpFilter:
    """The Wasm filter's side of one HTTP stream, as Envoy's ``Context`` holds it."""

    def __init__(self, vm: Vm, root: Context, manager: FilterManager) -> None:
        self.vm = vm
        self.manager = manager
        self.ctx = vm.new_stream_context(root, "http", self)
        plugin = root.plugin
        # cpp-host's CHECK_FAIL reads PluginBase::fail_open_, which Envoy takes from the deprecated
        # ``fail_open`` field, not from ``failure_policy``: the stream that sees the VM fail gets the
        # 503 whatever the policy (FAIL_OPEN skips the filter only for streams created afterwards).
        self.fail_open = False
        self.allow_stop_iteration = plugin.allow_on_headers_stop_iteration if plugin is not None else False
        # What Envoy's Context points at right now (None: not available to host calls).
        self.request_headers: HeaderMap | None = None
        self.request_body: bytearray | None = None
        self.request_trailers: HeaderMap | None = None
        self.response_headers: HeaderMap | None = None
        self.response_body: bytearray | None = None
        self.response_trailers: HeaderMap | None = None
        self.end_of_stream = False
        self.buffering_request_body = False
        self.buffering_response_body = False
        self.access_log_phase = False
        self.failure_local_reply_sent = False
        self.stream_failed = False
        self.destroyed = False
        self.filter_state: dict[bytes, bytes] = {}
        # The callback running right now and the last one that stopped iteration (for messages).
        self.running: str | None = None
        self.stopped_in: dict[StreamType, str] = {}

    # -- calling the VM under cpp-host's rules ------------------------------------------------------
    def _failed(self, if_open: int, if_closed: int) -> int:
        """cpp-host's CHECK_FAIL once the VM has failed: the status to return."""
        if self.fail_open:
            return if_open
        if not self.stream_failed:
            self.stream_failed = True
            self.fail_stream()
        return if_closed

    def fail_stream(self) -> None:
        """Envoy's ``failStream``: one bare 503 local reply, sent at once."""
        if not self.failure_local_reply_sent:
            self.failure_local_reply_sent = True
            self.manager.send_local_reply(503, b"", [], 14, "wasm_fail_stream")

    def _call(self, name: str, if_open: int, if_closed: int, *args: int) -> tuple[int, bool]:
        """Returns (raw result, whether the callback asked to stop via a local reply)."""
        vm = self.vm
        if vm.failed:
            return self._failed(if_open, if_closed), False
        self.running = name
        try:
            raw = vm.call(name, self.ctx, self.ctx.id, *args)
        finally:
            self.running = None
        if vm.failed:
            return self._failed(if_open, if_closed), False
        return (raw if raw is not None else CONTINUE), vm.last_call_stopped

    def _headers_status(self, raw: int, stopped: bool) -> int:
        """cpp-host ``convertVmCallResultToFilterHeadersStatus``."""
        if stopped or raw > STOP_ALL_AND_WATERMARK:
            return STOP_ALL_AND_WATERMARK
        if raw == STOP_ITERATION and not self.allow_stop_iteration:
            return STOP_ALL_AND_WATERMARK
        return CONTINUE if raw == 2 else raw  # ContinueAndEndStream maps to Continue in Envoy

    # -- decoding (request) -----------------------------------------------------------------------------
    def decode_headers(self, headers: HeaderMap, end_stream: bool) -> int:
        self.vm.create_in_vm(self.ctx)
        self.request_headers = headers
        self.end_of_stream = end_stream
        raw, stopped = self._call("proxy_on_request_headers", CONTINUE, STOP_ALL_AND_WATERMARK, len(headers),
                                  int(end_stream))  # fmt: skip
        status = self._headers_status(raw, stopped)
        if status == CONTINUE:
            self.request_headers = None
        else:
            self.stopped_in[StreamType.REQUEST] = "on_request_headers"
        return status

    def decode_data(self, data: bytearray, end_stream: bool) -> int:
        if not self.ctx.created_in_vm:
            return CONTINUE
        if self.buffering_request_body:
            self.manager.add_decoded_data(data)
            if self.destroyed:  # adding it exceeded the buffer limit: the stream got a 413
                return DATA_STOP_AND_BUFFER
        self.request_body = data
        self.end_of_stream = end_stream
        size = len(self.body_buffer(BufferType.HTTP_REQUEST_BODY) or b"")
        raw, stopped = self._call("proxy_on_request_body", CONTINUE, DATA_STOP_NO_BUFFER, size, int(end_stream))
        status = DATA_STOP_NO_BUFFER if (stopped or raw > DATA_STOP_NO_BUFFER) else raw
        self.buffering_request_body = False
        if status == CONTINUE:
            self.request_body = None
        else:
            self.stopped_in[StreamType.REQUEST] = "on_request_body"
            if status == DATA_STOP_AND_BUFFER:
                self.buffering_request_body = True
        return status

    def decode_trailers(self, trailers: HeaderMap) -> int:
        if not self.ctx.created_in_vm:
            return CONTINUE
        self.request_trailers = trailers
        raw, stopped = self._call("proxy_on_request_trailers", CONTINUE, STOP_ITERATION, len(trailers))
        status = STOP_ITERATION if (stopped or raw > STOP_ITERATION) else raw
        if status == CONTINUE:
            self.request_trailers = None
        else:
            self.stopped_in[StreamType.REQUEST] = "on_request_trailers"
        return status

    # -- encoding (response) ----------------------------------------------------------------------------
    def _skip_encoding(self) -> bool:
        return not self.ctx.created_in_vm or self.failure_local_reply_sent

    def encode_headers(self, headers: HeaderMap, end_stream: bool) -> int:
        if self._skip_encoding():
            return CONTINUE
        self.response_headers = headers
        self.end_of_stream = end_stream
        raw, stopped = self._call("proxy_on_response_headers", CONTINUE, STOP_ALL_AND_WATERMARK, len(headers),
                                  int(end_stream))  # fmt: skip
        status = self._headers_status(raw, stopped)
        if status == CONTINUE:
            self.response_headers = None
        else:
            self.stopped_in[StreamType.RESPONSE] = "on_response_headers"
        return status

    def encode_data(self, data: bytearray, end_stream: bool) -> int:
        if self._skip_encoding():
            return CONTINUE
        if self.buffering_response_body:
            self.manager.add_encoded_data(data)
            if self.destroyed:
                return DATA_STOP_AND_BUFFER
        self.response_body = data
        self.end_of_stream = end_stream
        size = len(self.body_buffer(BufferType.HTTP_RESPONSE_BODY) or b"")
        raw, stopped = self._call("proxy_on_response_body", CONTINUE, DATA_STOP_NO_BUFFER, size, int(end_stream))
        status = DATA_STOP_NO_BUFFER if (stopped or raw > DATA_STOP_NO_BUFFER) else raw
        self.buffering_response_body = False
        if status == CONTINUE:
            self.response_body = None
        else:
            self.stopped_in[StreamType.RESPONSE] = "on_response_body"
            if status == DATA_STOP_AND_BUFFER:
                self.buffering_response_body = True
        return status

    def encode_trailers(self, trailers: HeaderMap) -> int:
        if self._skip_encoding():
            return CONTINUE
        self.response_trailers = trailers
        raw, stopped = self._call("proxy_on_response_trailers", CONTINUE, STOP_ITERATION, len(trailers))
        status = STOP_ITERATION if (stopped or raw > STOP_ITERATION) else raw
        if status == CONTINUE:
            self.response_trailers = None
        else:
            self.stopped_in[StreamType.RESPONSE] = "on_response_trailers"
        return status

    # -- end of stream ----------------------------------------------------------------------------------
    def log(self) -> None:
        """The access-log phase: ``proxy_on_log`` (creating the context if no callback ran)."""
        self.vm.create_in_vm(self.ctx)
        self.access_log_phase = True
        try:
            if not self.vm.failed:
                self.vm.call("proxy_on_log", self.ctx, self.ctx.id)
        finally:
            self.access_log_phase = False

    def destroy(self) -> None:
        """``onDestroy``: ``proxy_on_done`` then ``proxy_on_delete``."""
        if self.destroyed:
            return
        self.destroyed = True
        if self.ctx.created_in_vm and not self.vm.failed:
            self.vm.call("proxy_on_done", self.ctx, self.ctx.id)
        self.vm.delete(self.ctx)

    # -- what host calls see ------------------------------------------------------------------------------
    def header_map(self, map_type: int, *, mutable: bool) -> HeaderMap | None:
        """Envoy's ``getMap`` (``mutable``) / ``getConstMap`` for the four stream maps."""
        if self.access_log_phase and not mutable:
            log = self.manager.log_maps()
            return log.get(map_type)
        if map_type == MapType.HTTP_REQUEST_HEADERS:
            return self.request_headers
        if map_type == MapType.HTTP_RESPONSE_HEADERS:
            return self.response_headers
        if map_type == MapType.HTTP_REQUEST_TRAILERS:
            if mutable and self.request_trailers is None and self.request_body is not None and self.end_of_stream:
                self.request_trailers = self.manager.add_decoded_trailers()
            return self.request_trailers
        if map_type == MapType.HTTP_RESPONSE_TRAILERS:
            if mutable and self.response_trailers is None and self.response_body is not None and self.end_of_stream:
                self.response_trailers = self.manager.add_encoded_trailers()
            return self.response_trailers
        return None

    def body_buffer(self, buf_type: int) -> bytearray | None:
        """The body a callback sees: everything buffered while the filter buffers, else the frame."""
        if buf_type == BufferType.HTTP_REQUEST_BODY:
            if self.buffering_request_body:
                return self.manager.buffered(StreamType.REQUEST)
            return self.request_body
        if buf_type == BufferType.HTTP_RESPONSE_BODY:
            if self.buffering_response_body:
                return self.manager.buffered(StreamType.RESPONSE)
            return self.response_body
        return None

    mutable_body_buffer = body_buffer

    def continue_stream(self, side: StreamType) -> None:
        """``proxy_continue_stream``: the continue runs once the call returns; the request-side
        pointers are dropped at once (Envoy clears them whichever direction continues)."""
        if side == StreamType.REQUEST:
            self.vm.after_call(self.manager.continue_decoding)
        elif side == StreamType.RESPONSE:
            self.vm.after_call(self.manager.continue_encoding)
        else:
            return  # no network filter callbacks on an HTTP stream
        self.request_headers = None
        self.request_body = None
        self.request_trailers = None

    def close_stream(self, side: StreamType) -> None:
        """``proxy_close_stream``: the stream is reset once the call returns."""
        if side in (StreamType.REQUEST, StreamType.RESPONSE):
            self.manager.set_details_if_unset("wasm_close_stream")
            self.vm.after_call(self.manager.reset_stream)

    def send_local_response(self, code: int, body: bytes, headers: list[tuple[bytes, bytes]], grpc_status: int,
                            details: str) -> None:  # fmt: skip
        manager = self.manager
        asked_in = manager.reply_generation
        self.vm.after_call(
            lambda: manager.send_local_reply(code, body, headers, grpc_status, details, asked_in=asked_in)
        )

    def attributes(self) -> dict[str, Any]:
        return self.manager.attributes(request_visible=self.request_headers is not None or self.access_log_phase)

    def __repr__(self) -> str:
        return f"HttpFilter(context {self.ctx.id})"
