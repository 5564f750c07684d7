"""The proxywasm_build.envoy / upstream helpers themselves."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from envoy_support import fetch

from proxywasm_build import snapshot, wasm
from proxywasm_build.envoy import (
    LOG_FORMAT,
    Cluster,
    Envoy,
    EnvoyError,
    WasmPlugin,
    envoy_binary,
    free_port,
    http_bootstrap,
    parse_log,
    tcp_bootstrap,
)
from proxywasm_build.upstream import Response, UpstreamServer


def test_envoy_binary_from_wheel() -> None:
    path = envoy_binary()
    assert path.name == "envoy" and os.access(path, os.X_OK)


def test_http_bootstrap_shape(tmp_path: Path) -> None:
    wasm = tmp_path / "f.wasm"
    plugin = WasmPlugin(
        wasm,
        name="n",
        root_id="r",
        configuration=b"\x01\x02",
        environment_variables={"K": "V"},
        failure_policy="FAIL_OPEN",
    )
    extra = {"name": "envoy.filters.http.buffer", "typed_config": {}}
    config = http_bootstrap(upstream_port=1234, plugins=[plugin], http_filters=[extra], clusters=[Cluster("c", 99)])
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.buffer", "envoy.filters.http.wasm", "envoy.filters.http.router"]
    wasm_config = hcm["http_filters"][1]["typed_config"]["config"]
    assert wasm_config["configuration"] == {"@type": "type.googleapis.com/google.protobuf.BytesValue", "value": "AQI="}
    assert wasm_config["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm_config["vm_config"]["vm_id"] == "n"
    assert wasm_config["vm_config"]["code"]["local"]["filename"] == str(wasm.resolve())
    assert wasm_config["vm_config"]["environment_variables"] == {"key_values": {"K": "V"}}
    assert wasm_config["failure_policy"] == "FAIL_OPEN"
    clusters = config["static_resources"]["clusters"]
    assert [c["name"] for c in clusters] == ["upstream", "c"]
    json.dumps(config)  # must be plain JSON

    l4 = tcp_bootstrap(upstream_port=1, plugins=[plugin])
    filters = l4["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.network.wasm", "envoy.filters.network.tcp_proxy"]


def test_parse_log_folds_continuations() -> None:
    text = "[2026-01-01 00:00:00.000][12][info][wasm] first\nsecond line\n[2026-01-01 00:00:00.001][13][error][main] x"
    lines = parse_log(text)
    assert [(ln.thread, ln.level, ln.logger, ln.message) for ln in lines] == [
        (12, "info", "wasm", "first\nsecond line"),
        (13, "error", "main", "x"),
    ]
    assert "%t" in LOG_FORMAT


def test_plain_envoy_lifecycle_and_stats() -> None:
    with UpstreamServer() as upstream:
        envoy = Envoy(http_bootstrap(upstream_port=upstream.port), concurrency=2).start()
        try:
            assert envoy.running and envoy.admin_port and envoy.port() > 0
            assert fetch(envoy.port(), "/x").status == 200
            assert envoy.stats()["http.ingress_http.downstream_rq_completed"] >= 1
            assert envoy.stat("server.concurrency") == 2
            assert envoy.rss_bytes() > 10 * 1024 * 1024
            envoy.wait_for_log("starting main dispatch loop")  # the log file lags a little
            workdir = envoy.workdir
        finally:
            code = envoy.stop()
        assert code == 0
        assert not envoy.running
        assert workdir is not None and not workdir.exists()


def test_wasm_memory_rss_finds_one_linear_memory_per_vm(build_filter: Callable[[str], Path]) -> None:
    module = build_filter("import proxywasm\n@proxywasm.register\nclass F(proxywasm.HttpContext):\n    pass\n")
    memory_size = 65536 * next(m for m in wasm.parse_memories(_section(module, wasm.MEMORY)))[0]
    with UpstreamServer() as upstream:
        plain = Envoy(http_bootstrap(upstream_port=upstream.port)).start()
        try:
            assert plain.wasm_memory_rss() == []
        finally:
            plain.stop()
        plugin = WasmPlugin(module, name="m", root_id="m")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin]), concurrency=2) as envoy:
            assert fetch(envoy.port(), "/x").status == 200
            resident = envoy.wasm_memory_rss()
    assert len(resident) >= 3  # a VM on the main thread and one per worker
    assert all(0 < r <= memory_size for r in resident)
    # What a VM makes resident is what the snapshot's data fills, plus a few pages of stack.
    filled = snapshot.resident_bytes(wasm.parse_data(_section(module, wasm.DATA)))
    assert all(filled <= r <= filled + 16 * 4096 for r in resident), (filled, resident)


def _section(module: Path, section_id: int) -> bytes:
    return next(s.payload for s in wasm.parse_sections(module.read_bytes()) if s.id == section_id)


def test_bad_config_error_has_log_tail(tmp_path: Path) -> None:
    plugin = WasmPlugin(tmp_path / "missing.wasm", name="m")
    with UpstreamServer() as upstream:
        with pytest.raises(EnvoyError) as info:
            Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])).start()
    assert "exited with code" in str(info.value)
    assert "missing.wasm" in str(info.value)


def test_upstream_records_and_routes() -> None:
    routes = {"/fixed": Response(418, b"teapot", (("x-a", "1"),))}
    with UpstreamServer(routes=routes) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/echo?q=1", body=b"hi", headers={"X-Test": "v"})
        echoed = json.loads(conn.getresponse().read())
        assert echoed["method"] == "POST" and echoed["path"] == "/echo?q=1" and echoed["body"] == "hi"
        # Chunked request bodies are decoded (Envoy sends them when content-length is dropped).
        conn.putrequest("PUT", "/fixed")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        conn.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("x-a")) == (418, b"teapot", "1")
        conn.close()
        first, second = server.wait_for_requests(2)
        assert first.header("x-test") == "v" and first.body == b"hi"
        assert second.method == "PUT" and second.body == b"abcde"
        assert free_port() > 0
