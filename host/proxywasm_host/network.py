"""An L4 (network filter) connection through one Wasm filter, as Envoy's network filter manager does it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxywasm.abi import Action, BufferType, PeerType, StreamType

from .context import Context

if TYPE_CHECKING:
    from .host import Host


class Connection:
    def __init__(self, host: Host, *, source: str = "127.0.0.1:54321", destination: str = "127.0.0.1:10000") -> None:
        self.host = host
        self.vm = host.vm
        self.ctx: Context = self.vm.new_stream(host.root, "tcp", self)
        self.source, self.destination = source, destination
        self.upstream_sent = bytearray()  # data that went on to the upstream
        self.downstream_sent = bytearray()  # data that went back to the client
        self.closed: str | None = None  # set when the filter (or a failure) closed the connection
        self.downstream_closed = False
        self.upstream_closed = False
        self._finished = False
        self.paused = False

    def _status(self, raw: int | None) -> Action:
        if self.vm.failed and not self.host.fail_open:
            self.closed = self.closed or "wasm_fail_stream"
            return Action.PAUSE
        return Action.CONTINUE if raw in (None, 0) else Action.PAUSE

    def new_connection(self) -> Action:
        self.vm.create_in_vm(self.ctx)
        return self._status(self.vm.call("proxy_on_new_connection", self.ctx, self.ctx.id))

    def _data(self, which: BufferType, data: bytes | str, eos: bool) -> Action:
        if not self.ctx.created_in_vm:
            self.new_connection()
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        buf = bytearray(chunk)
        self.ctx.buffers[which] = buf
        name = "proxy_on_downstream_data" if which == BufferType.DOWNSTREAM_DATA else "proxy_on_upstream_data"
        action = self._status(self.vm.call(name, self.ctx, self.ctx.id, len(buf), int(eos)))
        if action == Action.CONTINUE:
            (self.upstream_sent if which == BufferType.DOWNSTREAM_DATA else self.downstream_sent).extend(buf)
            self.ctx.buffers[which] = None
        else:
            self.paused = True
        return action

    def downstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action:
        return self._data(BufferType.DOWNSTREAM_DATA, data, end_of_stream)

    def upstream_data(self, data: bytes | str, end_of_stream: bool = False) -> Action:
        action = self._data(BufferType.UPSTREAM_DATA, data, end_of_stream)
        if end_of_stream:
            # Envoy reports the upstream close when it sees end_stream on the write path.
            self.close_upstream(PeerType.UNKNOWN)
        return action

    def close_downstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        if self.ctx.created_in_vm and not self.vm.failed:
            self.vm.call("proxy_on_downstream_connection_close", self.ctx, self.ctx.id, int(peer))
        self.downstream_closed = True
        self._close_tcp()

    def close_upstream(self, peer: PeerType = PeerType.REMOTE) -> None:
        if self.ctx.created_in_vm and not self.vm.failed:
            self.vm.call("proxy_on_upstream_connection_close", self.ctx, self.ctx.id, int(peer))
        self.upstream_closed = True
        if self.downstream_closed:
            self._close_tcp()

    def _close_tcp(self) -> None:
        """Envoy's onCloseTCP: done, log, delete."""
        if self._finished or not self.ctx.created_in_vm:
            return
        self._finished = True
        if not self.vm.failed:
            self.vm.call("proxy_on_done", self.ctx, self.ctx.id)
            self.vm.call("proxy_on_log", self.ctx, self.ctx.id)
        self.vm.delete(self.ctx)

    # Effects requested by the filter.
    def resume(self, side: StreamType) -> None:
        if side == StreamType.DOWNSTREAM:
            self.paused = False
            buf = self.ctx.buffers.get(BufferType.DOWNSTREAM_DATA)
            if buf is not None:
                self.upstream_sent.extend(buf)
                self.ctx.buffers[BufferType.DOWNSTREAM_DATA] = None

    def close(self, side: StreamType) -> None:
        self.closed = "wasm_downstream_close" if side == StreamType.DOWNSTREAM else "wasm_upstream_close"

    def attributes(self) -> dict[str, Any]:
        src_host, _, src_port = self.source.rpartition(":")
        dst_host, _, dst_port = self.destination.rpartition(":")
        return {
            "source": {"address": self.source, "port": int(src_port or 0)},
            "destination": {"address": self.destination, "port": int(dst_port or 0)},
            "connection": {"id": 1, "mtls": False},
        }
