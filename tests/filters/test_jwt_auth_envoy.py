"""filters/jwt_auth in real Envoy 1.40, served by its own envoy.yaml (two workers): the shipped
configuration with its inline HS256 key, plus a remote JWKS from a test identity provider whose
keys rotate. One Envoy for the module."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import yaml  # type: ignore[import-untyped,unused-ignore]
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from filters_support import FILTERS, envoy_config, http, plugin_configuration, prometheus, wait_until, wasm_errors
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxywasm_build.envoy import Envoy, EnvoyError
from proxywasm_build.upstream import RecordedRequest, Response, UpstreamServer

CACHE_S = 2  # the remote JWKS' cache_duration_s in this test (the shipped file says 300)
SHIPPED = yaml.safe_load((FILTERS / "jwt_auth" / "envoy.yaml").read_text())
DEMO = plugin_configuration(SHIPPED)["providers"]["demo"]
DEMO_SECRET = base64.urlsafe_b64decode(DEMO["local_jwks"]["keys"][0]["k"] + "==")
IDP_ISSUER = "https://idp.example.com"


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    module = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = json.loads(module.to_jwk(private.public_key()))
    jwk["kid"] = kid
    return jwk


class Idp:
    """The identity provider's JWKS endpoint (/jwks.json). Its first answer is held until
    ``release`` is set, so the first request must wait for the JWKS; it records when it answered."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p384 = ec.generate_private_key(ec.SECP384R1())
        self.next_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys = [public_jwk(self.rsa, "r1"), public_jwk(self.p256, "e1"), public_jwk(self.p384, "e2")]
        self.release = threading.Event()
        self.answered_at: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Response:
        if request.path != "/jwks.json":
            return Response(404)
        self.release.wait(30)
        with self.lock:
            self.answered_at.append(time.monotonic())
            body = json.dumps({"keys": self.keys}).encode()
        return Response(200, body, (("content-type", "application/json"),))

    def rotate(self) -> None:
        with self.lock:
            self.keys = [public_jwk(self.next_rsa, "r2")]


def token(private: Any, alg: str, kid: str, issuer: str = IDP_ISSUER, **claims: Any) -> str:
    body = {"iss": issuer, "aud": "api", "sub": "alice", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


def demo_token(**claims: Any) -> str:
    return token(DEMO_SECRET, "HS256", "demo", issuer="demo", **claims)


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[Idp, UpstreamServer]]:
    state = Idp()
    with UpstreamServer(state) as server:
        yield state, server


@pytest.fixture(scope="module")
def backend() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(idp: tuple[Idp, UpstreamServer], backend: UpstreamServer) -> Iterator[Envoy]:
    configuration = plugin_configuration(SHIPPED)
    configuration["providers"]["idp"]["remote_jwks"]["cache_duration_s"] = CACHE_S
    # The IdP holds its first answer until the first request is in (see Idp): a fetch a tick starts
    # before then must not time out meanwhile (Envoy starts at its own pace).
    configuration["providers"]["idp"]["remote_jwks"]["timeout_ms"] = 30_000
    config = envoy_config(
        "jwt_auth", clusters={"backend": backend.port, "idp": idp[1].port}, configuration=configuration
    )
    with Envoy(config, concurrency=2) as proxy:
        yield proxy


