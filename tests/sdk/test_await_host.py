"""Await-style callouts in the local host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from filters import AWAIT

from proxywasm.abi import AUTHOR_MISTAKE_PREFIX
from proxywasm_host import Action, AuthorMistake, Host, Request


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(AWAIT)


def auth(request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    if request.path.startswith("/auth/deny"):
        return 403, [], b"no"
    if request.path == "/check":
        return (200, [], b"") if b"ok" in request.body else (401, [], b"")
    return 200, [("x-auth-user", request.header("x-user") or "anon")], request.path.encode()


def test_await_then_continue(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    response = host.request("GET", "/hello", headers=[("x-user", "ann")])
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-auth") == "ann"
    assert "finally /hello" in host.log_messages()


def test_await_then_local_reply(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    response = host.request("GET", "/deny")
    assert (response.status, response.body) == (403, b"denied by auth (403): no")
    assert response.upstream_request is None


def test_gather(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    response = host.request("GET", "/gather")
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-a") == "/a/gather"
    assert response.upstream_request.header("x-b") == "/b/gather"


def test_two_streams_wait_at_once(wasm: Path) -> None:
    host = Host.load(wasm)
    host.add_cluster("auth")
    one, two = host.http_stream(), host.http_stream()
    assert one.request_headers([(":path", "/one"), (":method", "GET"), ("x-user", "u1")]) != Action.CONTINUE
    assert two.request_headers([(":path", "/two"), (":method", "GET"), ("x-user", "u2")]) != Action.CONTINUE
    first, second = host.pending_http_calls
    second.respond(200, [("x-auth-user", "second")])
    first.respond(200, [("x-auth-user", "first")])
    assert one.request_headers_map.get("x-auth") == b"first"
    assert two.request_headers_map.get("x-auth") == b"second"


def test_late_answer_after_the_stream_ended_is_dropped(wasm: Path) -> None:
    host = Host.load(wasm)
    host.add_cluster("auth")
    stream = host.http_stream()
    stream.request_headers([(":path", "/gone"), (":method", "GET")])
    (call,) = host.pending_http_calls
    stream.complete()  # the client went away: on_done closes the waiting coroutine
    assert "finally /gone" in host.log_messages()
    call.respond(200, [("x-auth-user", "late")])
    assert not any(level >= 3 for level, _ in host.logs), host.logs
    assert host.request("GET", "/sync").status == 200


def test_callout_reset_raises_callout_failed(wasm: Path) -> None:
    host = Host.load(wasm)
    host.add_cluster("broken")
    stream = host.http_stream()
    stream.request_headers([(":path", "/reset"), (":method", "GET")])
    (call,) = host.pending_http_calls
    call.cut_off()
    assert stream.local_reply is not None
    assert stream.local_reply.status == 502
    assert b"got no response: reset" in stream.local_reply.body


def test_exception_after_await_meets_failure_policy(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    response = host.request("GET", "/boom")
    assert response.status == 500
    assert any("RuntimeError: after the callout" in m for m in host.log_messages())
    assert "finally /boom" in host.log_messages()


def test_fail_open_resumes_after_exception(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth}, fail_open=True)
    # The host's fail_open is Envoy's; the SDK's policy is the plugin's class attribute (FAIL_CLOSED
    # here), so this still answers 500: the SDK decides, not Envoy.
    assert host.request("GET", "/boom").status == 500


def test_never_suspends(wasm: Path) -> None:
    host = Host.load(wasm)
    response = host.request("GET", "/sync")
    assert response.status == 200
    assert host.pending_http_calls == []


def test_await_body(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    ok = host.request("POST", "/body", body=[b"it is ", b"ok"])
    assert ok.status == 200
    assert ok.upstream_request is not None and ok.upstream_request.body == b"it is ok"
    denied = host.request("POST", "/body", body=b"nope")
    assert (denied.status, denied.body) == (403, b"denied: nope")
    big = host.request("POST", "/body", body=b"x" * 100)
    assert big.status == 413
    assert "finally /body" in host.log_messages()


def test_unawaited_callout_in_a_coroutine_is_logged(wasm: Path) -> None:
    with pytest.raises(AuthorMistake, match="started a callout"):
        Host.load(wasm, clusters={"auth": auth}).request("GET", "/forget")
    host = Host.load(wasm, clusters={"auth": auth}, raise_on_mistake=False)
    assert host.request("GET", "/forget").status == 200
    assert (
        f"{AUTHOR_MISTAKE_PREFIX}Auth.on_request_headers started a callout (http_call to cluster 'auth') and "
        "returned CONTINUE"
    ) in " ".join(host.log_messages())


def test_await_body_ended_by_trailers(wasm: Path) -> None:
    # Trailers end the body: the waiting coroutine gets what Envoy buffered. Envoy's HTTP/1 codec
    # drops request trailers unless enable_trailers is set (test_differential_await.py runs it in Envoy).
    host = Host.load(wasm, clusters={"auth": auth}, request_trailers=True)
    response = host.request("POST", "/body", body=[b"it is ", b"ok"], trailers=[("x-t", "1")])
    assert response.status == 200
    assert response.upstream_request is not None and response.upstream_request.body == b"it is ok"
    assert response.upstream_request.trailers == [("x-t", "1")]


def test_await_body_of_a_request_without_one(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"auth": auth})
    response = host.request("GET", "/body")  # end_of_stream at the headers: the body is b""
    assert (response.status, response.body) == (403, b"denied: ")
    assert response.upstream_request is None
