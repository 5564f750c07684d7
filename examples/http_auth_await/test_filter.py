"""http_auth_await's test: an ``async`` callback awaits a callout to the ``auth`` cluster, then
lets the request through with ``x-auth-user`` or answers with the refusal.

The ``auth`` handler below plays the auth service of envoy.yaml; ``routes`` gives ``/public`` the
route metadata that opts it out (the filter reads it as ``self.route_config``).
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import CUT_OFF, SLOW, ClusterHandler, Host, Request, Route

USERS = {"Bearer alice-token": "alice", "Bearer bob-token": "bob"}
PUBLIC = Route("/public", name="public", metadata={"http_auth_await": {"public": True}})


def auth_service(request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    user = USERS.get(request.header("authorization") or "")
    if request.path == "/check" and user is not None:
        return 200, [("x-auth-user", user)], b""
    return 403, [], b"unknown token\n"


@pytest.fixture
def load(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Callable[[ClusterHandler], Host]:
    def load(auth: ClusterHandler) -> Host:
        return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, plugin_name="http_auth_await",
                              clusters={"auth": auth}, routes=[PUBLIC])  # fmt: skip

    return load


@pytest.mark.parametrize(("token", "user"), [("alice-token", "alice"), ("bob-token", "bob")])
def test_known_token_goes_through_with_its_user(load: Callable[[ClusterHandler], Host], token: str, user: str) -> None:
    response = load(auth_service).request("GET", "/data", headers=[("authorization", f"Bearer {token}")])
    assert response.status == 200
    assert response.upstream_request is not None
    assert response.upstream_request.header("x-auth-user") == user


def test_the_callout_carries_the_token_and_path(load: Callable[[ClusterHandler], Host]) -> None:
    seen: list[Request] = []

    def recording_auth(request: Request) -> object:
        seen.append(request)
        return auth_service(request)

    host = load(recording_auth)
    host.request("GET", "/data?x=1", headers=[("authorization", "Bearer alice-token")])
    (call,) = seen
    assert (call.method, call.path) == ("GET", "/check")
    assert call.header("authorization") == "Bearer alice-token"
    assert call.header("x-original-path") == "/data?x=1"


def test_refusals(load: Callable[[ClusterHandler], Host]) -> None:
    host = load(auth_service)
    missing = host.request("GET", "/")
    assert (missing.status, missing.body) == (401, b"missing credentials\n")
    assert missing.header("www-authenticate") == "Bearer"
    unknown = host.request("GET", "/", headers=[("authorization", "Bearer mallory")])
    assert (unknown.status, unknown.body) == (403, b"unknown token\n")
    assert missing.upstream_request is None and unknown.upstream_request is None


def test_public_route_needs_no_callout(load: Callable[[ClusterHandler], Host]) -> None:
    host = load(lambda request: pytest.fail(f"unexpected callout {request}"))
    response = host.request("GET", "/public/page")
    assert response.status == 200
    assert response.upstream_request is not None and response.upstream_request.header("x-auth-user") is None


@pytest.mark.parametrize("outcome", [SLOW, CUT_OFF])
def test_auth_service_failures_answer_503(load: Callable[[ClusterHandler], Host], outcome: object) -> None:
    # SLOW: past the call's 1 s timeout (Envoy's 504); CUT_OFF: no answer at all (CalloutFailed).
    host = load(lambda _: outcome)
    response = host.request("GET", "/", headers=[("authorization", "Bearer alice-token")])
    assert (response.status, response.body) == (503, b"authorization service unavailable\n")
    assert response.upstream_request is None
