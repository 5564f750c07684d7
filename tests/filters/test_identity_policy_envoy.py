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
from filters_support import FILTERS, envoy_config, prometheus, walk, wasm_errors

from proxywasm_build.cache import build_cached
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
    return (n for n in walk(node) if isinstance(n.get("filename"), str) and "/certs/" in n["filename"])


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


TLS_ECHO = Path(__file__).parent / "tls_echo_filter.py"


def test_the_host_serves_the_tls_attributes_envoy_serves(certs: Path, backend: UpstreamServer) -> None:
    """The same listeners with a filter that copies every connection.* attribute into request
    headers: what Envoy serves over mTLS, TLS without a client certificate and plaintext equals
    what the host serves for Tls(...) built from the same certificates, and for no Tls (and so do
    the connection manager's x-forwarded-proto and the filter-added headers)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from proxywasm_host import Host, Tls

    echo = build_cached(TLS_ECHO)

    def use_echo(config: dict[str, Any]) -> None:
        with_test_listeners(certs)(config)
        for listener in config["static_resources"]["listeners"]:
            for node in walk(listener):
                if node.get("name") == "envoy.filters.http.wasm":
                    plugin = node["typed_config"]["config"]
                    plugin["vm_config"]["code"]["local"]["filename"] = str(echo)
                    plugin.pop("configuration", None)

    def attributes(headers: Any) -> dict[str, str | None]:
        return {k: v for k, v in headers if k.startswith("x-") and k != "x-request-id" and not k.startswith("x-env")}

    config = envoy_config("identity_policy", clusters={"backend": backend.port}, change=use_echo)
    cert = x509.load_pem_x509_certificate((certs / "frontend.pem").read_bytes())
    host = Host.load(echo)
    digest = cert.fingerprint(hashes.SHA256()).hex()
    frontend = Tls(peer_uri_sans=("spiffe://cluster.local/ns/web/sa/frontend",),
                   peer_subject=cert.subject.rfc4514_string(), peer_sha256_digest=digest)  # fmt: skip
    cases = [("main", "frontend", frontend), ("tls_without_client_certificate", None, Tls()), ("plaintext", None, None)]
    with Envoy(config) as proxy:
        for listener, client, tls in cases:
            backend.clear()
            assert request(proxy, certs, client, "GET", "/", listener=listener)[0] == 200
            in_envoy = attributes(backend.requests[-1].headers)
            upstream = host.request("GET", "/", tls=tls).upstream_request
            assert upstream is not None
            assert attributes(upstream.headers) == in_envoy, listener
