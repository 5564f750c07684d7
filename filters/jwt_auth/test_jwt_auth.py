"""jwt_auth in the local host, natively and as the built module: tokens minted by PyJWT with keys
made by cryptography, verified by the filter's own pure-Python crypto."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from proxywasm_host import SLOW, ConfigureError, Envoy, Host, Request, Response, Route
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
NOW = 1_750_000_000  # the host's wall clock at start, seconds since the epoch
ISSUER = "https://issuer.test"
IDP = "https://idp.test"
MALFORMED = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
HMAC_SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


class Keys:
    """Signing keys for every algorithm family, and their public JWKs."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.p256 = ec.generate_private_key(ec.SECP256R1())
        self.p384 = ec.generate_private_key(ec.SECP384R1())

    def signer(self, alg: str) -> tuple[Any, str]:
        """(private key, kid) for ``alg``."""
        if alg.startswith("HS"):
            return HMAC_SECRET, "h1"
        if alg.startswith(("RS", "PS")):
            return self.rsa, "r1"
        return (self.p256, "e1") if alg == "ES256" else (self.p384, "e2")

    def jwks(self) -> dict[str, Any]:
        oct_key = {"kty": "oct", "kid": "h1", "k": base64.urlsafe_b64encode(HMAC_SECRET).rstrip(b"=").decode()}
        return {
            "keys": [
                oct_key,
                public_jwk(self.rsa, "r1"),
                public_jwk(self.p256, "e1"),
                public_jwk(self.p384, "e2"),
            ]
        }


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = kid
    return jwk


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def mint(keys: Keys, alg: str = "RS256", *, key: Any = None, kid: str | None = None, **claims: Any) -> str:
    """A token of ``alg`` with sensible claims (iss, aud, sub, exp in an hour); ``claims``
    override them (``None`` removes one)."""
    signer, default_kid = keys.signer(alg)
    body: dict[str, Any] = {"iss": ISSUER, "aud": "api", "sub": "alice", "iat": NOW, "exp": NOW + 3600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key if key is not None else signer, algorithm=alg, headers={"kid": kid or default_kid})


def config(keys: Keys, **overrides: Any) -> dict[str, Any]:
    local: dict[str, Any] = {
        "issuer": ISSUER,
        "audiences": ["api", "admin"],
        "local_jwks": json.dumps(keys.jwks()),
        "forward_payload_header": "x-jwt-payload",
        "claim_to_headers": [
            {"header_name": "x-sub", "claim_name": "sub"},
            {"header_name": "x-tenant", "claim_name": "org.tenant"},
        ],
    }
    remote = {
        "issuer": IDP,
        "remote_jwks": {"cluster": "idp", "path": "/jwks", "cache_duration_s": 60, "timeout_ms": 500},
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "from_cookies": ["idp_session"],
        "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
    }
    result: dict[str, Any] = {
        "providers": {"local": local, "remote": remote},
        "rules": [
            {"prefix": "/public"},
            {"prefix": "/remote", "providers": ["remote"]},
            {"prefix": "/either", "providers": ["local", "remote"]},
            {"prefix": "/optional", "providers": ["local"], "allow_missing": True},
            {"prefix": "/", "providers": ["local"]},
        ],
    }
    result.update(overrides)
    return result


