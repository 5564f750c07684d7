"""Local replies (proxy_send_local_response) from request and response callbacks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer


@pytest.fixture(scope="module")
def env(as_modules: dict[str, Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with as_envoy(as_modules["deny"], name="p_deny", root_id="deny") as pair:
        yield pair


def test_local_reply_from_request_headers(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/secret")
    assert reply.status == 403
    assert reply.body == b"denied by as\n"
    assert reply.header("x-deny-reason") == "missing-token"
    assert reply.header("content-type") == "text/plain"
    assert reply.header("content-length") == "13"
    assert reply.header("server") == "envoy"
    assert reply.header("date")
    # No upstream was involved...
    assert reply.header("x-envoy-upstream-service-time") is None
    assert upstream.requests == []
    # ...but the filter's own response-headers callback still ran on the local reply.
    assert reply.header("x-deny-response-hook") == "ran"
    # Order: the local reply's headers, content-length, then filter additions, then date/server.
    assert reply.names() == [
        "x-deny-reason",
        "content-type",
        "content-length",
        "x-deny-response-hook",
        "date",
        "server",
    ]


def test_local_reply_status_is_taken_verbatim(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/", headers={"x-local-status": "200"})
    assert reply.status == 200
    assert reply.body == b"denied by as\n"
    assert upstream.requests == []


def test_allowed_request_reaches_upstream(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/ok", headers={"x-token": "t"})
    assert reply.status == 200
    assert reply.header("x-deny-response-hook") == "ran"
    assert [r.path for r in upstream.requests] == ["/ok"]


def test_local_reply_from_response_headers_replaces_upstream_response(
    env: tuple[Envoy, UpstreamServer],
) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/late", headers={"x-token": "t", "x-deny-on-response": "1"})
    assert reply.status == 502
    assert reply.body == b"response denied by as\n"
    assert reply.header("x-deny-reason") == "on-response"
    # The upstream was asked; its headers (and the filter's addition to them) are discarded.
    assert [r.path for r in upstream.requests] == ["/late"]
    assert reply.header("x-deny-response-hook") is None
    assert reply.header("x-envoy-upstream-service-time") is None
    assert reply.header("content-type") == "text/plain"


def test_local_reply_with_unread_request_body_closes_connection(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    reply = fetch(envoy.port(), "/", method="POST", body=b"abc")
    assert reply.status == 403
    assert reply.header("connection") == "close"
