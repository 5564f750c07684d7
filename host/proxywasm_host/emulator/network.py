"""An L4 connection through one Wasm network filter, as Envoy's network filter manager drives it
(``Context::onNewConnection``/``onData``/``onWrite``/``onEvent`` in Envoy's wasm ``context.cc``).

Data callbacks see the bytes received so far and not passed on: CONTINUE passes them on, PAUSE
keeps them in the connection's buffer, where the next data is appended (the next callback sees all
of it: checked in Envoy 1.40 by tests/sdk/test_l4_buffering.py), or until
``proxy_continue_stream(DOWNSTREAM)``. Envoy reports the upstream close when it sees end of stream
on the upstream data path; the context is done, logged and deleted once the downstream closed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxywasm.abi import Action, BufferType, PeerType, StreamType

from ..errors import hide_host_frames
from .headers import HeaderMap

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .contexts import Context
    from .vm import Vm


class Connection:
    """One downstream connection through the plugin's network filter. Created by :meth:`Host.connection`."""

    def __init__(self, vm: Vm, root: Context, *, source: str = "127.0.0.1:54321",
                 destination: str = "127.0.0.1:10000", skip_filter: bool = False) -> None:  # fmt: skip
        self._vm = vm
        self._skip = skip_filter  # FAIL_OPEN with a failed VM: Envoy leaves the filter out
        self.ctx = vm.new_stream_context(root, "tcp", self)
        self.source, self.destination = source, destination
        self.upstream_sent = bytearray()  # data that went on to the upstream
        self.downstream_sent = bytearray()  # data that went back to the client
        self.closed: str | None = None  # why the filter (or a failure) closed the connection
        self.downstream_closed = False
        self.upstream_closed = False
        self.paused = False
        self.access_log_phase = False
        self.filter_state: dict[bytes, bytes] = {}
        self._buffers: dict[int, bytearray | None] = {}
        self._finished = False

    @property
    def context_id(self) -> int:
        return self.ctx.id

    def _status(self, raw: int | None) -> Action:
        if self._vm.failed:
            self.closed = self.closed or "wasm_fail_stream"
            return Action.PAUSE
        return Action.CONTINUE if raw in (None, 0) else Action.PAUSE

    def new_connection(self) -> Action:
        if self._skip:
            return Action.CONTINUE
        self._vm.create_in_vm(self.ctx)
        return self._status(self._vm.call("proxy_on_new_connection", self.ctx, self.ctx.id))

    def _data(self, which: BufferType, data: bytes | str, eos: bool) -> Action:
        buf = bytearray(data.encode() if isinstance(data, str) else data)
        if self._skip:
            (self.upstream_sent if which == BufferType.DOWNSTREAM_DATA else self.downstream_sent).extend(buf)
            return Action.CONTINUE
        if not self.ctx.created_in_vm:
            self.new_connection()
        held = self._buffers.get(which)
        if held is not None:  # a PAUSE kept the earlier bytes: the new ones follow them
            held.extend(buf)
            buf = held
        self._buffers[which] = buf
        name = "proxy_on_downstream_data" if which == BufferType.DOWNSTREAM_DATA else "proxy_on_upstream_data"
        action = self._status(self._vm.call(name, self.ctx, self.ctx.id, len(buf), int(eos)))
        if action == Action.CONTINUE:
            (self.upstream_sent if which == BufferType.DOWNSTREAM_DATA else self.downstream_sent).extend(buf)
            self._buffers[which] = None
        else:
            self.paused = True
        return action

    def downstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action:
        """Data from the client (``proxy_on_downstream_data``)."""
        return self._data(BufferType.DOWNSTREAM_DATA, data, end_of_stream)

    def upstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action:
        """Data from the upstream (``proxy_on_upstream_data``); its end closes the upstream side."""
        action = self._data(BufferType.UPSTREAM_DATA, data, end_of_stream)
        if end_of_stream:
            self.close_upstream(PeerType.UNKNOWN)
        return action

    def close_downstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        if self.ctx.created_in_vm and not self._vm.failed:
            self._vm.call("proxy_on_downstream_connection_close", self.ctx, self.ctx.id, int(peer))
        self.downstream_closed = True
        self._close_tcp()

    def close_upstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        if self.ctx.created_in_vm and not self._vm.failed:
            self._vm.call("proxy_on_upstream_connection_close", self.ctx, self.ctx.id, int(peer))
        self.upstream_closed = True
        if self.downstream_closed:
            self._close_tcp()

    def _close_tcp(self) -> None:
        """Envoy's ``onCloseTCP``: done, log, delete."""
        if self._finished or not self.ctx.created_in_vm:
            return
        self._finished = True
        vm = self._vm
        if not vm.failed:
            vm.call("proxy_on_done", self.ctx, self.ctx.id)
            vm.call("proxy_on_log", self.ctx, self.ctx.id)
        vm.delete(self.ctx)

    # -- what host calls see -------------------------------------------------------------------------------
    def header_map(self, map_type: int, *, mutable: bool) -> HeaderMap | None:
        return None

    def body_buffer(self, buf_type: int) -> bytearray | None:
        return self._buffers.get(buf_type)

    mutable_body_buffer = body_buffer

    def continue_stream(self, side: StreamType) -> None:
        if side == StreamType.DOWNSTREAM:
            self._vm.after_call(self._resume_downstream)

    def _resume_downstream(self) -> None:
        self.paused = False
        buf = self._buffers.get(BufferType.DOWNSTREAM_DATA)
        if buf is not None:
            self.upstream_sent.extend(buf)
            self._buffers[BufferType.DOWNSTREAM_DATA] = None

    def close_stream(self, side: StreamType) -> None:
        reason = "wasm_downstream_close" if side == StreamType.DOWNSTREAM else "wasm_upstream_close"
        if side in (StreamType.DOWNSTREAM, StreamType.UPSTREAM):
            self._vm.after_call(lambda: setattr(self, "closed", reason))

    def attributes(self) -> dict[str, Any]:
        src_port = self.source.rpartition(":")[2]
        dst_port = self.destination.rpartition(":")[2]
        return {
            "source": {"address": self.source, "port": int(src_port or 0)},
            "destination": {"address": self.destination, "port": int(dst_port or 0)},
            "connection": {"id": 1, "mtls": False, "requested_server_name": ""},
        }
