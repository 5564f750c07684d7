"""http_auth_random's test: each request waits for a callout to the ``httpbin`` cluster, whose
answer decides (by the parity of its body's FNV-1a hash) whether the request goes on.

``clusters`` maps a cluster name to a handler: it receives the callout's request and returns the
cluster's answer (a body here: status 200).
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import CUT_OFF, ClusterHandler, Host, Request

GRANT = b"allow"  # FNV-1a 32 of this body is even
DENY = b"deny"  # ... and of this one odd


@pytest.fixture
def load(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Callable[[ClusterHandler], Host]:
    def load(httpbin: ClusterHandler) -> Host:
        return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode, clusters={"httpbin": httpbin})

    return load


def test_even_hash_lets_the_request_through(load: Callable[[ClusterHandler], Host]) -> None:
    calls: list[Request] = []

    def httpbin(request: Request) -> bytes:
        calls.append(request)
        return GRANT

    host = load(httpbin)
    response = host.request("GET", "/uuid", headers=[("this-is-key", "this-is-value")])
    assert response.status == 200
    assert response.upstream_request is not None  # resumed after the callout
    # The callout carried the request's own headers.
    (call,) = calls
    assert (call.path, call.header("this-is-key")) == ("/uuid", "this-is-value")
    assert "access granted" in host.log_messages()


def test_odd_hash_forbids(load: Callable[[ClusterHandler], Host]) -> None:
    response = load(lambda _: DENY).request("GET", "/uuid")
    assert (response.status, response.body) == (403, b"access forbidden")
    assert response.header("powered-by") == "proxy-wasm-python"
    assert response.upstream_request is None


def test_no_answer_at_all_is_a_503(load: Callable[[ClusterHandler], Host]) -> None:
    host = load(lambda _: CUT_OFF)  # the answer breaks off: Envoy hands the filter no response
    response = host.request("GET", "/")
    assert (response.status, response.body) == (503, b"authorization service unavailable")
    assert "the call to httpbin failed" in host.log_messages()
