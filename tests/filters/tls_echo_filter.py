"""A filter that copies every ``connection.*`` attribute Envoy serves for TLS into request headers
(hex, or ``<none>`` for NOT_FOUND): the host's ``Tls`` connections are checked against Envoy's with
it (tests/host/test_tls_attributes.py, tests/filters/test_identity_policy_envoy.py)."""

import proxywasm
from proxywasm import HttpContext, properties

NAMES = (
    "mtls",
    "uri_san_peer_certificate",
    "dns_san_peer_certificate",
    "subject_peer_certificate",
    "sha256_peer_certificate_digest",
    "tls_version",
    "subject_local_certificate",
    "dns_san_local_certificate",
    "requested_server_name",
)


@proxywasm.register
class Echo(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        for name in NAMES:
            value = properties.get("connection", name)
            headers["x-" + name.replace("_", "-")] = "<none>" if value is None else value.hex()
