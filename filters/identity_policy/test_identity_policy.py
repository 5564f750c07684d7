"""identity_policy in the local host, natively and as the built module. Most tests set the two
attributes the filter reads as property overrides (``connection.mtls``,
``connection.uri_san_peer_certificate``); ``test_a_tls_connection_from_the_host`` uses the host's
``Tls`` connections, whose attributes tests/filters checks against Envoy's. tests/filters has the
real mTLS runs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxywasm_host import ConfigureError, Host, Response, Route, Tls
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).parent / "filter.py"
TD = "spiffe://cluster.local"
FRONTEND = f"{TD}/ns/web/sa/frontend"
PROMETHEUS = f"{TD}/ns/monitoring/sa/prometheus"

CONFIG: dict[str, Any] = {
    "identity_header": "x-peer-identity",
    "rules": [
        {"name": "no-deletes", "action": "DENY", "methods": ["DELETE"]},
        {"name": "frontend-reads", "principals": [FRONTEND], "methods": ["GET", "HEAD"], "paths": ["/api/"]},
        {"name": "metrics", "principals": [f"{TD}/ns/*/sa/prometheus"], "paths": ["/metrics"]},
        {"name": "ops", "principals": [f"{TD}/ns/ops/**"]},
        {"name": "health", "paths": ["/healthz"]},
    ],
}

Load = Callable[..., Host]


@pytest.fixture
def load(proxywasm_host: HostFactory, proxywasm_mode: str) -> Load:
    def make(plugin_config: Any = None, **options: Any) -> Host:
        return proxywasm_host(
            FILTER,
            mode=proxywasm_mode,
            plugin_name="identity_policy",
            plugin_config=plugin_config if plugin_config is not None else CONFIG,
            **options,
        )

    return make


def peer(host: Host, identity: str | None, mtls: bool = True) -> None:
    """The next streams come from a connection with this peer (None: a certificate without URI SAN)."""
    host.set_property("connection.mtls", mtls)
    host.set_property("connection.uri_san_peer_certificate", identity)


def send(host: Host, method: str, path: str, **headers: str) -> Response:
    return host.request(method, path, headers=[(k.replace("_", "-"), v) for k, v in headers.items()])


def refused(response: Response) -> bool:
    return response.status == 403 and response.body == b"access denied\n" and response.upstream_request is None


@pytest.mark.parametrize(
    ("identity", "method", "path", "allowed", "rule"),
    [
        (FRONTEND, "GET", "/api/items?q=1", True, "frontend-reads"),
        (FRONTEND, "HEAD", "/api/items", True, "frontend-reads"),
        (FRONTEND, "POST", "/api/items", False, "default"),  # method not in the rule
        (FRONTEND, "GET", "/admin", False, "default"),  # path not in the rule
        (FRONTEND, "DELETE", "/api/items", False, "no-deletes"),  # an earlier DENY rule wins
        (f"{TD}/ns/web/sa/frontend2", "GET", "/api/items", False, "default"),  # exact means exact
        (PROMETHEUS, "GET", "/metrics", True, "metrics"),
        (f"{TD}/ns/other/sa/prometheus", "GET", "/metrics", True, "metrics"),  # * is one segment
        (f"{TD}/ns/a/b/sa/prometheus", "GET", "/metrics", False, "default"),  # ... never two
        (f"{TD}/ns/ops/sa/deployer", "POST", "/anything", True, "ops"),  # ** is any rest
        ("spiffe://other.domain/ns/ops/sa/deployer", "POST", "/anything", False, "default"),
        (None, "GET", "/api/items", False, "default"),  # a certificate without URI SAN
        (None, "GET", "/healthz", True, "health"),  # a rule without principals: any mTLS peer
    ],
)
def test_rules(load: Load, identity: str | None, method: str, path: str, allowed: bool, rule: str) -> None:
    host = load()
    peer(host, identity)
    response = send(host, method, path)
    if allowed:
        assert response.status == 200
        upstream = response.upstream_request
        assert upstream is not None and upstream.header("x-peer-identity") == identity
    else:
        assert refused(response)
    decision = "allow" if allowed else "deny"
    assert host.metric(f"identity_policy_decisions_total;decision={decision};rule={rule}") == 1


def test_without_mtls_everything_is_denied_by_default(load: Load) -> None:
    host = load()
    peer(host, None, mtls=False)
    assert refused(send(host, "GET", "/healthz"))  # even where any mTLS peer may go
    assert host.metric("identity_policy_decisions_total;decision=deny;rule=no_mtls") == 1
    # The host's own default (no property override) is a plaintext connection too.
    host = load()
    assert refused(send(host, "GET", "/healthz"))


def test_require_mtls_false_lets_rules_without_principals_decide(load: Load) -> None:
    host = load({**CONFIG, "require_mtls": False})
    peer(host, None, mtls=False)
    assert send(host, "GET", "/healthz").status == 200
    assert refused(send(host, "GET", "/api/items"))  # rules naming principals never match no peer


@pytest.mark.parametrize("mtls", [True, False])
def test_a_client_cannot_claim_an_identity(load: Load, mtls: bool) -> None:
    host = load({**CONFIG, "require_mtls": False})
    peer(host, None, mtls=mtls)  # no identity of its own (a certificate without URI SAN, or none)
    response = send(host, "GET", "/healthz", x_peer_identity=FRONTEND)
    upstream = response.upstream_request
    assert upstream is not None and upstream.header("x-peer-identity") is None


def test_default_action_allow(load: Load) -> None:
    host = load({**CONFIG, "default_action": "ALLOW"})
    peer(host, f"{TD}/ns/anyone/sa/x")
    assert send(host, "POST", "/whatever").status == 200
    assert refused(send(host, "DELETE", "/whatever"))


def test_a_route_brings_its_own_rules(load: Load) -> None:
    routes = [
        Route("/payments", name="payments", metadata={"identity_policy": {
            "rules": [{"name": "checkout-only", "principals": [f"{TD}/ns/shop/sa/checkout"]}]}}),
        Route("/open", name="open", metadata={"identity_policy": {"default_action": "ALLOW"}}),
        Route("/typo", name="typo", metadata={"identity_policy": {"rulez": []}}),
    ]  # fmt: skip
    host = load(routes=routes)
    peer(host, f"{TD}/ns/shop/sa/checkout")
    assert send(host, "POST", "/payments/1").status == 200
    assert refused(send(host, "GET", "/api/items"))  # elsewhere the plugin's rules apply
    peer(host, FRONTEND)
    assert refused(send(host, "GET", "/payments/1"))  # the route's rules replace the plugin's
    assert send(host, "DELETE", "/open/x").status == 200
    assert refused(send(host, "GET", "/typo"))
    line = "route metadata identity_policy.rulez: unknown key (did you mean 'rules'?): the route's requests are denied"
    assert any(line in m for m in host.log_messages())


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ({"rules": [{"action": "allow"}]}, "rules[0].action: must be one of 'ALLOW', 'DENY', not 'allow'"),
        ({"rules": [{"principals": []}]}, "rules[0].principals: must not be empty"),
        ({"rules": [{"principals": ["spiffe://td/***"]}]},
         "rules[0].principals[0]: 'spiffe://td/***': more than two '*' in a row"),
        ({"rules": [{"paths": ["api"]}]}, "rules[0].paths[0]: must start with '/', not 'api'"),
        ({"rules": [{"principal": ["x"]}]}, "rules[0].principal: unknown key (did you mean 'principals'?)"),
        ({"default_action": "PERMIT"}, "default_action: must be one of 'ALLOW', 'DENY', not 'PERMIT'"),
        ({"identity_header": "X-Peer"}, "identity_header: must be a lower-case header name, not 'X-Peer'"),
        ({"require_mtls": "yes"}, "require_mtls: must be true or false, not the string 'yes'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key(load: Load, change: dict[str, Any], line: str) -> None:
    with pytest.raises(ConfigureError) as info:
        load({**CONFIG, **change})
    assert f"proxywasm: configuration rejected: {line}" in str(info.value)


def test_pattern_matching() -> None:
    spec = importlib.util.spec_from_file_location("identity_policy_filter", FILTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def match(pattern: str, text: str) -> bool:
        return bool(module.pattern_matches(module.compile_pattern(pattern), text))

    assert match("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa/b")
    assert not match("spiffe://td/ns/*/sa/*", "spiffe://td/ns/a/sa/b/c")
    assert not match("spiffe://td/ns/*/sa/*", "spiffe://td/ns//x/sa/b")
    assert match("spiffe://td/ns/*/sa/*", "spiffe://td/ns//sa/")  # * may be empty
    assert match("spiffe://td/**", "spiffe://td/ns/a/sa/b")
    assert match("spiffe://td/ns/team-*/sa/*-reader", "spiffe://td/ns/team-blue/sa/db-reader")
    assert not match("spiffe://td/ns/team-*/sa/*-reader", "spiffe://td/ns/team-blue/sa/db-writer")
    assert match("spiffe://*/ns/x/sa/y", "spiffe://any.domain/ns/x/sa/y")
    assert not match("spiffe://*/ns/x/sa/y", "spiffe://a/b/ns/x/sa/y")
    assert match("spiffe://td/ns/*a*/sa/b", "spiffe://td/ns/banana/sa/b")  # backtracking within a segment
    assert match("**/sa/admin", "spiffe://td/ns/x/sa/admin")


def test_a_tls_connection_from_the_host(load: Load) -> None:
    host = load()
    frontend = Tls(peer_uri_sans=(FRONTEND,), peer_subject="CN=frontend")
    allowed = host.request("GET", "/api/items", tls=frontend)
    assert allowed.status == 200
    assert allowed.upstream_request is not None and allowed.upstream_request.header("x-peer-identity") == FRONTEND
    assert refused(host.request("GET", "/api/items", tls=Tls()))  # TLS without a client certificate
    assert refused(host.request("GET", "/api/items"))  # plaintext
