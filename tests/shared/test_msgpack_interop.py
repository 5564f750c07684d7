"""Typed shared-data values (``shared_data.set_value``/``get_value``) are MessagePack that other
programs read and write: what the SDK writes decodes with the ``msgpack`` library (PyPI), and what
the library writes decodes in the SDK. In the local host (written with ``host.set_shared_data``)
and in real Envoy (bytes carried in and out as hex)."""

from __future__ import annotations

import ast
import http.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

VALUE: dict[str, Any] = {
    "count": 3,
    "negative": -(2**40),
    "largest": 2**64 - 1,
    "smallest": -(2**63),
    "ratio": 3.25,
    "name": "ünïcode ✓",
    "raw": b"\x00\xff\x80",
    "list": [None, True, False, [1.5, "x", -1]],
    "nested": {"a": {"b": [], "c": {}}},
    "long": "x" * 300,  # str 16
    "blob": bytes(range(256)) * 2,  # bin 16
    "many": list(range(-40, 40, 5)),  # array 16
    "wide": {f"k{i}": i for i in range(17)},  # map 16
}

FILTER = f"""
import proxywasm
from proxywasm import Action, HttpContext, shared_data

VALUE = {VALUE!r}


@proxywasm.register
class Typed(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        op = headers.get("x-op")
        if op == "write":
            shared_data.set_value("from-sdk", VALUE)
            self.send_response(200, shared_data.get("from-sdk")[0].hex())
        elif op == "read":
            raw = headers.get("x-raw")
            if raw is not None:  # Envoy: the msgpack bytes come in a header
                shared_data.set("from-library", bytes.fromhex(raw))
            value, cas = shared_data.get_value("from-library")
            self.send_response(200, repr(value))
        return Action.PAUSE
"""


def library_bytes() -> bytes:
    return bytes(msgpack.packb(VALUE, use_bin_type=True))


def decoded(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


@pytest.fixture(scope="module")
def module(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


def test_in_the_host(module: Path) -> None:
    host = Host.load(module)
    written = host.request("GET", "/", headers=[("x-op", "write")])
    assert written.status == 200
    assert decoded(host.shared_data[b"from-sdk"]) == VALUE  # the SDK's bytes, read by the library
    assert bytes.fromhex(written.body.decode()) == host.shared_data[b"from-sdk"]

    host.set_shared_data(b"from-library", library_bytes())
    read = host.request("GET", "/", headers=[("x-op", "read")])
    assert read.status == 200
    assert ast.literal_eval(read.body.decode()) == VALUE  # the library's bytes, read by the SDK


def test_in_envoy(module: Path) -> None:
    assert len(library_bytes().hex()) < 60 * 1024  # Envoy's default limit for request headers is 60 KiB
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(module, name="typed")])
        with Envoy(config) as envoy:

            def request(headers: dict[str, str]) -> tuple[int, str]:
                conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
                try:
                    conn.request("GET", "/", headers=headers)
                    response = conn.getresponse()
                    return response.status, response.read().decode()
                finally:
                    conn.close()

            status, body = request({"x-op": "write"})
            assert status == 200
            assert decoded(bytes.fromhex(body)) == VALUE
            status, body = request({"x-op": "read", "x-raw": library_bytes().hex()})
            assert status == 200
            assert ast.literal_eval(body) == VALUE
