"""Header manipulation by an AS filter, seen by the client and by the upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer


@pytest.fixture(scope="module")
def env(as_modules: dict[str, Path]) -> Iterator[tuple[Envoy, UpstreamServer]]:
    with as_envoy(as_modules["headers"], name="p_headers", root_id="headers") as pair:
        yield pair


def test_request_headers_added_replaced_removed(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/hello", headers={"x-echo": "abc", "x-replace-me": "old", "x-remove-me": "gone"})
    assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.path == "/hello"
    assert seen.header_values("x-as-request") == ["added-by-as"]
    assert seen.header_values("x-replace-me") == ["replaced"]
    assert seen.header("x-remove-me") is None
    # Headers Envoy itself adds on the way upstream.
    assert seen.header("x-forwarded-proto") == "http"
    assert seen.header("x-request-id")
    assert seen.header("x-envoy-expected-rq-timeout-ms") == "15000"
    # The filter's header is added before the router adds x-envoy-expected-rq-timeout-ms.
    names = [k for k, _ in seen.headers]
    assert names.index("x-as-request") < names.index("x-envoy-expected-rq-timeout-ms")


def test_response_headers_seen_by_client(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    reply = fetch(envoy.port(), "/", headers={"x-echo": "abc"})
    assert reply.header("x-as-response") == "hello"
    assert reply.header("x-echo-back") == "abc"
    assert reply.header("server") == "envoy"
    assert reply.header("date")
    assert reply.header("x-envoy-upstream-service-time") is not None
    # Filter-added response headers come after the ones Envoy/upstream set.
    names = reply.names()
    assert names.index("x-envoy-upstream-service-time") < names.index("x-as-response")


def test_replace_of_missing_header_adds_it(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, upstream = env
    upstream.clear()
    reply = fetch(envoy.port(), "/")
    assert reply.status == 200
    assert reply.header("x-echo-back") is None
    (seen,) = upstream.requests
    # proxy_replace_header_map_value on an absent key behaves like add.
    assert seen.header_values("x-replace-me") == ["replaced"]


def test_header_maps_as_the_filter_sees_them(env: tuple[Envoy, UpstreamServer]) -> None:
    envoy, _ = env
    reply = fetch(envoy.port(), "/p?q=1", method="POST", body=b"abc", headers={"x-echo": "A"})
    # Pseudo-headers first; x-forwarded-proto and x-request-id are already added by the HTTP
    # connection manager before any filter runs; header names are lower-cased.
    assert reply.header("x-seen-request-headers") == (
        ":authority,:path,:method,:scheme,accept-encoding,content-length,x-echo,x-forwarded-proto,x-request-id"
    )
    # The upstream's own server/date headers are what the filter sees; x-envoy-upstream-service-time
    # is already there. The client finally gets server: envoy (Envoy overwrites it after the filters).
    assert reply.header("x-seen-response-headers") == (
        ":status,server,date,content-type,content-length,x-envoy-upstream-service-time"
    )
    assert reply.header("server") == "envoy"
