"""Plain data exchanged with test-provided handlers: upstream requests/responses and callouts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Pairs = list[tuple[str, str]]


def _s(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def pairs_of(items: Any) -> Pairs:
    if items is None:
        return []
    if isinstance(items, dict):
        items = items.items()
    return [(_s(k), _s(v)) for k, v in items]


@dataclass
class Request:
    """What reached the upstream (or an ``http_call`` target): headers as pairs, pseudo headers included.

    ``complete`` is False when the stream ended (a local reply, a reset) after the router had sent the
    headers but before the request was whole: Envoy sends headers upstream as soon as the filter
    chain lets them go, so the upstream saw these headers and this part of the body, then a reset.
    """

    method: str
    path: str
    headers: Pairs
    body: bytes = b""
    trailers: Pairs = field(default_factory=list)
    cluster: str = ""
    complete: bool = True

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


@dataclass(frozen=True)
class Route:
    """A route of the listener's route table, matched by ``:path`` prefix in order, before the
    catch-all route to the upstream (``name`` ``""``, no metadata). ``metadata`` is the route's
    ``metadata.filter_metadata``: filter name -> a JSON-like dict (a ``google.protobuf.Struct``).
    The filter sees them as ``xds.route_name`` and ``xds.route_metadata`` (the SDK's
    ``HttpContext.route_config`` reads the entry named by the plugin's name)."""

    prefix: str = "/"
    name: str = ""
    metadata: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Tls:
    """The downstream connection is TLS, with a client certificate when ``peer_uri_sans``,
    ``peer_dns_sans`` or ``peer_subject`` are given (mTLS). The filter sees Envoy 1.40's
    ``connection.*`` attributes: ``mtls`` (true only with a client certificate),
    ``uri_san_peer_certificate`` / ``dns_san_peer_certificate`` (the first SAN of that kind;
    NOT_FOUND when the certificate has none), ``subject_peer_certificate`` (``CN=frontend``),
    ``sha256_peer_certificate_digest`` (hex), ``tls_version`` and the listener certificate's
    ``subject_local_certificate`` / ``dns_san_local_certificate`` (as read in Envoy by
    tests/filters/test_identity_policy_envoy.py's TLS listener)."""

    peer_uri_sans: tuple[str, ...] = ()
    peer_dns_sans: tuple[str, ...] = ()
    peer_subject: str = ""
    peer_sha256_digest: str = ""
    version: str = "TLSv1.3"
    local_subject: str = "CN=localhost"
    local_dns_sans: tuple[str, ...] = ("localhost",)

    @property
    def mtls(self) -> bool:
        return bool(self.peer_uri_sans or self.peer_dns_sans or self.peer_subject)

    def attributes(self) -> dict[str, Any]:
        """``connection.*`` as Envoy serves them on this connection."""
        out: dict[str, Any] = {"mtls": self.mtls, "tls_version": self.version, "requested_server_name": ""}
        if self.local_subject:
            out["subject_local_certificate"] = self.local_subject
        if self.local_dns_sans:
            out["dns_san_local_certificate"] = self.local_dns_sans[0]
        out["subject_peer_certificate"] = self.peer_subject  # "" without a client certificate, as Envoy
        if self.mtls:
            if self.peer_uri_sans:
                out["uri_san_peer_certificate"] = self.peer_uri_sans[0]
            if self.peer_dns_sans:
                out["dns_san_peer_certificate"] = self.peer_dns_sans[0]
            if self.peer_sha256_digest:
                out["sha256_peer_certificate_digest"] = self.peer_sha256_digest
        return out


@dataclass
class Response:
    """A response from an upstream/callout handler, or the one the downstream client got."""

    status: int = 200
    headers: Pairs = field(default_factory=list)
    body: bytes = b""
    trailers: Pairs = field(default_factory=list)
    upstream_request: Request | None = None
    local_reply: bool = False
    details: str = ""
    logs: list[tuple[int, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


class _Outcome:
    """A cluster handler's answer that is not a response (see :data:`SLOW`, :data:`RESET`, :data:`UNREACHABLE`).

    An outcome is also a handler that answers every call with itself: ``clusters={"down": UNREACHABLE}``
    is a cluster whose hosts refuse every connection. Given so, :data:`UNREACHABLE` also ends a gRPC
    stream as soon as Envoy's connection attempt fails, before the filter half-closes it, as Envoy
    1.40 does; a handler function is asked about a stream only once the filter half-closed it."""

    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.__doc__ = description

    def __repr__(self) -> str:
        return self.name

    def __call__(self, request: object) -> _Outcome:
        return self


#: A callout handler's answer: the cluster does not answer in time; the call gets Envoy's 504
#: ``upstream request timeout`` once its ``timeout_ms`` passed on the host clock (``host.request``
#: moves the clock there by itself when nothing else can happen). From a gRPC handler: the unary
#: call ends UNAVAILABLE ``upstream request timeout{response_timeout}``, as Envoy 1.40 reports it.
SLOW = _Outcome("SLOW", "the cluster answers after the call's timeout: Envoy delivers a 504")
#: A callout handler's answer: the cluster resets the connection before answering; Envoy delivers
#: a synthetic 503 (``... reset reason: connection termination``).
RESET = _Outcome("RESET", "the connection is reset before an answer: Envoy delivers a 503")
#: A callout handler's answer: the answer starts but the connection breaks before it is complete;
#: Envoy calls ``on_http_call_response`` with no headers, body or trailers.
CUT_OFF = _Outcome("CUT_OFF", "the answer breaks off: Envoy delivers no response at all")
#: A callout handler's answer: the cluster cannot be reached; Envoy answers with a synthetic 503
#: (a handler raising ``ConnectionError`` means the same). From a gRPC handler: the call ends
#: UNAVAILABLE with Envoy's connect error and its details.
UNREACHABLE = _Outcome("UNREACHABLE", "no host of the cluster can be reached: Envoy delivers a 503")


def to_response(value: Any) -> Response:
    """Handlers may return a Response, an int status, bytes or str (200 with that body), or
    ``(status, headers[, body[, trailers]])``; headers are pairs or a dict."""
    if isinstance(value, Response):
        return value
    if isinstance(value, int):
        return Response(status=value)
    if isinstance(value, (bytes, str)):
        return Response(body=value.encode() if isinstance(value, str) else value)
    if isinstance(value, tuple):
        status = int(value[0])
        headers = pairs_of(value[1]) if len(value) > 1 else []
        body = value[2] if len(value) > 2 else b""
        trailers = pairs_of(value[3]) if len(value) > 3 else []
        return Response(status, headers, body.encode() if isinstance(body, str) else bytes(body), trailers)
    raise TypeError(f"cannot turn {value!r} into a Response")


@dataclass
class GrpcReply:
    """Reply of a gRPC handler: a message (or None), a status, metadata."""

    message: bytes | None = b""
    status: int = 0
    status_message: str = ""
    initial_metadata: Pairs = field(default_factory=list)
    trailing_metadata: Pairs = field(default_factory=list)