class Idp:
    """The JWKS endpoint behind the ``idp`` cluster: serves ``jwks`` (or ``answer`` when set)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.answer: Any = None
        self.fetches = 0

    def __call__(self, request: Request) -> Any:
        self.fetches += 1
        assert request.path == "/jwks"
        if self.answer is not None:
            return self.answer
        return (200, [("content-type", "application/json")], json.dumps(self.jwks))


Load = Callable[..., Host]


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str, keys: Keys) -> Load:
    def make(plugin_config: Any = None, idp: Idp | None = None, **options: Any) -> Host:
        return proxywasm_host(
            FILTER,
            mode=proxywasm_mode,
            plugin_name="jwt_auth",
            plugin_config=plugin_config if plugin_config is not None else config(keys),
            clusters={"idp": idp or Idp({"keys": []})},
            envoy=Envoy(start_time_ns=NOW * 10**9),
            **options,
        )

    return make


def advance(host: Host, ms: int) -> None:
    """Let ``ms`` pass with the clusters answering as time goes (the host answers callouts when
    its event loop runs, not while the clock jumps): one tick period at a time."""
    for _ in range(ms // 1000):
        host.advance_time(1000)
        while host.pump():
            pass
    host.advance_time(ms % 1000)


def get(host: Host, path: str, token: str | None = None, **headers: str) -> Response:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    return host.request("GET", path, headers=pairs)


def denied(response: Response, message: str) -> None:
    assert response.status == 401, response.body
    assert response.body.decode() == message
    assert response.upstream_request is None
    challenge = response.header("www-authenticate")
    assert challenge is not None and challenge.startswith('Bearer realm="http://example.com/')
    if message == "Jwt is missing":
        assert "error=" not in challenge  # RFC 6750 section 3.1: no error code without a token
    else:
        assert challenge.endswith(', error="invalid_token"')


ALGORITHMS = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]


def test_valid_tokens_of_every_algorithm_pass(load: Load, keys: Keys) -> None:
    host = load()
    for alg in ALGORITHMS:
        token = mint(keys, alg, sub=f"user-{alg}", org={"tenant": "acme"})
        response = get(host, "/api/items?x=1", token)
        assert response.status == 200, (alg, response.body)
        upstream = response.upstream_request
        assert upstream is not None
        assert upstream.header("x-sub") == f"user-{alg}"
        assert upstream.header("x-tenant") == "acme"
        payload = upstream.header("x-jwt-payload") or ""
        assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"] == f"user-{alg}"
        assert upstream.header("authorization") is None  # forward: false (the default) removes the token
    assert host.metric("jwt_auth_requests_total;result=allowed") == len(ALGORITHMS)
    assert not [m for _level, m in host.logs if "Traceback" in m]


@pytest.mark.parametrize(
    ("case", "message", "reason"),
    [
        ("expired", "Jwt is expired", "expired"),
        ("not_yet_valid", "Jwt not yet valid", "not_yet_valid"),
        ("wrong_audience", "Audiences in Jwt are not allowed", "bad_audience"),
        ("no_audience", "Audiences in Jwt are not allowed", "bad_audience"),
        ("wrong_issuer", "Jwt issuer is not configured", "bad_issuer"),
        ("wrong_rsa_key", "Jwt verification fails", "bad_signature"),
        ("wrong_hmac_secret", "Jwt verification fails", "bad_signature"),
        ("wrong_ec_key", "Jwt verification fails", "bad_signature"),
        ("unknown_kid", "Jwks doesn't have key to match kid or alg from Jwt", "unknown_key"),
        ("alg_none", "Jwt header [alg] 'none' is not supported", "unsupported_alg"),
        ("alg_confusion", "Jwt verification fails", "bad_signature"),
        ("tampered_payload", "Jwt verification fails", "bad_signature"),
        ("tampered_signature", "Jwt verification fails", "bad_signature"),
        ("two_sections", MALFORMED, "malformed"),
        ("bad_base64", "Jwt payload is an invalid Base64url encoded or an invalid JSON", "malformed"),
        ("exp_not_a_number", "Jwt payload [exp] field is not a number", "malformed"),
        ("missing", "Jwt is missing", "missing"),
    ],
)
def test_bad_tokens_are_refused(load: Load, keys: Keys, case: str, message: str, reason: str) -> None:
    token = bad_token(keys, case)
    host = load()
    denied(get(host, "/api", token), message)
    assert host.metric(f"jwt_auth_denied_total;reason={reason}") == 1
    assert host.metric("jwt_auth_requests_total;result=allowed") in (None, 0)


def bad_token(keys: Keys, case: str) -> str | None:
    good = mint(keys, "RS256")
    head, payload, signature = good.split(".")
    if case == "expired":
        return mint(keys, exp=NOW - 3600)
    if case == "not_yet_valid":
        return mint(keys, nbf=NOW + 3600)
    if case == "wrong_audience":
        return mint(keys, aud=["other", "web"])
    if case == "no_audience":
        return mint(keys, aud=None)
    if case == "wrong_issuer":
        return mint(keys, iss="https://evil.test")
    if case == "wrong_rsa_key":
        return mint(keys, key=keys.rsa_other)
    if case == "wrong_hmac_secret":
        return mint(keys, "HS256", key=b"another secret of at least thirty-two bytes!!")
    if case == "wrong_ec_key":
        return mint(keys, "ES256", key=ec.generate_private_key(ec.SECP256R1()))
    if case == "unknown_kid":
        return mint(keys, kid="nope")
    if case == "alg_none":
        return jwt.encode({"iss": ISSUER, "aud": "api", "exp": NOW + 60}, "", algorithm="none")
    if case == "alg_confusion":
        # HS256 "signed" with the RSA public key's bytes, under the RSA key's kid: the oct key
        # type does not fit, and the JWKS oct key (another secret) rejects it.
        public = RSAAlgorithm.to_jwk(keys.rsa.public_key()).encode()
        return mint(keys, "HS256", key=public + b"-padding-to-32-bytes", kid="h1")
    if case == "tampered_payload":
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["sub"] = "admin"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        return f"{head}.{forged}.{signature}"
    if case == "tampered_signature":
        flipped = base64.urlsafe_b64decode(signature + "==")
        flipped = bytes([flipped[0] ^ 1]) + flipped[1:]
        return f"{head}.{payload}.{base64.urlsafe_b64encode(flipped).rstrip(b'=').decode()}"
    if case == "two_sections":
        return f"{head}.{payload}"
    if case == "bad_base64":
        return f"{head}.{payload[:-1]}*.{signature}"
    if case == "exp_not_a_number":
        return mint(keys, exp="tomorrow")
    if case == "missing":
        return None
    raise AssertionError(case)


def test_clock_skew_is_honoured(load: Load, keys: Keys) -> None:
    host = load()  # clock_skew_seconds: 60 (the default)
    assert get(host, "/api", mint(keys, exp=NOW - 30)).status == 200
    assert get(host, "/api", mint(keys, nbf=NOW + 30)).status == 200
    denied(get(host, "/api", mint(keys, exp=NOW - 90)), "Jwt is expired")
    denied(get(host, "/api", mint(keys, nbf=NOW + 90)), "Jwt not yet valid")
    strict = config(keys)
    strict["providers"]["local"]["clock_skew_seconds"] = 0
    host = load(strict)
    denied(get(host, "/api", mint(keys, exp=NOW - 1)), "Jwt is expired")


def test_require_expiration(load: Load, keys: Keys) -> None:
    host = load()
    assert get(host, "/api", mint(keys, exp=None)).status == 200  # exp is optional by default (as in Envoy)
    custom = config(keys)
    custom["providers"]["local"]["require_expiration"] = True
    host = load(custom)
    denied(get(host, "/api", mint(keys, exp=None)), "Jwt has no exp claim")
    assert host.metric("jwt_auth_denied_total;reason=no_expiration") == 1


def test_a_token_expires_while_the_host_clock_moves(load: Load, keys: Keys) -> None:
    host = load()
    token = mint(keys, exp=NOW + 100)
    assert get(host, "/api", token).status == 200
    host.advance_time(200_000)  # 200 s: past exp + skew
    denied(get(host, "/api", token), "Jwt is expired")


def test_rules_select_providers(load: Load, keys: Keys) -> None:
    host = load()
    assert get(host, "/public/x").status == 200  # a rule without providers: no token needed
    assert get(host, "/optional").status == 200  # allow_missing: no token passes...
    denied(get(host, "/optional", mint(keys, exp=NOW - 3600)), "Jwt is expired")  # ...a bad one does not
    assert get(host, "/optional", mint(keys)).status == 200
    denied(get(host, "/anything-else"), "Jwt is missing")


def test_headers_the_filter_vouches_for_cannot_come_from_the_client(load: Load, keys: Keys) -> None:
    host = load()
    response = get(host, "/public", x_sub="root", x_jwt_payload="e30", x_tenant="evil")
    upstream = response.upstream_request
    assert upstream is not None
    assert (upstream.header("x-sub"), upstream.header("x-jwt-payload"), upstream.header("x-tenant")) == (None,) * 3


def test_forward_keeps_the_token_and_claims_of_every_type_become_headers(load: Load, keys: Keys) -> None:
    custom = config(keys)
    local = custom["providers"]["local"]
    local["forward"] = True
    local["claim_to_headers"] = [
        {"header_name": "x-admin", "claim_name": "admin"},
        {"header_name": "x-level", "claim_name": "level"},
        {"header_name": "x-groups", "claim_name": "groups"},
        {"header_name": "x-nested", "claim_name": "org"},
        {"header_name": "x-absent", "claim_name": "nothing"},
    ]
    host = load(custom)
    token = mint(keys, admin=True, level=3, groups=["a", "b"], org={"tenant": "t"})
    upstream = get(host, "/api", token).upstream_request
    assert upstream is not None
    assert upstream.header("authorization") == f"Bearer {token}"
    assert (upstream.header("x-admin"), upstream.header("x-level"), upstream.header("x-groups")) == ("true", "3", "a,b")
    assert upstream.header("x-nested") is None and upstream.header("x-absent") is None


def test_per_route_configuration(load: Load, keys: Keys) -> None:
    routes = [
        Route(prefix="/internal", name="internal", metadata={"jwt_auth": {"disabled": True}}),
        Route("/partner", name="partner", metadata={"jwt_auth": {"providers": ["local"], "allow_missing": True}}),
        Route(prefix="/typo", name="typo", metadata={"jwt_auth": {"disabeld": True}}),
        Route(prefix="/public-but-locked", name="locked", metadata={"jwt_auth": {"providers": ["local"]}}),
    ]
    host = load(routes=routes)
    assert get(host, "/internal/x").status == 200
    assert get(host, "/partner").status == 200
    denied(get(host, "/partner", "garbage"), MALFORMED)
    denied(get(host, "/public-but-locked"), "Jwt is missing")  # the route wins over the /public rule
    broken = get(host, "/typo")
    assert broken.status == 500 and broken.upstream_request is None
    assert any(
        "route metadata jwt_auth.disabeld: unknown key (did you mean 'disabled'?)" in m for m in host.log_messages()
    )


def test_the_signature_cache(load: Load, keys: Keys) -> None:
    host = load()
    token = mint(keys, "ES384")
    for _ in range(3):
        assert get(host, "/api", token).status == 200
    assert host.metric("jwt_auth_signature_cache_total;result=miss") == 1
    assert host.metric("jwt_auth_signature_cache_total;result=hit") == 2
    # A cached token is still checked for expiry.
    host.advance_time(3700_000)
    denied(get(host, "/api", token), "Jwt is expired")
    # Disabled: every request verifies.
    host = load(config(keys, signature_cache_size=0))
    for _ in range(2):
        assert get(host, "/api", token).status == 200
    assert host.metric("jwt_auth_signature_cache_total;result=hit") is None


def test_the_signature_cache_is_bounded(load: Load, keys: Keys) -> None:
    host = load(config(keys, signature_cache_size=2))
    a, b, c = (mint(keys, "HS256", sub=s) for s in "abc")
    for token in (a, b, a, c, a, b):  # c evicts b (a was used more recently); b misses again
        assert get(host, "/api", token).status == 200
    assert host.metric("jwt_auth_signature_cache_total;result=hit") == 2  # the second and third a
    assert host.metric("jwt_auth_signature_cache_total;result=miss") == 4


# ---- remote JWKS ----


def remote_token(private: Any, kid: str, **claims: Any) -> str:
    body = {"iss": IDP, "sub": "bob", "exp": NOW + 3600, **claims}
    return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid})


def test_the_first_requests_wait_for_the_remote_jwks(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp)
    response = get(host, "/remote/x", remote_token(keys.rsa, "k1"))
    assert response.status == 200, response.body
    assert response.upstream_request is not None and response.upstream_request.header("x-sub") == "bob"
    assert idp.fetches == 1
    assert get(host, "/remote/y", remote_token(keys.rsa, "k1", sub="carol")).status == 200
    assert idp.fetches == 1  # kept
    assert host.metric("jwt_auth_jwks_fetches_total;provider=remote;result=success") == 1
    # The cookie location works too.
    cookie = f"a=b; idp_session={remote_token(keys.rsa, 'k1')}"
    response = host.request("GET", "/remote/z", headers=[("cookie", cookie)])
    assert response.status == 200


@pytest.mark.parametrize("answer", [(500, [], "boom"), SLOW, (200, [], "not json"), (200, [], '{"keys": []}')])
def test_a_failed_jwks_fetch_refuses_with_a_clear_log_and_never_hangs(load: Load, keys: Keys, answer: Any) -> None:
    idp = Idp({"keys": []})
    idp.answer = answer
    host = load(idp=idp)
    denied(get(host, "/remote", remote_token(keys.rsa, "k1")), "Jwks remote fetch is failed")
    warnings = [m for m in host.log_messages() if "JWKS from cluster 'idp' /jwks" in m]
    assert warnings, host.log_messages()
    assert host.metric("jwt_auth_jwks_fetches_total;provider=remote;result=failure") == 1
    # Right after a failure requests are refused at once; a second later one may fetch again.
    denied(get(host, "/remote", remote_token(keys.rsa, "k1")), "Jwks remote fetch is failed")
    assert idp.fetches == 1
    idp.answer = None
    idp.jwks = {"keys": [public_jwk(keys.rsa, "k1")]}
    advance(host, 2000)  # a tick refreshes it once the lease of the failed fetch ran out
    assert get(host, "/remote", remote_token(keys.rsa, "k1")).status == 200


def test_jwks_rotation(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "old")]})
    host = load(idp=idp)
    old = remote_token(keys.rsa, "old")
    new = remote_token(keys.rsa_other, "new")
    assert get(host, "/remote", old).status == 200
    idp.jwks = {"keys": [public_jwk(keys.rsa_other, "new")]}  # the IdP rotates its key
    advance(host, 30_000)  # within cache_duration_s (60): the old keys stay
    assert get(host, "/remote", old).status == 200
    denied(get(host, "/remote", new), "Jwks doesn't have key to match kid or alg from Jwt")
    advance(host, 31_000)  # past it: the tick fetches the new JWKS
    assert idp.fetches == 2
    assert get(host, "/remote", new).status == 200
    denied(get(host, "/remote", old), "Jwks doesn't have key to match kid or alg from Jwt")
    # A cached verification of the old token does not outlive its key: same kid, new key material.
    idp.jwks = {"keys": [public_jwk(keys.rsa, "new")]}
    advance(host, 61_000)
    denied(get(host, "/remote", new), "Jwt verification fails")


def test_workers_share_the_jwks(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp, workers=2)
    for i in range(4):  # round-robin over both workers
        assert get(host, f"/remote/{i}", remote_token(keys.rsa, "k1")).status == 200
    assert idp.fetches == 1  # the second worker took the keys the first one stored in shared data
    advance(host, 61_000)  # stale on every VM: one of the three (main + 2 workers) refreshes
    assert idp.fetches == 2


LEASE = "jwt_auth/jwt_auth/idp/jwks/lease"  # jwt_auth/<plugin>/<cluster><path>/lease: one VM refreshes at a time
RECORD = "jwt_auth/jwt_auth/idp/jwks/jwks"  # ... and the JWKS it stored, stamped with its fetch time


def now_ms(host: Host) -> int:
    """The serving VM's wall clock, in ms (Envoy's, plus the virtual CPU the VM has used)."""
    return (host.envoy.time_ns + host.raw.cpu_ns()) // 1_000_000


def test_a_refresh_answered_after_its_lease_was_taken_over_leaves_the_new_holders(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp)
    assert get(host, "/remote", remote_token(keys.rsa, "k1")).status == 200
    host.add_cluster("idp", None)  # the refresh waits for the test's answer
    advance(host, 59_000)
    while not host.pending_http_calls:  # once stale (60 s), a tick takes the lease and fetches
        host.advance_time(1000)
    (call,) = host.pending_http_calls
    assert host.shared_data[LEASE.encode()] != b"0"
    # Its answer comes late: meanwhile another VM found the lease past its deadline and took it.
    theirs = str(now_ms(host) + 1700).encode()
    host.set_shared_data(LEASE, theirs)
    call.respond(200, [("content-type", "application/json")], json.dumps(idp.jwks))
    while host.pump():
        pass
    assert host.shared_data[LEASE.encode()] == theirs  # not given back on the other VM's behalf


def test_a_lease_dated_beyond_any_fetch_is_taken_over(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp)
    assert get(host, "/remote", remote_token(keys.rsa, "k1")).status == 200
    # A VM took the lease just before the wall clock stepped back an hour: its deadline is an hour
    # ahead, far beyond any fetch's. The refresh does not wait for the clock to catch up.
    host.set_shared_data(LEASE, str(now_ms(host) + 3_600_000).encode())
    advance(host, 61_000)
    assert idp.fetches == 2


def test_keys_fetched_before_the_wall_clock_stepped_back_are_refreshed(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp)
    assert get(host, "/remote", remote_token(keys.rsa, "k1")).status == 200
    host.envoy.time_ns -= 3600 * 10**9  # the wall clock steps back an hour: the keys look fetched later
    advance(host, 2000)
    assert idp.fetches == 2


def test_a_jwks_another_vm_stored_right_after_this_ones_is_adopted(load: Load, keys: Keys, monkeypatch: Any) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa, "k1")]})
    host = load(idp=idp)
    theirs = json.dumps({"keys": [public_jwk(keys.rsa_other, "k2")]}).encode()  # the IdP rotated in between
    original = host.envoy.set_shared

    def and_then_another_vm(vm_id: str, key: bytes, value: bytes, cas: int = 0) -> Any:
        status = original(vm_id, key, value, cas)
        if key == RECORD.encode() and value != theirs and theirs not in value:
            original(vm_id, key, str(now_ms(host)).encode() + b" " + theirs)  # its fetch, stored right after
        return status

    monkeypatch.setattr(host.envoy, "set_shared", and_then_another_vm)
    assert get(host, "/remote", remote_token(keys.rsa, "k1")).status == 200  # with the keys it fetched itself
    monkeypatch.undo()
    advance(host, 1000)  # a tick adopts the newer record
    assert get(host, "/remote", remote_token(keys.rsa_other, "k2")).status == 200
    assert idp.fetches == 1


def test_either_provider_may_vouch(load: Load, keys: Keys) -> None:
    idp = Idp({"keys": [public_jwk(keys.rsa_other, "k1")]})
    host = load(idp=idp)
    assert get(host, "/either", mint(keys)).status == 200
    assert get(host, "/either", remote_token(keys.rsa_other, "k1")).status == 200
    # A token of neither: the issuer mismatch of one provider does not hide the other's verdict.
    denied(get(host, "/either", remote_token(keys.rsa, "k1")), "Jwt verification fails")


# ---- configuration ----


def rename(obj: dict[str, Any], old: str, new: str) -> None:
    obj[new] = obj.pop(old)


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (lambda c: c.update(relam="x"), "relam: unknown key (did you mean 'realm'?)"),
        (lambda c: c.update(providers={}), "providers: must name at least one provider"),
        (lambda c: rename(c["providers"]["local"], "issuer", "isuer"),
         "providers.local.isuer: unknown key (did you mean 'issuer'?)"),
        (lambda c: c["providers"]["local"].pop("local_jwks"), "providers.local.local_jwks: missing: give local_jwks"),
        (lambda c: c["providers"]["local"].update(local_jwks="{"), "providers.local.local_jwks: not JSON"),
        (lambda c: c["providers"]["local"].update(local_jwks={"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}),
         "providers.local.local_jwks: no usable key (keys[0]: RSA key of 17 bits: at least 2048 are required)"),
        (lambda c: c["providers"]["local"].update(remote_jwks={"cluster": "idp", "path": "/"}),
         "providers.local.remote_jwks: give local_jwks or remote_jwks, not both"),
        (lambda c: c["providers"]["remote"]["remote_jwks"].update(cache_duration_s=0),
         "providers.remote.remote_jwks.cache_duration_s: must be at least 1, not 0"),
        (lambda c: c["providers"]["local"]["claim_to_headers"].append({"header_name": "X-Bad", "claim_name": "a"}),
         "providers.local.claim_to_headers[2].header_name: must be a lower-case HTTP header name, not 'X-Bad'"),
        (lambda c: c["rules"].append({"prefix": "/x", "providers": ["nobody"]}),
         "rules[5].providers[0]: no provider named 'nobody' (known: local, remote)"),
        (lambda c: c["rules"].append({"prefix": "x"}), "rules[5].prefix: must start with '/', not 'x'"),
        (lambda c: c.update(signature_cache_size=-1), "signature_cache_size: must be at least 0, not -1"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(
    load: Load, keys: Keys, change: Callable[[dict[str, Any]], Any], line: str
) -> None:
    bad = config(keys)
    change(bad)
    with pytest.raises(ConfigureError) as info:
        load(bad)
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)


def test_without_rules_every_request_needs_a_token(load: Load, keys: Keys) -> None:
    custom = config(keys)
    del custom["rules"]
    host = load(custom)
    denied(get(host, "/public"), "Jwt is missing")
    assert get(host, "/public", mint(keys)).status == 200
