"""More of await: gRPC calls, gather's failure modes and coroutines, a response body, and a
plugin's async on_tick; in the local host and in real Envoy 1.40 (filters.EXTRAS)."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from filters import EXTRAS
from wire import Seen, WireServer, respond

from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap
from proxywasm_host import GrpcReply, Host, Request

ALLOW = EXTRAS.replace(
    "class Stream(HttpContext):\n", "class Stream(HttpContext):\n    allow_on_headers_stop_iteration = True\n"
)


def upstream_answer(seen: Seen) -> bytes:
    if seen.path.startswith("/inspect-secret"):
        return respond(200, b"this body holds a secret")
    if seen.path.startswith("/inspect-big"):
        return respond(200, b"x" * 100)
    return respond(200, b"upstream " + seen.path.encode())


def svc_answer(seen: Seen) -> bytes:
    return respond(200, b"svc" + seen.path.encode())


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Say": grpc.unary_unary_rpc_method_handler(lambda r, c: b"echo " + r, identity, identity)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.fixture(scope="module")
def servers(grpc_port: int) -> Iterator[tuple[WireServer, WireServer, WireServer, int]]:
    broken = WireServer(lambda seen: b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nbro")
    with WireServer(upstream_answer) as upstream, WireServer(svc_answer) as svc, broken:
        yield upstream, svc, broken, grpc_port


def start(wasm: Path, servers: tuple[WireServer, WireServer, WireServer, int], allow: bool | None = None) -> Envoy:
    upstream, svc, broken, grpc_port = servers
    clusters = [Cluster("svc", svc.port), Cluster("broken", broken.port), Cluster("grpc", grpc_port, http2=True)]
    plugin = WasmPlugin(wasm, name="extras", allow_on_headers_stop_iteration=allow)
    return Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin], clusters=clusters)).start()


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path], servers: Any) -> Iterator[Envoy]:
    running = start(build_filter(EXTRAS), servers)
    yield running
    running.stop()


def get(envoy: Envoy, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (http.client.IncompleteRead, ConnectionError) as err:
        return -1, repr(err).encode()
    finally:
        conn.close()


# ---- real Envoy ----


def test_envoy_grpc_await(envoy: Envoy) -> None:
    assert get(envoy, "/grpc/Say") == (200, b"0|echo /grpc/Say|")
    status, body = get(envoy, "/grpc/Missing")
    assert status == 502 and body.startswith(b"12||")  # UNIMPLEMENTED: returned, not raised


def test_envoy_gather_failure_modes(envoy: Envoy) -> None:
    assert get(envoy, "/gather-fails") == (502, b"CalloutFailed")
    assert get(envoy, "/gather-exceptions") == (200, b"200|CalloutFailed")


def test_envoy_gather_of_coroutines(envoy: Envoy, servers: Any) -> None:
    assert get(envoy, "/gather-coroutines")[0] == 200
    seen = servers[0].wait_for(lambda all: next((s for s in all if s.path == "/gather-coroutines"), None))
    assert seen.header("x-fetched") == "svc/one+svc/two"


def test_envoy_async_on_tick(envoy: Envoy, servers: Any) -> None:
    assert get(envoy, "/tick")[0] == 200
    seen = servers[0].wait_for(lambda all: next((s for s in all if s.path == "/tick"), None))
    assert seen.header("x-tick") == "svc/from-tick"


def test_envoy_response_body_by_default(envoy: Envoy) -> None:
    assert get(envoy, "/inspect-ok") == (200, b"upstream /inspect-ok")
    envoy.wait_for_log("response body 20 bytes")
    # The client already has the response headers when the coroutine decides: the local reply
    # can only become a reset of the stream (the client sees a broken response, not the secret).
    status, body = get(envoy, "/inspect-secret")
    assert b"secret" not in body
    assert status != 200 or body == b""
    envoy.wait_for_log("response body 24 bytes")
    assert get(envoy, "/ok")[0] == 200  # Envoy and the VM keep serving


def test_envoy_response_body_with_allow_on_headers_stop_iteration(
    build_filter: Callable[[str], Path], servers: Any
) -> None:
    envoy = start(build_filter(ALLOW), servers, allow=True)
    try:
        assert get(envoy, "/inspect-ok") == (200, b"upstream /inspect-ok")
        # The response headers were held with the body: the local reply replaces the response.
        assert get(envoy, "/inspect-secret") == (502, b"the upstream leaked a secret")
        assert get(envoy, "/inspect-big") == (500, b"Internal Server Error\n")
        envoy.wait_for_log("response too large")
        errors = [m.message for m in envoy.iter_wasm_messages() if m.level in ("error", "critical")]
        assert errors == []  # BodyTooLarge already answered: no traceback
    finally:
        envoy.stop()


# ---- local host ----


@pytest.fixture(scope="module")
def host_wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(EXTRAS)


def clusters() -> dict[str, Callable[..., Any]]:
    def broken(request: Request) -> None:
        raise ConnectionError("down")

    return {
        "svc": lambda r: (200, [], b"svc" + r.path.encode()),
        "grpc": lambda call: GrpcReply(b"echo " + call.request) if call.method == "Say" else GrpcReply(b"", 12),
    }


def test_host_grpc_and_gather(host_wasm: Path) -> None:
    host = Host.load(host_wasm, clusters=clusters())
    assert host.request("GET", "/grpc/Say").body == b"0|echo /grpc/Say|"
    assert host.request("GET", "/grpc/Missing").status == 502
    response = host.request("GET", "/gather-coroutines")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-fetched") == "svc/one+svc/two"
    host.add_cluster("broken")
    stream = host.http_stream()
    stream.request_headers([(":path", "/gather-exceptions"), (":method", "GET")])
    for call in host.pending_http_calls:
        call.cut_off() if call.cluster == "broken" else call.respond(200)
    assert stream.local_reply is not None and stream.local_reply.body == b"200|CalloutFailed"


def test_host_async_on_tick(host_wasm: Path) -> None:
    host = Host.load(host_wasm, clusters=clusters())
    stream = host.http_stream()
    stream.request_headers([(":path", "/tick"), (":method", "GET")])
    host.advance_time(60)
    host.pump()
    assert stream.request_headers_map.get("x-tick") == b"svc/from-tick"


def test_host_response_body(host_wasm: Path) -> None:
    host = Host.load(host_wasm)
    response = host.request("GET", "/inspect-ok", upstream=lambda r: (200, [], b"fine"))
    assert (response.status, response.body) == (200, b"fine")
    assert "response body 4 bytes" in host.log_messages()


def test_host_gather_fail_fast_closes_the_other_coroutines(host_wasm: Path) -> None:
    host = Host.load(host_wasm)
    host.add_cluster("svc")
    host.add_cluster("broken")
    stream = host.http_stream()
    stream.request_headers([(":path", "/gather-abandon"), (":method", "GET")])
    broken = next(c for c in host.pending_http_calls if c.cluster == "broken")
    slow = next(c for c in host.pending_http_calls if c.cluster == "svc")
    broken.cut_off()
    assert host.log_messages()[-2:] == ["gather gave up: CalloutFailed", "slow child closed"]
    slow.respond(200)  # its coroutine is gone: the answer is dropped
    assert "slow child finished" not in host.log_messages()
    assert not [m for lvl, m in host.logs if lvl >= 3]


FORGOT_AWAIT = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class Check(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        response = self.http_call("svc", path="/check")  # await forgotten
        headers["x-status"] = str(response.status)
"""


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_a_forgotten_await_says_so(load_filter: Callable[..., Host], mode: str) -> None:
    host = load_filter(FORGOT_AWAIT, mode, clusters={"svc": lambda request: 200}, raise_on_mistake=False)
    assert host.request("GET", "/").status == 500  # the exception meets FAIL_CLOSED
    assert any(
        m.endswith("AttributeError: 'HttpCallFuture' object has no attribute 'status': it is the awaitable, not its "
                   "result. Await it first: response = await self.http_call(...)")
        for m in host.log_messages()
    )  # fmt: skip
