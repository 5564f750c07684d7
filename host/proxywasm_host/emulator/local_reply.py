"""How Envoy builds a local reply (``Http::Utility::sendLocalReply``), from a filter's
``proxy_send_local_response`` or from Envoy itself (413, 503, 504 ...).

* ``:status``, then the filter's extra headers, then ``content-length`` and a ``text/plain``
  content-type unless the filter chose one; an empty body drops both.
* A HEAD request gets the headers only, ``content-length`` included.
* A gRPC request (``content-type: application/grpc...``) gets a trailers-only answer: HTTP 200,
  ``content-type: application/grpc``, ``grpc-status`` (the filter's, else mapped from the HTTP
  status as Envoy's ``Grpc::Utility::httpToGrpcStatus`` maps it) and the body percent-encoded in
  ``grpc-message``; no body.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import hide_host_frames
from .headers import HeaderMap

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

Pairs = list[tuple[bytes, bytes]]

# Grpc::Utility::httpToGrpcStatus
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
GRPC_UNKNOWN = 2
_GRPC_MAX_KNOWN = 16


def is_grpc_request(headers: HeaderMap) -> bool:
    """``Grpc::Common::hasGrpcContentType``."""
    ctype = headers.get(b"content-type")
    if ctype is None:
        return False
    return ctype == b"application/grpc" or ctype.startswith((b"application/grpc+", b"application/grpc;"))


def grpc_status_for(http_status: int) -> int:
    return _HTTP_TO_GRPC.get(http_status, GRPC_UNKNOWN)


def _percent_encode(text: bytes) -> bytes:
    """``Http::Utility::PercentEncoding::encode``: bytes outside printable ASCII and '%' as %XX."""
    out = bytearray()
    for byte in text:
        if byte < 0x20 or byte >= 0x7F or byte == 0x25:
            out += b"%%%02X" % byte
        else:
            out.append(byte)
    return bytes(out)


@dataclass
class LocalReply:
    """A local reply ready to encode: headers, and body (``None``: the headers end the stream)."""

    headers: HeaderMap
    body: bytes | None
    details: str


def build(
    code: int, body: bytes, extra_headers: Pairs, grpc_status: int | None, *, is_grpc: bool, is_head: bool,
    details: str,
) -> LocalReply:  # fmt: skip
    """The reply Envoy sends for ``sendLocalReply(code, body, modify_headers, grpc_status)``.
    ``grpc_status`` outside 0..16 counts as unset (SDKs pass -1 for "none")."""
    headers = HeaderMap([(":status", str(code))])
    for key, value in extra_headers:
        headers.add(key, value)
    if grpc_status is not None and not 0 <= grpc_status <= _GRPC_MAX_KNOWN:
        grpc_status = None
    if is_grpc:
        headers.set_in_place(":status", "200")
        headers.replace(b"content-type", b"application/grpc")
        if headers.get(b"grpc-status") is None:
            headers.add(b"grpc-status", str(grpc_status if grpc_status is not None else grpc_status_for(code)))
        if body and not is_head:
            headers.add(b"grpc-message", _percent_encode(body))
        headers.remove(b"content-length")
        return LocalReply(headers, None, details)
    if body:
        headers.replace(b"content-length", str(len(body)))
        if headers.get(b"content-type") is None:
            headers.add(b"content-type", b"text/plain")
    else:
        headers.remove(b"content-length")
        headers.remove(b"content-type")
    if is_head:
        return LocalReply(headers, None, details)
    return LocalReply(headers, body or None, details)
