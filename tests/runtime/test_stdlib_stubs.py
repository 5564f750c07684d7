"""``socket`` (and so ``http.client``, ``urllib.request``, ``email.utils``, which pure-Python packages
import without opening a socket) imports inside Envoy: the runtime carries pure-Python stand-ins for
the C modules ``_socket`` and ``select`` (sdk/runtime/stdlib_stubs). Using a socket raises OSError
saying a filter talks to other services through Envoy. The module in the local host (Wasm) and in
real Envoy; natively the test process's real socket module is used (see native/guest.py)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

FILTER = """
import email.utils
import http.client
import socket
import urllib.parse
import urllib.request

import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class UsesNetworkingModules(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-parsed"] = email.utils.parseaddr("Ops <ops@example.com>")[1]
        headers["x-status"] = http.client.responses[418]
        headers["x-quoted"] = urllib.parse.quote("a b")
        headers["x-inet"] = socket.inet_ntoa(socket.inet_aton("10.0.0.1")) + f" {socket.htons(0x1234):#x}"
        try:
            socket.create_connection(("127.0.0.1", 9))
        except OSError as err:
            headers["x-socket"] = str(err)
"""

EXPECTED = {
    "x-parsed": "ops@example.com",
    "x-status": "I'm a Teapot",
    "x-quoted": "a%20b",
    "x-inet": "10.0.0.1 0x3412",
    "x-socket": "[Errno 58] no sockets inside Envoy: a filter talks to other services through Envoy's clusters "
    "(self.http_call, self.grpc_call)",
}


def _seen(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers if k.lower() in EXPECTED}


def test_in_the_host(build_filter: Callable[[str], Path]) -> None:
    response = Host.load(build_filter(FILTER)).request("GET", "/")
    assert _seen(response.headers) == EXPECTED


def test_in_envoy(build_filter: Callable[[str], Path]) -> None:
    plugin = WasmPlugin(build_filter(FILTER), name="stubs")
    with UpstreamServer() as upstream, Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
        with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
            assert _seen(list(response.headers.items())) == EXPECTED
