"""A stream on a TLS connection (``Host.request(..., tls=Tls(...))``) serves Envoy 1.40's
``connection.*`` attributes for the peer certificate (values as read in Envoy over mTLS by
tests/filters/test_identity_policy_envoy.py); a plaintext stream serves only ``mtls`` false and an
empty SNI."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxywasm_host import Tls
from proxywasm_host.pytest_plugin import HostFactory

FILTER = Path(__file__).resolve().parents[1] / "filters" / "tls_echo_filter.py"

FRONTEND = Tls(peer_uri_sans=("spiffe://cluster.local/ns/web/sa/frontend",), peer_subject="CN=frontend",
               peer_sha256_digest="ab" * 32)  # fmt: skip


@pytest.fixture
def source() -> Path:
    return FILTER


def seen(response: object, name: str) -> bytes | None:
    value = response.upstream_request.header("x-" + name.replace("_", "-"))  # type: ignore[attr-defined]
    return None if value == "<none>" else bytes.fromhex(value)


def test_mtls_connection_attributes(proxywasm_host: HostFactory, proxywasm_mode: str, source: Path) -> None:
    response = proxywasm_host(source, mode=proxywasm_mode).request("GET", "/", tls=FRONTEND)
    assert seen(response, "mtls") == b"\x01"
    assert seen(response, "uri_san_peer_certificate") == b"spiffe://cluster.local/ns/web/sa/frontend"
    assert seen(response, "dns_san_peer_certificate") is None  # the certificate has no DNS SAN
    assert seen(response, "subject_peer_certificate") == b"CN=frontend"
    assert seen(response, "sha256_peer_certificate_digest") == b"ab" * 32
    assert seen(response, "tls_version") == b"TLSv1.3"
    assert seen(response, "subject_local_certificate") == b"CN=localhost"
    assert seen(response, "dns_san_local_certificate") == b"localhost"
    assert seen(response, "requested_server_name") == b""


def test_tls_without_a_client_certificate_is_not_mtls(
    proxywasm_host: HostFactory, proxywasm_mode: str, source: Path
) -> None:
    response = proxywasm_host(source, mode=proxywasm_mode).request("GET", "/", tls=Tls())
    assert seen(response, "mtls") == b"\x00"
    assert seen(response, "uri_san_peer_certificate") is None
    assert seen(response, "tls_version") == b"TLSv1.3"


def test_plaintext_serves_no_tls_attributes(proxywasm_host: HostFactory, proxywasm_mode: str, source: Path) -> None:
    response = proxywasm_host(source, mode=proxywasm_mode).request("GET", "/")
    assert seen(response, "mtls") == b"\x00"
    assert seen(response, "requested_server_name") == b""
    assert seen(response, "tls_version") is None
    assert seen(response, "uri_san_peer_certificate") is None
