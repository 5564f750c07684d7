"""Plain data exchanged with test-provided handlers: upstream requests/responses and callouts."""

from __future__ import annotations

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
    """What reached the upstream (or an ``http_call`` target): headers as pairs, pseudo headers included."""

    method: str
    path: str
    headers: Pairs
    body: bytes = b""
    trailers: Pairs = field(default_factory=list)
    cluster: str = ""

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


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


def to_response(value: Any) -> Response:
    """Handlers may return a Response, an int status, bytes (200 with body) or (status, headers, body[, trailers])."""
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
