"""gRPC calls and streams from a Python filter, through real Envoy, to a gRPC server on 127.0.0.1."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import proxywasm
from proxywasm import Action, GrpcStatus, HttpContext


class Collector:
    def __init__(self, ctx):
        self.ctx = ctx
        self.parts = []

    def on_initial_metadata(self, stream, metadata):
        self.parts.append("meta:" + metadata.get("x-server", "?"))

    def on_message(self, stream, data):
        self.parts.append(data.decode())

    def on_trailing_metadata(self, stream, metadata):
        pass

    def on_close(self, stream, status, message):
        self.parts.append(f"close:{int(status)}")
        self.ctx.send_response(200, "|".join(self.parts))


@proxywasm.register
class Grpc(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path.startswith("/unary/"):
            method = path.split("/")[2]
            self.grpc_call("grpc", "test.Echo", method, path.encode(), self.on_reply, timeout_ms=5000)
        elif path == "/stream":
            stream = self.grpc_stream("grpc", "test.Echo", "Chat", Collector(self))
            stream.send(b"one")
            stream.send(b"two", end_stream=True)
        else:
            return Action.CONTINUE
        return Action.PAUSE

    def on_reply(self, reply):
        if reply.ok:
            self.send_response(200, reply.data, [("x-grpc-status", str(int(reply.status)))])
        else:
            self.send_response(502, f"{int(reply.status)}:{reply.message}")
"""


def _unary(request: bytes, context: Any) -> bytes:
    return b"echo " + request


def _chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    context.send_initial_metadata((("x-server", "py"),))
    for item in requests:
        yield item.upper()


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Say": grpc.unary_unary_rpc_method_handler(_unary, identity, identity),
            "Chat": grpc.stream_stream_rpc_method_handler(_chat, identity, identity),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path], grpc_port: int) -> Iterator[Envoy]:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FILTER), name="grpc")
        config = http_bootstrap(
            upstream_port=upstream.port, plugins=[plugin], clusters=[Cluster("grpc", grpc_port, http2=True)]
        )
        with Envoy(config) as running:
            yield running


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_unary_call(envoy: Envoy) -> None:
    assert get(envoy.url + "/unary/Say") == (200, b"echo /unary/Say")


def test_unary_call_failure_delivers_the_status(envoy: Envoy) -> None:
    status, body = get(envoy.url + "/unary/Missing")
    assert status == 502
    assert body.startswith(b"12:")  # UNIMPLEMENTED, from the server


def test_bidirectional_stream(envoy: Envoy) -> None:
    assert get(envoy.url + "/stream") == (200, b"meta:py|ONE|TWO|close:0")
