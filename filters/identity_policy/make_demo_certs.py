"""Demo certificates for envoy.yaml: a CA, the server's certificate (127.0.0.1 and localhost) and
client certificates whose URI SAN is a SPIFFE ID, as a mesh's workloads have. For trying the filter
out only (in a mesh the certificates come from the mesh's CA).

    pip install cryptography
    python filters/identity_policy/make_demo_certs.py [DIRECTORY]    # default: filters/identity_policy/certs
    curl --cacert certs/ca.pem --cert certs/frontend.pem --key certs/frontend.key https://127.0.0.1:18443/api/

This runs outside Envoy (it is not part of the filter's module).
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: client name -> its SPIFFE ID (None: a certificate with a DNS SAN only, no identity)
CLIENTS: dict[str, str | None] = {
    "frontend": "spiffe://cluster.local/ns/web/sa/frontend",
    "prometheus": "spiffe://cluster.local/ns/monitoring/sa/prometheus",
    "stranger": "spiffe://cluster.local/ns/web/sa/stranger",
    "no-identity": None,
}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def make(directory: Path, clients: dict[str, str | None] = CLIENTS) -> None:
    """Write ca.pem, server.pem/.key and <client>.pem/.key into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate("identity_policy demo CA", ca_key, None, [], None)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server_sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _certificate("localhost", server_key, (ca, ca_key), server_sans, ExtendedKeyUsageOID.SERVER_AUTH)
    _write(directory, "server", server, server_key)
    for client, identity in clients.items():
        key = _key()
        sans: list[x509.GeneralName] = (
            [x509.UniformResourceIdentifier(identity)] if identity else [x509.DNSName(f"{client}.example")]
        )
        _write(directory, client, _certificate(client, key, (ca, ca_key), sans, ExtendedKeyUsageOID.CLIENT_AUTH), key)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "certs"
    make(target)
    print(f"wrote {', '.join(sorted(p.name for p in target.iterdir()))} to {target}")
