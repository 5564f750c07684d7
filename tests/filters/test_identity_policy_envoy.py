"""filters/identity_policy in real Envoy 1.40 over TLS on 127.0.0.1, served by its own envoy.yaml:
certificates made by the filter's make_demo_certs.py (a CA, the server's, clients with SPIFFE IDs as
URI SANs), the shipped configuration and route metadata. Two more listeners show connections that
are not mTLS: TLS without a client certificate, and plaintext. One Envoy for the module."""

from __future__ import annotations

import copy
import http.client
import importlib.util
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from filters_support import FILTERS, envoy_config, prometheus, wasm_errors

from proxywasm_build.envoy import Envoy
from proxywasm_build.upstream import UpstreamServer

CHECKOUT = "spiffe://cluster.local/ns/shop/sa/checkout"


def load_certs_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo_certs", FILTERS / "identity_policy" / "make_demo_certs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    module = load_certs_module()
    module.make(directory, {**module.CLIENTS, "checkout": CHECKOUT})
    return directory


def with_test_listeners(certs: Path) -> Any:
    def change(config: dict[str, Any]) -> None:
        listeners = config["static_resources"]["listeners"]
        main = listeners[0]
        for node in _filenames(main):
            node["filename"] = str(certs / Path(node["filename"]).name)
        optional = copy.deepcopy(main)
        optional["name"] = "tls_without_client_certificate"
        tls = optional["filter_chains"][0]["transport_socket"]["typed_config"]
        tls["require_client_certificate"] = False
        plaintext = copy.deepcopy(main)
        plaintext["name"] = "plaintext"
        del plaintext["filter_chains"][0]["transport_socket"]
        listeners.extend([optional, plaintext])

    return change


def _filenames(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("filename"), str) and "/certs/" in node["filename"]:
            yield node
        for value in node.values():
            yield from _filenames(value)
    elif isinstance(node, list):
        for value in node:
            yield from _filenames(value)


@pytest.fixture(scope="module")
def backend() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(certs: Path, backend: UpstreamServer) -> Iterator[Envoy]:
    config = envoy_config("identity_policy", clusters={"backend": backend.port}, change=with_test_listeners(certs))
    with Envoy(config) as proxy:
        yield proxy


def request(
    envoy: Envoy,
    certs: Path,
    client: str | None,
    method: str,
    path: str,
    *,
    listener: str = "main",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request over TLS (``client`` names its certificate; None: no client certificate), or
    plaintext on the ``plaintext`` listener."""
    port = envoy.port(listener)
    conn: http.client.HTTPConnection
    if listener == "plaintext":
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    else:
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        if client is not None:
            context.load_cert_chain(certs / f"{client}.pem", certs / f"{client}.key")
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


DENIED = (403, b"access denied\n")


def test_allowed_peers_reach_the_upstream_with_their_identity(
    envoy: Envoy, certs: Path, backend: UpstreamServer
) -> None:
    backend.clear()
    spoof = {"x-peer-identity": "spiffe://cluster.local/ns/ops/sa/admin"}
    assert request(envoy, certs, "frontend", "GET", "/api/items?page=1", headers=spoof)[0] == 200
    assert request(envoy, certs, "prometheus", "GET", "/metrics")[0] == 200
    seen = {r.path: r.header_values("x-peer-identity") for r in backend.requests}
    assert seen == {
        "/api/items?page=1": ["spiffe://cluster.local/ns/web/sa/frontend"],
        "/metrics": ["spiffe://cluster.local/ns/monitoring/sa/prometheus"],
    }


@pytest.mark.parametrize(
    ("client", "method", "path"),
    [
        ("frontend", "POST", "/api/items"),  # the rule allows GET and HEAD only
        ("frontend", "DELETE", "/api/items"),  # the DENY rule comes first
        ("frontend", "GET", "/metrics"),  # not prometheus
        ("stranger", "GET", "/api/items"),  # an identity no rule names
        ("no-identity", "GET", "/api/items"),  # a verified certificate without URI SAN
        ("no-identity", "GET", "/healthz/../api/items"),  # normalised to /api/items first
        ("frontend", "POST", "/payments/1"),  # the route's own rules: checkout only
    ],
)
def test_denied(envoy: Envoy, certs: Path, client: str, method: str, path: str) -> None:
    assert request(envoy, certs, client, method, path) == DENIED


def test_rules_without_principals_and_route_rules(envoy: Envoy, certs: Path) -> None:
    assert request(envoy, certs, "no-identity", "GET", "/healthz")[0] == 200
    assert request(envoy, certs, "checkout", "POST", "/payments/1")[0] == 200
    assert request(envoy, certs, "checkout", "GET", "/api/items") == DENIED  # elsewhere the plugin's rules


def test_connections_that_are_not_mtls_are_denied(envoy: Envoy, certs: Path) -> None:
    # TLS, but the client sent no certificate: Envoy says connection.mtls is false.
    assert request(envoy, certs, None, "GET", "/healthz", listener="tls_without_client_certificate") == DENIED
    assert request(envoy, certs, None, "GET", "/healthz", listener="plaintext") == DENIED
    # The same certificate that passes on the mTLS listener passes here too.
    assert request(envoy, certs, "frontend", "GET", "/api/x", listener="tls_without_client_certificate")[0] == 200
    # The shipped listener itself refuses a TLS client without a certificate in the handshake.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        request(envoy, certs, None, "GET", "/healthz")


def test_metrics_and_no_errors(envoy: Envoy) -> None:
    series = {
        (dict(labels)["decision"], dict(labels)["rule"]): value
        for labels, value in prometheus(envoy, "identity_policy_decisions_total").items()
    }
    assert series[("allow", "frontend-reads")] >= 1
    assert series[("deny", "no-deletes")] >= 1
    assert series[("deny", "no_mtls")] >= 2
    assert series[("allow", "checkout")] >= 1
    assert not wasm_errors(envoy)
