"""Envoy's side of every proxy-wasm host function, over plain Python values.

Each method is named after the ABI function it implements and returns the status Envoy returns
(with the values it writes back). Nothing here touches guest memory: the Wasm adapter
(``proxywasm_host.wasm.imports``) reads arguments from and writes results to linear memory around
these methods, and native mode's ``_proxywasm`` calls them directly. Statuses follow Envoy 1.40's
``source/extensions/common/wasm/context.cc`` and proxy-wasm-cpp-host's ``src/exports.cc``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import BufferType, LogLevel, MapType, MetricType, Status, StreamType

from ..errors import hide_host_frames
from . import attributes
from .callouts import start_grpc, start_http_call
from .headers import HeaderMap
from .http_filter import HttpFilter

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .contexts import Context
    from .vm import Vm

Pairs = list[tuple[bytes, bytes]]

OK, NOT_FOUND, BAD_ARGUMENT, UNIMPLEMENTED = int(Status.OK), int(Status.NOT_FOUND), int(Status.BAD_ARGUMENT), 12
_I64_MASK = (1 << 64) - 1
_METRIC_TYPE_MASK = 0x3


class HostFunctions:
    """The host functions of one VM; calls act on ``vm.ctx()`` (the current or effective context)."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    # -- logging, time, lifecycle ---------------------------------------------------------------------
    def proxy_log(self, level: int, message: bytes) -> int:
        if level > LogLevel.CRITICAL:
            return BAD_ARGUMENT
        self.vm.log(level, message.decode("utf-8", "replace"))
        return OK

    def proxy_get_log_level(self) -> tuple[int, int]:
        return OK, self.vm.envoy.log_level

    def proxy_get_current_time_nanoseconds(self) -> tuple[int, int]:
        return OK, self.vm.envoy.time_ns + self.vm.cpu_ns()

    def proxy_set_tick_period_milliseconds(self, period_ms: int) -> int:
        vm = self.vm
        vm.set_tick_period(vm.root_of(vm.ctx()), period_ms)
        return OK

    def proxy_set_effective_context(self, context_id: int) -> int:
        vm = self.vm
        if context_id not in vm.contexts:
            return BAD_ARGUMENT
        vm.effective_id = context_id
        return OK

    def proxy_done(self) -> int:
        vm = self.vm
        return OK if vm.done(vm.ctx()) else NOT_FOUND

    def proxy_get_status(self) -> tuple[int, int, bytes]:
        vm = self.vm
        root = vm.root_of(vm.ctx())
        return OK, root.status_code, root.status_message

    def proxy_get_configuration(self) -> tuple[int, bytes]:
        """ABI 0.1.0: the plugin configuration during configure, else the VM configuration."""
        return OK, self.vm.configuration_in_scope()

    def proxy_call_foreign_function(self, name: bytes, argument: bytes) -> tuple[int, bytes]:
        func = self.vm.envoy.foreign_functions.get(name.decode("utf-8", "replace"))
        if func is None:
            return NOT_FOUND, b""
        out = func(argument)
        if isinstance(out, tuple):
            return int(out[0]), bytes(out[1])
        return OK, bytes(out)

    # -- buffers --------------------------------------------------------------------------------------
    def _buffer(self, ctx: Context, buf_type: int) -> bytes | bytearray | None:
        """Envoy's ``Context::getBuffer``: ``None`` where Envoy has no buffer at all."""
        vm = self.vm
        if buf_type == BufferType.VM_CONFIGURATION:
            return vm.vm_config
        if buf_type == BufferType.PLUGIN_CONFIGURATION:
            return vm.temp_plugin.configuration if vm.temp_plugin is not None else None
        if buf_type == BufferType.HTTP_CALL_RESPONSE_BODY:
            response = vm.root_of(ctx).callout_response
            return response[1] if response is not None else None
        if buf_type == BufferType.GRPC_RECEIVE_BUFFER:
            data = vm.root_of(ctx).grpc_receive.get(BufferType.GRPC_RECEIVE_BUFFER)
            return data if isinstance(data, bytes) else b""  # Envoy hands out an empty one
        if buf_type == BufferType.CALL_DATA:
            return ctx.call_data if ctx.call_data is not None else b""
        stream = ctx.stream
        if stream is not None:
            data = stream.body_buffer(buf_type)
            if data is not None:
                return data
        return b""  # Envoy: an empty buffer when no body is in flight

    def proxy_get_buffer_bytes(self, buf_type: int, start: int, length: int) -> tuple[int, bytes]:
        if buf_type > BufferType.CALL_DATA:
            return BAD_ARGUMENT, b""
        data = self._buffer(self.vm.ctx(), buf_type)
        if data is None:
            return NOT_FOUND, b""
        size = len(data)
        if start > size:
            length = 0
        elif start + length > size:
            length = size - start
        return OK, bytes(data[start : start + length]) if length else b""

    def proxy_get_buffer_status(self, buf_type: int) -> tuple[int, int, int]:
        if buf_type > BufferType.CALL_DATA:
            return BAD_ARGUMENT, 0, 0
        data = self._buffer(self.vm.ctx(), buf_type)
        if data is None:
            return NOT_FOUND, 0, 0
        return OK, len(data), 0

    def proxy_set_buffer_bytes(self, buf_type: int, start: int, length: int, data: bytes) -> int:
        if buf_type > BufferType.CALL_DATA:
            return BAD_ARGUMENT
        ctx = self.vm.ctx()
        if self._buffer(ctx, buf_type) is None:
            return NOT_FOUND
        target = ctx.stream.mutable_body_buffer(buf_type) if ctx.stream is not None else None
        if target is None:
            return BAD_ARGUMENT  # configurations, callout answers and absent bodies are read-only
        # Envoy's Buffer::copyFrom: replace a prefix, append at/after the end, nothing in between.
        if start == 0:
            del target[: min(length, len(target))]
            target[0:0] = data
            return OK
        if start >= len(target):
            target += data
            return OK
        return BAD_ARGUMENT

    # -- header maps ----------------------------------------------------------------------------------
    def _const_map(self, ctx: Context, map_type: int) -> HeaderMap | None:
        """Envoy's ``getConstMap``: the map a read sees, or ``None``."""
        if map_type <= MapType.HTTP_RESPONSE_TRAILERS:
            stream = ctx.stream
            return stream.header_map(map_type, mutable=False) if stream is not None else None
        root = self.vm.root_of(ctx)
        if map_type == MapType.HTTP_CALL_RESPONSE_HEADERS:
            return root.callout_response[0] if root.callout_response is not None else None
        if map_type == MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return root.callout_response[2] if root.callout_response is not None else None
        found = root.grpc_receive.get(map_type)
        return found if isinstance(found, HeaderMap) else None

    def _mutable_map(self, ctx: Context, map_type: int) -> HeaderMap | None:
        """Envoy's ``getMap``: only stream maps are writable (callout and gRPC maps are not)."""
        if map_type > MapType.HTTP_RESPONSE_TRAILERS or ctx.stream is None:
            return None
        return ctx.stream.header_map(map_type, mutable=True)

    def proxy_get_header_map_value(self, map_type: int, key: bytes) -> tuple[int, bytes]:
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return BAD_ARGUMENT, b""
        ctx = self.vm.ctx()
        hmap = self._const_map(ctx, map_type)
        legacy = self.vm.abi == "0_1_0"
        if hmap is None:
            if ctx.stream is not None and ctx.stream.access_log_phase:
                return (OK, b"") if legacy else (NOT_FOUND, b"")
            return BAD_ARGUMENT, b""
        value = hmap.get(key)
        if value is None:
            return (OK, b"") if legacy else (NOT_FOUND, b"")
        return OK, value

    def proxy_get_header_map_pairs(self, map_type: int) -> tuple[int, Pairs]:
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return BAD_ARGUMENT, []
        hmap = self._const_map(self.vm.ctx(), map_type)
        return OK, (hmap.pairs() if hmap is not None else [])

    def proxy_set_header_map_pairs(self, map_type: int, pairs: Pairs) -> int:
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return BAD_ARGUMENT
        hmap = self._mutable_map(self.vm.ctx(), map_type)
        if hmap is None:
            return BAD_ARGUMENT
        hmap.set_pairs(pairs)
        return OK

    def proxy_get_header_map_size(self, map_type: int) -> tuple[int, int]:
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return BAD_ARGUMENT, 0
        # Envoy uses the mutable lookup here, so callout/gRPC maps report BAD_ARGUMENT.
        hmap = self._mutable_map(self.vm.ctx(), map_type)
        if hmap is None:
            return BAD_ARGUMENT, 0
        return OK, hmap.byte_size()

    def proxy_add_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        hmap = self._writable(map_type)
        if hmap is None:
            return BAD_ARGUMENT
        hmap.add(key, value)
        return OK

    def proxy_replace_header_map_value(self, map_type: int, key: bytes, value: bytes) -> int:
        hmap = self._writable(map_type)
        if hmap is None:
            return BAD_ARGUMENT
        hmap.replace(key, value)
        return OK

    def proxy_remove_header_map_value(self, map_type: int, key: bytes) -> int:
        hmap = self._writable(map_type)
        if hmap is None:
            return BAD_ARGUMENT
        hmap.remove(key)
        return OK

    def _writable(self, map_type: int) -> HeaderMap | None:
        if map_type > MapType.HTTP_CALL_RESPONSE_TRAILERS:
            return None
        return self._mutable_map(self.vm.ctx(), map_type)

    # -- stream control -------------------------------------------------------------------------------
    def proxy_continue_stream(self, stream_type: int) -> int:
        if stream_type > StreamType.UPSTREAM:
            return BAD_ARGUMENT
        if stream_type == StreamType.UPSTREAM:
            return UNIMPLEMENTED
        stream = self.vm.ctx().stream
        if stream is not None:
            stream.continue_stream(StreamType(stream_type))
        return OK

    def proxy_close_stream(self, stream_type: int) -> int:
        if stream_type > StreamType.UPSTREAM:
            return BAD_ARGUMENT
        stream = self.vm.ctx().stream
        if stream is not None:
            stream.close_stream(StreamType(stream_type))
        return OK

    def proxy_send_local_response(
        self, code: int, details: bytes, body: bytes, headers: Pairs, grpc_status: int
    ) -> int:
        vm = self.vm
        stream = vm.ctx().stream
        if isinstance(stream, HttpFilter):
            # Envoy replaces whitespace in details with underscores and sends once the call returns.
            clean = (b"_".join(details.split()) if details.strip() else details).decode("utf-8", "replace")
            stream.send_local_response(code, body, headers, grpc_status, clean)
        vm.stop_next_iteration = True
        return OK

    # -- callouts -------------------------------------------------------------------------------------
    def proxy_http_call(
        self, cluster: bytes, headers: Pairs, body: bytes, trailers: Pairs, timeout_ms: int
    ) -> tuple[int, int]:
        return start_http_call(self.vm, cluster.decode("utf-8", "replace"), headers, body, trailers, timeout_ms)

    def proxy_grpc_call(
        self, service: bytes, service_name: bytes, method: bytes, metadata: Pairs, message: bytes, timeout_ms: int
    ) -> tuple[int, int]:
        return start_grpc(self.vm, service, service_name, method, metadata, message, timeout_ms)

    def proxy_grpc_stream(self, service: bytes, service_name: bytes, method: bytes, metadata: Pairs) -> tuple[int, int]:
        return start_grpc(self.vm, service, service_name, method, metadata, None, 0)

    def proxy_grpc_send(self, token: int, message: bytes, end_stream: bool) -> int:
        if token & 3 != 2:
            return BAD_ARGUMENT
        callout = self.vm.grpc_callouts.get(token)
        if callout is None:
            return NOT_FOUND
        callout.sent.append(bytes(message))
        if end_stream:
            callout.local_closed = True
        return OK

    def _grpc_finish(self, token: int, *, cancel: bool) -> int:
        kind = token & 3
        if kind not in (1, 2):
            return BAD_ARGUMENT
        callouts = self.vm.grpc_callouts
        callout = callouts.get(token)
        if callout is None:
            return NOT_FOUND
        if kind == 1 or cancel or callout.remote_closed:
            callouts.pop(token, None)
            callout.done = True
            callout.cancel_timer()
        else:
            callout.local_closed = True
        return OK

    def proxy_grpc_cancel(self, token: int) -> int:
        return self._grpc_finish(token, cancel=True)

    def proxy_grpc_close(self, token: int) -> int:
        return self._grpc_finish(token, cancel=False)

    # -- shared data and queues -----------------------------------------------------------------------
    def proxy_get_shared_data(self, key: bytes) -> tuple[int, bytes, int]:
        entry = self.vm.envoy.get_shared(self.vm.vm_id, key)
        if entry is None:
            return NOT_FOUND, b"", 0
        return OK, entry[0], entry[1]

    def proxy_set_shared_data(self, key: bytes, value: bytes, cas: int) -> int:
        return int(self.vm.envoy.set_shared(self.vm.vm_id, key, value, cas))

    def proxy_register_shared_queue(self, name: bytes) -> tuple[int, int]:
        vm = self.vm
        # proxy_on_queue_ready goes to the root context even when a stream registers.
        return OK, vm.envoy.register_queue(vm, name, vm.root_of(vm.ctx()).id)

    def proxy_resolve_shared_queue(self, vm_id: bytes, name: bytes) -> tuple[int, int]:
        token = self.vm.envoy.resolve_queue(vm_id.decode("utf-8", "replace") or self.vm.vm_id, name)
        return (NOT_FOUND, 0) if token == 0 else (OK, token)

    def proxy_enqueue_shared_queue(self, token: int, data: bytes) -> int:
        return int(self.vm.envoy.enqueue(token, data))

    def proxy_dequeue_shared_queue(self, token: int) -> tuple[int, bytes]:
        status, data = self.vm.envoy.dequeue(token)
        return int(status), data

    # -- metrics --------------------------------------------------------------------------------------
    def proxy_define_metric(self, kind: int, name: bytes) -> tuple[int, int]:
        if kind > MetricType.HISTOGRAM:
            return BAD_ARGUMENT, 0
        vm = self.vm
        metric_type = MetricType(kind)
        metric_id = vm.next_metric_id(metric_type)
        text = name.decode("utf-8", "replace")
        vm.metric_names[metric_id] = text
        vm.envoy.define_metric(metric_type, text)
        return OK, metric_id

    def proxy_increment_metric(self, metric_id: int, offset: int) -> int:
        kind = metric_id & _METRIC_TYPE_MASK
        name = self.vm.metric_names.get(metric_id)
        envoy = self.vm.envoy
        if kind == MetricType.COUNTER:
            if name is None:
                return NOT_FOUND
            if offset <= 0:
                return BAD_ARGUMENT
            envoy.add_to_counter(name, offset)
            return OK
        if kind == MetricType.GAUGE:
            if name is None:
                return NOT_FOUND
            envoy.add_to_gauge(name, offset)
            return OK
        return BAD_ARGUMENT

    def proxy_record_metric(self, metric_id: int, value: int) -> int:
        kind = metric_id & _METRIC_TYPE_MASK
        name = self.vm.metric_names.get(metric_id)
        if name is None:
            return NOT_FOUND
        envoy = self.vm.envoy
        value &= _I64_MASK  # the ABI passes an unsigned 64-bit value
        if kind == MetricType.COUNTER:
            envoy.add_to_counter(name, value)
        elif kind == MetricType.GAUGE:
            envoy.gauges[name] = value
        else:
            envoy.histograms[name].append(value)
        return OK

    def proxy_get_metric(self, metric_id: int) -> tuple[int, int]:
        kind = metric_id & _METRIC_TYPE_MASK
        if kind not in (MetricType.COUNTER, MetricType.GAUGE):
            return BAD_ARGUMENT, 0
        name = self.vm.metric_names.get(metric_id)
        if name is None:
            return NOT_FOUND, 0
        envoy = self.vm.envoy
        return OK, envoy.counters[name] if kind == MetricType.COUNTER else envoy.gauges[name]

    # -- properties -----------------------------------------------------------------------------------
    def proxy_get_property(self, path: bytes) -> tuple[int, bytes]:
        status, value = attributes.lookup(self.vm, self.vm.ctx(), path)
        return int(status), value

    def proxy_set_property(self, path: bytes, value: bytes) -> int:
        return int(attributes.store(self.vm, self.vm.ctx(), path, value))
