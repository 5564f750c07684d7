"""proxy_http_call to another cluster, and what Envoy does when the call cannot be made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy_support import as_envoy, fetch

from proxywasm_build.envoy import Cluster, Envoy, free_port
from proxywasm_build.upstream import Response, UpstreamServer


@pytest.fixture(scope="module")
def env(as_modules: dict[str, Path]) -> Iterator[tuple[Envoy, UpstreamServer, UpstreamServer]]:
    routes = {"/callout": Response(201, b"callout-ok", (("x-callout-reply", "pong"),))}
    with UpstreamServer(routes=routes) as callout:
        clusters = [Cluster("callout", callout.port), Cluster("dead", free_port())]
        with as_envoy(as_modules["callout"], name="p_callout", root_id="callout", clusters=clusters) as (
            envoy,
            upstream,
        ):
            yield envoy, upstream, callout


def test_callout_hits_second_cluster(env: tuple[Envoy, UpstreamServer, UpstreamServer]) -> None:
    envoy, upstream, callout = env
    upstream.clear()
    callout.clear()
    reply = fetch(envoy.port(), "/c")
    assert reply.status == 200
    (call,) = callout.requests
    assert call.method == "GET"
    assert call.path == "/callout?from=as"
    assert call.header("host") == "callout.local"  # from :authority
    assert call.header("x-from-as") == "1"
    # Envoy marks the call internal and passes the timeout; no x-request-id/x-forwarded-proto.
    assert call.header("x-envoy-internal") == "true"
    assert call.header("x-envoy-expected-rq-timeout-ms") == "2000"
    assert call.header("x-request-id") is None
    # The paused request resumed with what the callout returned.
    (seen,) = upstream.requests
    assert seen.header("x-callout-status") == "201"
    assert seen.header("x-callout-body") == "callout-ok"
    assert seen.header("x-callout-reply") == "pong"


def test_unknown_cluster_fails_synchronously(env: tuple[Envoy, UpstreamServer, UpstreamServer]) -> None:
    envoy, upstream, callout = env
    upstream.clear()
    callout.clear()
    reply = fetch(envoy.port(), "/c", headers={"x-callout-cluster": "no-such-cluster"})
    # proxy_http_call returned BAD_ARGUMENT (2); the filter answered 500 itself.
    assert reply.status == 500
    assert reply.header("x-http-call-result") == "2"
    assert reply.body == b"http_call failed: 2\n"
    assert upstream.requests == [] and callout.requests == []


def test_unreachable_cluster_yields_synthetic_503(env: tuple[Envoy, UpstreamServer, UpstreamServer]) -> None:
    envoy, upstream, _ = env
    upstream.clear()
    reply = fetch(envoy.port(), "/c", headers={"x-callout-cluster": "dead"})
    assert reply.status == 200
    (seen,) = upstream.requests
    # The call "succeeds" with a locally generated 503 and an explanatory body.
    assert seen.header("x-callout-status") == "503"
    assert seen.header("x-callout-body") == (
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    )
    assert seen.header("x-callout-reply") == ""
