"""Await-style callouts in real Envoy 1.40: the same filter as test_await_host.py."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filters import AWAIT
from wire import Seen, WireServer, respond

from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap

ALLOW = AWAIT.replace(
    "class Auth(HttpContext):\n", "class Auth(HttpContext):\n    allow_on_headers_stop_iteration = True\n"
)


class Auth:
    """The authorisation service: answers by path; can hold answers until released."""

    def __init__(self) -> None:
        self.both_arrived = threading.Barrier(2, timeout=10)
        self.release = threading.Event()

    def __call__(self, seen: Seen) -> bytes | None:
        path = seen.path
        if path.startswith("/auth/deny"):
            return respond(403, b"no")
        if path.startswith("/auth/together"):
            self.both_arrived.wait()  # answers only once both streams' callouts are in flight
        if path.startswith("/auth/late"):
            self.release.wait(10)
        if path == "/check":
            return respond(200 if b"ok" in seen.body else 401, b"")
        return respond(200, path.encode(), (("x-auth-user", seen.header("x-user") or "anon"),))


def broken(seen: Seen) -> bytes | None:
    """Starts a response and breaks the connection: Envoy delivers no response (a reset)."""
    return b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[WireServer, Auth, WireServer]]:
    auth = Auth()
    with WireServer() as upstream, WireServer(auth) as auth_server, WireServer(broken) as broken_server:
        yield upstream, auth, auth_server, broken_server  # type: ignore[misc]


def start(wasm: Path, servers: tuple[WireServer, Auth, WireServer, WireServer], allow: bool | None = None) -> Envoy:
    upstream, _auth, auth_server, broken_server = servers  # type: ignore[misc]
    plugin = WasmPlugin(wasm, name="await", allow_on_headers_stop_iteration=allow)
    clusters = [Cluster("auth", auth_server.port), Cluster("broken", broken_server.port)]
    config = http_bootstrap(upstream_port=upstream.port, plugins=[plugin], clusters=clusters)
    return Envoy(config).start()


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path], servers: tuple) -> Iterator[Envoy]:  # type: ignore[type-arg]
    running = start(build_filter(AWAIT), servers)
    try:
        yield running
    finally:
        running.stop()


def request(envoy: Envoy, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wasm_errors(envoy: Envoy) -> list[str]:
    return [line.message for line in envoy.iter_wasm_messages() if line.level in ("error", "critical")]


def test_await_then_continue(envoy: Envoy, servers: tuple) -> None:  # type: ignore[type-arg]
    upstream = servers[0]
    status, _ = request(envoy, "/hello", headers={"x-user": "ann"})
    assert status == 200
    seen = upstream.wait_for(lambda all: next((s for s in all if s.path == "/hello"), None))
    assert seen.header("x-auth") == "ann"
    envoy.wait_for_log("finally /hello")


def test_await_then_local_reply(envoy: Envoy) -> None:
    assert request(envoy, "/deny") == (403, b"denied by auth (403): no")


def test_gather(envoy: Envoy, servers: tuple) -> None:  # type: ignore[type-arg]
    status, _ = request(envoy, "/gather")
    assert status == 200
    seen = servers[0].wait_for(lambda all: next((s for s in all if s.path == "/gather"), None))
    assert (seen.header("x-a"), seen.header("x-b")) == ("/a/gather", "/b/gather")


def test_two_streams_wait_at_once(envoy: Envoy, servers: tuple) -> None:  # type: ignore[type-arg]
    # The auth service answers neither callout before both arrived: both streams wait in one VM.
    results: dict[str, tuple[int, bytes]] = {}
    threads = [
        threading.Thread(target=lambda p=p: results.__setitem__(p, request(envoy, p, headers={"x-user": p})))
        for p in ("/together-1", "/together-2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {"/together-1": (200, b"upstream /together-1"), "/together-2": (200, b"upstream /together-2")}
    upstream = servers[0]
    for p in ("/together-1", "/together-2"):
        assert upstream.wait_for(lambda all, p=p: next((s for s in all if s.path == p), None)).header("x-auth") == p


def test_callout_reset_raises_callout_failed(envoy: Envoy) -> None:
    status, body = request(envoy, "/reset")
    assert status == 502
    assert body.startswith(b"auth failed: the callout to cluster 'broken'")
    assert b"got no response: reset" in body


def test_exception_after_await_meets_failure_policy(envoy: Envoy) -> None:
    offset = len(envoy.logs())
    assert request(envoy, "/boom")[0] == 500
    envoy.wait_for_log("RuntimeError: after the callout")
    assert "finally /boom" in envoy.log_since(offset)


def test_late_answer_after_reset_is_dropped(envoy: Envoy, servers: tuple) -> None:  # type: ignore[type-arg]
    auth: Auth = servers[1]
    errors_before = len(wasm_errors(envoy))
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
    conn.request("GET", "/late")
    servers[2].wait_for(lambda all: next((s for s in all if s.path == "/auth/late"), None))
    conn.close()  # the client gives up while the callout waits: Envoy ends the stream
    envoy.wait_for_log("finally /late")
    auth.release.set()  # now the answer comes: Envoy delivers it to the root context
    assert request(envoy, "/sync") == (200, b"upstream /sync")
    assert wasm_errors(envoy)[errors_before:] == []
    assert envoy.running


def test_await_body_default_lets_the_headers_go_first(envoy: Envoy, servers: tuple) -> None:  # type: ignore[type-arg]
    upstream = servers[0]
    assert request(envoy, "/body-ok", body=b"it is ok", method="POST") == (200, b"upstream /body-ok")
    ok = upstream.wait_for(lambda all: next((s for s in all if s.path == "/body-ok"), None))
    assert bytes(ok.body) == b"it is ok"
    # Denied: Envoy had sent the headers upstream (no body), then reset that request.
    assert request(envoy, "/body-no", body=b"nope", method="POST") == (403, b"denied: nope")
    denied = upstream.wait_for(lambda all: next((s for s in all if s.path == "/body-no" and s.closed.is_set()), None))
    assert denied.header("content-length") == "4"
    assert bytes(denied.body) == b""
    status, _ = request(envoy, "/body-big", body=b"x" * 100, method="POST")
    assert status == 413


def test_await_body_with_allow_on_headers_stop_iteration(build_filter: Callable[[str], Path], servers: tuple) -> None:  # type: ignore[type-arg]
    upstream = servers[0]
    envoy = start(build_filter(ALLOW), servers, allow=True)
    try:
        assert request(envoy, "/body-allow-ok", body=b"it is ok", method="POST") == (200, b"upstream /body-allow-ok")
        assert request(envoy, "/body-allow-no", body=b"nope", method="POST") == (403, b"denied: nope")
    finally:
        envoy.stop()
    # Nothing of the denied request reached the upstream: the headers were held with the body.
    assert [s.path for s in upstream.seen if s.path.startswith("/body-allow")] == ["/body-allow-ok"]


def test_unawaited_callout_in_a_coroutine_is_logged(envoy: Envoy) -> None:
    assert request(envoy, "/forget")[0] == 200
    envoy.wait_for_log("author mistake: Auth.on_request_headers started a callout \\(http_call to cluster 'auth'\\)")


def test_await_body_ended_by_trailers(build_filter: Callable[[str], Path], servers: tuple) -> None:  # type: ignore[type-arg]
    # Envoy's HTTP/1 codec passes request trailers on only with enable_trailers.
    upstream, _auth, auth_server, broken_server = servers
    plugin = WasmPlugin(build_filter(AWAIT), name="await")
    clusters = [Cluster("auth", auth_server.port), Cluster("broken", broken_server.port)]
    config = http_bootstrap(upstream_port=upstream.port, plugins=[plugin], clusters=clusters)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_protocol_options"] = {"enable_trailers": True}
    with Envoy(config) as envoy:
        with socket.create_connection(("127.0.0.1", envoy.port()), timeout=10) as sock:
            sock.sendall(
                b"POST /body-trailers HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                b"6\r\nit is \r\n2\r\nok\r\n0\r\nx-t: 1\r\n\r\n"
            )
            head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        seen = upstream.wait_for(lambda all: next((s for s in all if s.path == "/body-trailers"), None))
        assert seen.header("transfer-encoding") == "chunked"  # the body (and trailers) went on chunked
