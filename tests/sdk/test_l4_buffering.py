"""An L4 filter that returns PAUSE from a data callback: Envoy keeps the bytes in the connection's
buffer, and the next call sees everything received so far (docs/concepts.md). Real Envoy 1.40 and
the local host (both modes)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxywasm_build.envoy import Envoy, WasmPlugin, tcp_bootstrap
from proxywasm_host import Host

LINE = """
import proxywasm
from proxywasm import Action, PluginContext, StreamContext, log


class Line(StreamContext):
    # Holds the client's bytes until a whole line arrived (e.g. a preamble split over reads).
    def on_downstream_data(self, data, end_of_stream):
        seen = data.read()
        log.info(f"down len={len(seen)} {seen!r}")
        return Action.CONTINUE if b"\\n" in seen else Action.PAUSE

    def on_upstream_data(self, data, end_of_stream):
        seen = data.read()
        log.info(f"up len={len(seen)} {seen!r} end={end_of_stream}")
        return Action.CONTINUE if b"\\n" in seen or end_of_stream else Action.PAUSE


@proxywasm.register
class Plugin(PluginContext):
    stream_context = Line
"""

EXPECTED = [
    "down len=2 b'ab'", "down len=4 b'abcd'", "down len=7 b'abcdef\\n'",  # the client's three writes
    "up len=2 b'xy' end=False", "up len=4 b'xyz\\n' end=False",  # the upstream's two
]  # fmt: skip


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(LINE)


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_a_paused_direction_accumulates(load_filter: Callable[..., Host], mode: str) -> None:
    host = load_filter(LINE, mode)
    conn = host.connection()
    for chunk in (b"ab", b"cd", b"ef\n"):
        conn.downstream_data(chunk)
    for chunk in (b"xy", b"z\n"):
        conn.upstream_data(chunk)
    assert [m for m in host.log_messages() if m.startswith(("down", "up"))] == EXPECTED
    assert (bytes(conn.upstream_sent), bytes(conn.downstream_sent)) == (b"abcdef\n", b"xyz\n")


class _SlowReply(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while b"\n" not in data:
            data += self.request.recv(1024)
        self.server.seen = data  # type: ignore[attr-defined]
        for chunk in (b"xy", b"z\n"):
            self.request.sendall(chunk)
            time.sleep(0.3)


@pytest.fixture
def upstream() -> Iterator[socketserver.TCPServer]:
    server = socketserver.TCPServer(("127.0.0.1", 0), _SlowReply)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_envoy_a_paused_direction_accumulates(wasm: Path, upstream: socketserver.TCPServer) -> None:
    config = tcp_bootstrap(upstream_port=upstream.server_address[1], plugins=[WasmPlugin(wasm, name="line")])
    with Envoy(config) as envoy, socket.create_connection(("127.0.0.1", envoy.port()), timeout=10) as sock:
        for chunk in (b"ab", b"cd", b"ef\n"):
            sock.sendall(chunk)
            time.sleep(0.3)  # separate reads in Envoy
        received = b""
        while b"\n" not in received:
            received += sock.recv(1024)
        time.sleep(0.3)
        messages = (line.message.split(": ", 1)[-1] for line in envoy.log_lines())
        assert [m for m in messages if m.startswith(("down", "up"))] == EXPECTED
        assert upstream.seen == b"abcdef\n"  # type: ignore[attr-defined]
        assert received == b"xyz\n"
