"""filters/ext_authz in real Envoy 1.40, served by its own envoy.yaml: the shipped configuration
(failing closed) on listener ``main``, and a copy failing open on listener ``open``, both asking a
test authorisation service that answers by path. One Envoy for the module."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from filters_support import envoy_config, http, plugin_configuration, prometheus, wasm_config, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import RecordedRequest, Response, UpstreamServer

TIMEOUT_S = 0.5  # the shipped timeout_ms


def authorise(request: RecordedRequest) -> Response:
    path = request.path.removeprefix("/check")
    if request.header("authorization") == "Bearer alice-token" or path.startswith("/open-door"):
        return Response(200, b"", (("x-auth-user", "alice"), ("set-cookie", "session=renewed"), ("x-internal", "1")))
    if path.startswith("/login"):
        return Response(302, b"", (("location", "https://login.example.com/"),))
    if path.startswith("/broken"):
        return Response(500, b"authz crashed")
    if path.startswith("/slow"):
        return Response(200, b"", delay_s=TIMEOUT_S + 1.5)
    if path.startswith("/reset"):
        return Response(reset=True)
    return Response(401, b"unknown token\n", (("www-authenticate", 'Bearer realm="shop"'), ("x-internal", "1")))


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[UpstreamServer, UpstreamServer]]:
    with UpstreamServer() as backend, UpstreamServer(authorise) as authz:
        yield backend, authz


def add_failing_open_listener(config: dict[str, Any]) -> None:
    """A second listener with the same filter failing open (its own plugin name and VM)."""
    listener = copy.deepcopy(config["static_resources"]["listeners"][0])
    listener["name"] = "open"
    open_config = {"listeners": [listener]}
    plugin = wasm_config(open_config)
    plugin["name"] = plugin["vm_config"]["vm_id"] = "ext_authz_open"
    settings = json.loads(plugin["configuration"]["value"])
    settings.update(failure_mode_allow=True, failure_mode_allow_header_add=True)
    plugin["configuration"]["value"] = json.dumps(settings)
    config["static_resources"]["listeners"].append(listener)


@pytest.fixture(scope="module")
def envoy(servers: tuple[UpstreamServer, UpstreamServer]) -> Iterator[Envoy]:
    backend, authz = servers
    config = envoy_config(
        "ext_authz",
        clusters={"backend": backend.port, "authz": authz.port},
        change=add_failing_open_listener,
    )
    main = {"listeners": config["static_resources"]["listeners"][:1]}
    assert plugin_configuration(main)["failure_mode_allow"] is False  # the shipped one fails closed
    with Envoy(config) as proxy:
        yield proxy


def last(server: UpstreamServer, path: str) -> RecordedRequest:
    return next(r for r in reversed(server.requests) if r.path.endswith(path))


def test_allowed_requests_carry_the_service_s_headers(envoy: Envoy, servers: tuple[UpstreamServer, ...]) -> None:
    backend, authz = servers
    reply = http(envoy, "/api/items?page=2", method="DELETE",
                 headers={"authorization": "Bearer alice-token", "x-auth-user": "mallory", "x-other": "o"})  # fmt: skip
    assert reply.status == 200
    assert reply.header("set-cookie") == "session=renewed"  # allowed_client_headers_on_success
    seen = last(backend, "/api/items?page=2")
    assert seen.header_values("x-auth-user") == ["alice"]
    assert seen.header("x-internal") is None
    check = last(authz, "/check/api/items?page=2")
    assert check.method == "DELETE"
    assert check.header("authorization") == "Bearer alice-token"
    assert check.header("host") == f"127.0.0.1:{envoy.port('main')}"
    assert check.header("x-other") is None and check.header("x-auth-user") is None


def test_denials_pass_on_the_service_s_answer(envoy: Envoy) -> None:
    reply = http(envoy, "/api/x")
    assert (reply.status, reply.body) == (401, b"unknown token\n")
    assert reply.header("www-authenticate") == 'Bearer realm="shop"'
    assert reply.header("x-internal") is None
    reply = http(envoy, "/login/now")
    assert reply.status == 302 and reply.header("location") == "https://login.example.com/"


@pytest.mark.parametrize("path", ["/broken", "/slow", "/reset"])
def test_failures_fail_closed_or_open(envoy: Envoy, servers: tuple[UpstreamServer, ...], path: str) -> None:
    backend, _authz = servers
    closed = http(envoy, path)
    assert (closed.status, closed.body) == (403, b"")
    opened = http(envoy, path, listener="open", headers={"x-auth-user": "mallory"})
    assert opened.status == 200
    seen = last(backend, path)
    assert seen.header("x-envoy-auth-failure-mode-allowed") == "true"
    assert seen.header("x-auth-user") == "mallory"  # nothing was decided: as the request came


def test_a_route_can_skip_the_check(envoy: Envoy, servers: tuple[UpstreamServer, ...]) -> None:
    _backend, authz = servers
    before = len(authz.requests)
    assert http(envoy, "/healthz").status == 200
    assert len(authz.requests) == before


def test_metrics_and_no_errors(envoy: Envoy) -> None:
    outcomes = {
        dict(labels)["outcome"]: value for labels, value in prometheus(envoy, "ext_authz_requests_total").items()
    }
    assert outcomes["allowed"] >= 1 and outcomes["denied"] >= 2 and outcomes["disabled"] >= 1
    assert outcomes["error_denied"] >= 3 and outcomes["error_allowed"] >= 3
    assert not wasm_errors(envoy)
