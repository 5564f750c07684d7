"""The L4 variant: envoy.filters.network.wasm before tcp_proxy."""

from __future__ import annotations

import socket
from pathlib import Path

from proxywasm_build.envoy import Envoy, WasmPlugin, tcp_bootstrap
from proxywasm_build.upstream import UpstreamServer

PREFIX = "wasm log p_net network vm_net: "


def test_network_filter_sees_bytes_both_ways(as_modules: dict[str, Path]) -> None:
    plugin = WasmPlugin(as_modules["network"], name="p_net", root_id="network", vm_id="vm_net")
    with UpstreamServer() as upstream:
        config = tcp_bootstrap(upstream_port=upstream.port, plugins=[plugin])
        with Envoy(config, component_log_levels={"wasm": "debug"}) as envoy:
            request = b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            with socket.create_connection(("127.0.0.1", envoy.port()), timeout=10) as sock:
                sock.sendall(request)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            response = b"".join(chunks)
            assert response.startswith(b"HTTP/1.0 200") or response.startswith(b"HTTP/1.1 200")
            assert [r.path for r in upstream.requests] == ["/tcp"]

            envoy.wait_for_log("tcp downstream close")
            messages = [
                ln.message.removeprefix(PREFIX)
                for ln in envoy.log_lines()
                if ln.logger == "wasm" and ln.message.startswith(PREFIX + "tcp ")
            ]
            assert messages[0] == "tcp new connection"
            assert messages[1] == f"tcp downstream bytes={len(request)} end=0 first=GET /tcp HTTP/1.1"
            upstream_bytes = [int(m.split("=")[1].split()[0]) for m in messages if "upstream bytes" in m]
            assert sum(upstream_bytes) == len(response)
            # Both directions report end of stream (with the last data or as an empty callback) and
            # both close callbacks run; their order and the downstream peer type depend on who
            # closed first (seen: upstream peer=0 "unknown", downstream peer=1 or 2).
            assert any(m.startswith("tcp downstream bytes=") and " end=1" in m for m in messages)
            assert any(m.startswith("tcp upstream bytes=") and m.endswith(" end=1") for m in messages)
            assert "tcp upstream close peer=0" in messages
            assert any(m in messages for m in ("tcp downstream close peer=1", "tcp downstream close peer=2"))

            # L4 contexts end with on_done, then on_log, then on_delete (HTTP: on_log first).
            ends = [
                ln.message.rsplit(": ", 1)[1]
                for ln in envoy.log_lines()
                if ln.message.startswith(PREFIX + "context id: 2: on")
            ]
            assert ends == ["onDone()", "onLog()", "onDelete()"]

            stats = envoy.stats()
            assert stats["wasmcustom.as_tcp_connections"] == 1
            assert stats["wasmcustom.as_tcp_downstream_bytes"] == len(request)
            assert stats["wasmcustom.as_tcp_upstream_bytes"] == len(response)
