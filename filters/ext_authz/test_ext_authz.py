"""ext_authz in the local host, natively and as the built module: the authorisation service is a
cluster handler that answers by the request's path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxywasm_host import CUT_OFF, RESET, SLOW, UNREACHABLE, Action, ConfigureError, Host, Request, Response, Route
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"


class Authz:
    """The authorisation service: the path it is asked about (after the prefix) picks the answer."""

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def __call__(self, request: Request) -> Any:
        self.seen.append(request)
        path = request.path.removeprefix("/check")
        if path.startswith("/allow"):
            return (200, [("x-auth-user", "alice"), ("x-auth-roles", "a"), ("x-auth-roles", "b"),
                          ("set-cookie", "session=renewed"), ("x-internal", "secret")], "")  # fmt: skip
        if path.startswith("/login"):
            return (302, [("location", "https://login.example.com/?next=/login"), ("x-internal", "secret")], "")
        if path.startswith("/unauthenticated"):
            return (401, [("www-authenticate", 'Bearer realm="shop"'), ("content-type", "application/json"),
                          ("x-internal", "secret")], '{"error": "who are you?"}')  # fmt: skip
        if path.startswith("/forbidden"):
            return (403, [], "not for you\n")
        if path.startswith("/broken"):
            return (500, [], "authz crashed")
        if path.startswith("/slow"):
            return SLOW
        if path.startswith("/reset"):
            return RESET
        if path.startswith("/cut"):
            return CUT_OFF
        if path.startswith("/down"):
            return UNREACHABLE
        return (200, [], "")


CONFIG: dict[str, Any] = {
    "cluster": "authz",
    "path_prefix": "/check",
    "timeout_ms": 300,
    "allowed_headers": ["authorization", "x-request-id"],
    "allowed_upstream_headers": ["x-auth-user", "x-auth-roles"],
    "allowed_client_headers_on_success": ["set-cookie"],
    "headers_to_add": {"x-authz-source": "envoy"},
}

Load = Callable[..., tuple[Host, Authz]]


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str) -> Load:
    def make(plugin_config: dict[str, Any] | None = None, **options: Any) -> tuple[Host, Authz]:
        authz = Authz()
        host = proxywasm_host(
            FILTER,
            mode=proxywasm_mode,
            plugin_name="ext_authz",
            plugin_config=plugin_config if plugin_config is not None else CONFIG,
            clusters={"authz": authz},
            **options,
        )
        return host, authz

    return make


def request(host: Host, path: str, **headers: str) -> Response:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return host.request("POST", path, headers=pairs, body=b"payload")


def test_allowed_with_the_service_s_headers(load: Load) -> None:
    host, authz = load()
    response = request(host, "/allow/items?page=2", authorization="Bearer t", x_request_id="r1", cookie="c=1",
                       x_auth_user="mallory")  # fmt: skip
    assert response.status == 200
    (check,) = authz.seen
    # The check: the original method, the prefixed path, the authority and only the chosen headers.
    assert (check.method, check.path) == ("POST", "/check/allow/items?page=2")
    assert check.header(":authority") == "example.com"
    assert (check.header("authorization"), check.header("x-request-id")) == ("Bearer t", "r1")
    assert check.header("x-authz-source") == "envoy"
    assert check.header("cookie") is None and check.header("x-auth-user") is None
    assert check.body == b""
    upstream = response.upstream_request
    assert upstream is not None and upstream.body == b"payload"
    # The service's word replaces the client's own x-auth-user; repeated values stay repeated.
    assert [v for k, v in upstream.headers if k == "x-auth-user"] == ["alice"]
    assert [v for k, v in upstream.headers if k == "x-auth-roles"] == ["a", "b"]
    assert upstream.header("x-internal") is None
    assert response.header("set-cookie") == "session=renewed"  # allowed_client_headers_on_success
    assert host.metric("ext_authz_requests_total;outcome=allowed") == 1


def test_a_header_the_service_does_not_set_is_removed(load: Load) -> None:
    host, _authz = load()
    response = request(host, "/other", x_auth_user="mallory", x_auth_roles="admin")
    upstream = response.upstream_request
    assert upstream is not None
    assert upstream.header("x-auth-user") is None and upstream.header("x-auth-roles") is None


@pytest.mark.parametrize(
    ("path", "status", "body", "headers"),
    [
        ("/unauthenticated", 401, b'{"error": "who are you?"}',
         {"www-authenticate": 'Bearer realm="shop"', "content-type": "application/json"}),
        ("/login", 302, b"", {"location": "https://login.example.com/?next=/login"}),
        ("/forbidden", 403, b"not for you\n", {}),
    ],
)  # fmt: skip
def test_denied_with_the_service_s_status_body_and_chosen_headers(
    load: Load, path: str, status: int, body: bytes, headers: dict[str, str]
) -> None:
    host, _authz = load()
    response = request(host, path)
    assert (response.status, response.body) == (status, body)
    assert response.upstream_request is None
    for name, value in headers.items():
        assert response.header(name) == value
    assert response.header("x-internal") is None
    assert host.metric("ext_authz_requests_total;outcome=denied") == 1


@pytest.mark.parametrize("path", ["/broken", "/slow", "/reset", "/cut", "/down"])
def test_a_failed_check_fails_closed_with_403(load: Load, path: str) -> None:
    host, _authz = load()
    response = request(host, path)
    assert (response.status, response.body) == (403, b"")
    assert response.upstream_request is None
    assert host.metric("ext_authz_requests_total;outcome=error_denied") == 1
    assert any("ext_authz: authorisation service (cluster 'authz') failed" in m for m in host.log_messages())


@pytest.mark.parametrize("path", ["/broken", "/slow", "/cut"])
def test_failure_mode_allow_lets_the_request_go_on(load: Load, path: str) -> None:
    host, _authz = load({**CONFIG, "failure_mode_allow": True, "failure_mode_allow_header_add": True})
    response = request(host, path, x_auth_user="mallory")
    assert response.status == 200
    upstream = response.upstream_request
    assert upstream is not None
    assert upstream.header("x-envoy-auth-failure-mode-allowed") == "true"
    assert upstream.header("x-auth-user") == "mallory"  # nothing was decided: the request goes on as it came
    assert host.metric("ext_authz_requests_total;outcome=error_allowed") == 1


def test_status_on_error(load: Load) -> None:
    host, _authz = load({**CONFIG, "status_on_error": 503})
    assert request(host, "/broken").status == 503


def test_the_timeout_is_the_callout_s(load: Load) -> None:
    host, _authz = load()
    stream = host.http_stream()
    headers = [(":method", "GET"), (":path", "/slow"), (":authority", "example.com"), (":scheme", "http")]
    assert stream.request_headers(headers, end_of_stream=True) == Action.PAUSE  # held while the service thinks
    host.pump()  # the service takes the call
    host.advance_time(299)
    assert stream.local_reply is None
    host.advance_time(2)  # past timeout_ms: Envoy's 504 for the callout, 403 for the client
    reply = stream.local_reply
    assert reply is not None and reply.status == 403


def test_an_unknown_cluster_fails_closed_with_an_error_log(proxywasm_host: HostFactory, proxywasm_mode: str) -> None:
    host = proxywasm_host(FILTER, mode=proxywasm_mode, plugin_config={**CONFIG, "cluster": "nowhere"})
    response = host.request("GET", "/x")
    assert response.status == 403
    assert any("cluster 'nowhere'" in m for m in host.log_messages())


def test_a_route_can_skip_the_check(load: Load) -> None:
    routes = [
        Route("/health", name="health", metadata={"ext_authz": {"disabled": True}}),
        Route("/typo", name="typo", metadata={"ext_authz": {"disable": True}}),
    ]
    host, authz = load(routes=routes)
    assert request(host, "/health").status == 200
    assert authz.seen == []
    assert host.metric("ext_authz_requests_total;outcome=disabled") == 1
    # Metadata with a mistake does not skip the check (and the log says what is wrong).
    assert request(host, "/typo").status == 200
    assert [r.path for r in authz.seen] == ["/check/typo"]
    assert any(
        "route metadata ext_authz.disable: unknown key (did you mean 'disabled'?)" in m for m in host.log_messages()
    )


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"cluster": ""}, "cluster: must not be empty"),
        ({"path_prefix": "check"}, "path_prefix: must start with '/', not 'check'"),
        ({"timeout_ms": 0}, "timeout_ms: must be at least 1, not 0"),
        ({"allowed_headers": ["Authorization"]},
         "allowed_headers[0]: must be a lower-case header name, not 'Authorization'"),
        ({"allowed_upstream_headers": [":path"]},
         "allowed_upstream_headers[0]: pseudo-header ':path': the filter sets those"),
        ({"headers_to_add": {"x": 1}}, "headers_to_add.x: must be a string, not the number 1"),
        ({"failure_mode": True}, "failure_mode: unknown key"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(load: Load, change: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigureError) as info:
        load({**CONFIG, **change})
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)


def test_the_cluster_is_required(load: Load) -> None:
    with pytest.raises(ConfigureError) as info:
        load({})
    assert "proxywasm: configuration rejected: cluster: missing: a string is required" in str(info.value)