def bearer(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def test_the_first_request_waits_for_the_remote_jwks(envoy: Envoy, idp: tuple[Idp, UpstreamServer]) -> None:
    # The module's first test (pytest keeps file order): no VM has keys yet.
    state, _server = idp
    assert not state.answered_at
    sent = time.monotonic()
    release = threading.Timer(1.0, state.release.set)  # the IdP answers only after the request left
    release.start()
    try:
        reply = http(envoy, "/api/first", headers=bearer(token(state.rsa, "RS256", "r1")))
    finally:
        release.cancel()
        state.release.set()
    assert reply.status == 200, reply.body
    # Keys existed nowhere before the IdP answered, and it answered after the request was sent:
    # the request was held until the fetch came back, not refused.
    assert state.answered_at and state.answered_at[0] > sent


def test_tokens_of_each_algorithm_pass(envoy: Envoy, idp: tuple[Idp, UpstreamServer], backend: UpstreamServer) -> None:
    state, _server = idp
    state.release.set()  # (when run alone)
    tokens = {
        "HS256": demo_token(sub="hs"),
        "RS256": token(state.rsa, "RS256", "r1", sub="rs"),
        "PS256": token(state.rsa, "PS256", "r1", sub="ps"),
        "ES256": token(state.p256, "ES256", "e1", sub="es256"),
        "ES384": token(state.p384, "ES384", "e2", sub="es384"),
    }
    for alg, value in tokens.items():
        backend.clear()
        reply = http(envoy, f"/api/{alg}", headers=bearer(value))
        assert reply.status == 200, (alg, reply.body)
        (seen,) = backend.requests
        payload = seen.header("x-jwt-payload") or ""
        assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == seen.header(
            "x-jwt-sub"
        )
        assert seen.header("x-jwt-sub") == {"HS256": "hs", "RS256": "rs", "PS256": "ps"}.get(alg, alg.lower())
        assert seen.header("authorization") is None
    assert not wasm_errors(envoy)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "Jwt is missing"),
        ("expired", "Jwt is expired"),
        ("alg_none", "Jwt header [alg] 'none' is not supported"),
        ("wrong_key", "Jwt verification fails"),
        ("wrong_audience", "Audiences in Jwt are not allowed"),
        ("tampered", "Jwt verification fails"),
    ],
)
def test_bad_tokens_get_401_with_a_bearer_challenge(envoy: Envoy, case: str, message: str) -> None:
    headers: dict[str, str] = {}
    if case == "expired":
        headers = bearer(demo_token(exp=int(time.time()) - 3600))
    elif case == "alg_none":
        headers = bearer(jwt.encode({"iss": "demo", "aud": "api", "sub": "x"}, "", algorithm="none"))
    elif case == "wrong_key":
        headers = bearer(token(b"another secret of at least 32 bytes!!", "HS256", "demo", issuer="demo"))
    elif case == "wrong_audience":
        headers = bearer(demo_token(aud="web"))
    elif case == "tampered":
        head, _payload, signature = demo_token().split(".")
        forged = base64.urlsafe_b64encode(json.dumps({"iss": "demo", "aud": "api", "sub": "root"}).encode())
        headers = bearer(f"{head}.{forged.rstrip(b'=').decode()}.{signature}")
    reply = http(envoy, "/api/x?q=1", headers=headers)
    assert (reply.status, reply.body.decode()) == (401, message)
    realm = f'Bearer realm="http://127.0.0.1:{envoy.port("main")}/api/x"'
    assert reply.header("www-authenticate") == (realm if case == "missing" else realm + ', error="invalid_token"')


def test_paths_without_a_requirement(envoy: Envoy) -> None:
    assert http(envoy, "/healthz").status == 200  # route metadata: disabled
    assert http(envoy, "/public/logo.png").status == 200  # a rule without providers
    # Path normalisation (in envoy.yaml) keeps a dot-segment from reaching /api through /public/.
    assert http(envoy, "/public/../api/x").status == 401


def test_jwks_rotation_reaches_every_worker(envoy: Envoy, idp: tuple[Idp, UpstreamServer]) -> None:
    state, _server = idp
    state.release.set()
    old = token(state.rsa, "RS256", "r1")
    new = token(state.next_rsa, "RS256", "r2")
    assert http(envoy, "/api/old", headers=bearer(old)).status == 200
    fetches_before = len(state.answered_at)
    started = time.monotonic()
    state.rotate()

    def rotated() -> bool:
        # Several requests on fresh connections: Envoy spreads them over both workers.
        return all(http(envoy, "/api/new", headers=bearer(new)).status == 200 for _ in range(6))

    wait_until(rotated, timeout_s=CACHE_S + 15, what="the rotated key accepted on every worker")
    assert all(http(envoy, "/api/old", headers=bearer(old)).status == 401 for _ in range(6))
    # One VM refreshes per period (a lease in shared data), not each of the three VMs
    # (main thread and two workers); the other VMs take the stored JWKS.
    periods = (time.monotonic() - started) / CACHE_S
    assert len(state.answered_at) - fetches_before <= periods + 2


def test_metrics_in_prometheus(envoy: Envoy) -> None:
    assert prometheus(envoy, "jwt_auth_requests_total")[frozenset({("result", "allowed")})] >= 5
    assert prometheus(envoy, "jwt_auth_denied_total")[frozenset({("reason", "expired")})] == 1
    fetches = prometheus(envoy, "jwt_auth_jwks_fetches_total")
    assert fetches[frozenset({("provider", "idp"), ("result", "success")})] >= 2
    assert not wasm_errors(envoy)


def test_a_bad_configuration_is_rejected_with_the_key(backend: UpstreamServer) -> None:
    configuration = plugin_configuration(SHIPPED)
    configuration["rules"].append({"prefix": "/x", "providers": ["nobody"]})
    config = envoy_config("jwt_auth", clusters={"backend": backend.port, "idp": 1}, configuration=configuration)
    with pytest.raises(EnvoyError) as info, Envoy(config):
        pass
    assert "proxywasm: configuration rejected: rules[2].providers[0]: no provider named 'nobody'" in str(info.value)
