"""The HTTP/1 side of Envoy around the filter chain: how the downstream codec and the connection
manager hand a request to the filters, how the router's upstream codec hands them a response, and
what the downstream codec writes back to the client.

Rules (each checked against Envoy 1.40 by the differential suite):

* Request headers arrive as ``:authority`` (from ``host``), ``:path``, ``:method``, ``:scheme``,
  then the client's headers in order, then the connection manager's ``x-forwarded-proto`` and
  ``x-request-id`` when absent. A request's ``transfer-encoding`` never reaches the filters.
* Header values lose the spaces and tabs around them (the client's, and the upstream's in a
  response), as the codec parses them off the wire.
* A body arrives as one data frame with ``end_stream=false`` and then an empty frame with
  ``end_stream=true``. Request trailers reach the filters only when the listener enables HTTP/1
  trailers (``http_protocol_options.enable_trailers``); by default they are dropped and the body
  still ends with an empty ``end_stream=true`` frame.
* An upstream response without a body (HEAD, 204, 304, ``content-length: 0``) ends on its headers.
  The filters see an upstream's ``transfer-encoding`` where it stood; the downstream codec drops it
  and writes its own framing header after all others (``transfer-encoding: chunked`` when the
  response has a body and no ``content-length``).
* The client gets ``date`` (when absent) and ``server: envoy``; ``content-length: 0`` for a bodiless
  response that has neither length nor chunking (never for 1xx, 204 or 304); no body at all for
  HEAD, 1xx, 204 and 304.
* Headers Envoy cannot send (:func:`refused_header`): on a request (the router's, or a callout's),
  Envoy's upstream codec refuses to encode it and the router answers a local 503 whose body says
  which header; the upstream sees nothing. On a response, the downstream codec writes them as they
  are: a CR or LF in a value starts a new header line at the client (header injection), and the
  client's parser decides what the rest means (:func:`client_response`).
"""

from __future__ import annotations

import http.client
import io
import json
import random
import re
import time
import uuid
from dataclasses import dataclass

from ..errors import hide_host_frames
from .headers import HeaderMap, response_status

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

Frames = list[tuple[bytes, bool]]


@dataclass
class Message:
    """One direction of an exchange as a codec hands it to the filter chain."""

    headers: HeaderMap
    frames: Frames  # data frames (bytes, end_stream)
    trailers: HeaderMap | None  # delivered trailers (the stream ends with them)

    @property
    def headers_end_stream(self) -> bool:
        return not self.frames and self.trailers is None


def _frames(body: bytes, chunked: bool, trailers: HeaderMap | None) -> Frames:
    if not body and not chunked:
        return []
    frames: Frames = [(body, False)] if body else []
    if trailers is None:
        frames.append((b"", True))
    return frames


#: The request methods Envoy 1.40's HTTP/1 codec (Balsa) accepts; any other token (``BREW``,
#: ``get``, ``M-SEARCH``) is answered 400 by the codec before a stream or a filter exists
#: (checked in Envoy by the differential suite). QUERY is refused later and differently: not modelled.
METHODS = frozenset(
    "ACL BIND CHECKOUT CONNECT COPY DELETE GET HEAD LINK LOCK MERGE MKACTIVITY MKCALENDAR MKCOL MOVE MSEARCH "
    "NOTIFY OPTIONS PATCH POST PROPFIND PROPPATCH PURGE PUT REBIND REPORT SEARCH SOURCE SUBSCRIBE TRACE UNBIND "
    "UNLINK UNLOCK UNSUBSCRIBE".split()
)
CODEC_ERROR_BODY = b"Bad Request"


def codec_error_headers(time_ns: int) -> list[tuple[str, str]]:
    """What Envoy's HTTP/1 codec writes for a request it cannot parse (400, then it closes)."""
    return [
        ("content-length", str(len(CODEC_ERROR_BODY))),
        ("content-type", "text/plain"),
        ("date", http_date(time_ns).decode()),
        ("server", "envoy"),
        ("connection", "close"),
    ]


def request_message(
    method: str,
    path: str,
    authority: str,
    headers: HeaderMap,
    body: bytes,
    trailers: HeaderMap | None,
    *,
    trailers_enabled: bool = False,
    scheme: str = "http",
) -> Message:
    """What the downstream codec and the connection manager hand to the first filter. ``headers``
    are the client's own (a ``host`` header stands for ``:authority``); ``scheme`` is ``https`` on
    a TLS connection (``:scheme`` and ``x-forwarded-proto``)."""
    req = HeaderMap([(":authority", authority), (":path", path), (":method", method), (":scheme", scheme)])
    chunked = False
    for k, v in as_parsed(headers):
        if k == b"host":
            req.set_in_place(":authority", v)
        elif k == b"transfer-encoding":
            chunked = chunked or v.lower() == b"chunked"
        elif k[:1] == b":":
            req.set_in_place(k, v)
        else:
            req.add(k, v)
    if body and not chunked and req.get(b"content-length") is None:
        req.add(b"content-length", str(len(body)))
    if trailers is not None and not chunked:
        chunked = True  # only a chunked body can carry trailers
        req.remove(b"content-length")
    if req.get(b"x-forwarded-proto") is None:
        req.add(b"x-forwarded-proto", scheme)
    if req.get(b"x-request-id") is None:
        req.add(b"x-request-id", str(uuid.UUID(int=random.getrandbits(128), version=4)))
    delivered = trailers if (trailers is not None and trailers_enabled) else None
    return Message(req, _frames(body, chunked, delivered), delivered)


#: A header name Envoy can send: an HTTP token (Envoy's proxy-wasm host lower-cases names first).
#: These two rules are also what the SDK refuses at a header write (module.c header_ok; its native
#: twin, native/proxywasm_module.py, uses them from here).
BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-zA-Z]")
#: A value Envoy can send has no control character other than HT (bytes >= 0x80 are fine).
BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def refused_header(headers: HeaderMap) -> str | None:
    """Why Envoy 1.40's upstream codec refuses to send these request headers (its message, which
    becomes the 503's body), or None. Checked against Envoy by the differential suite: any control
    character but HT in a value (``invalid header value for: <name>``), a name that is not an HTTP
    token (``invalid header name: <name>``, the name escaped as in a JSON string); the first
    offending header counts. A pseudo header's name is ``:`` and a token; its value is checked too,
    but for ``:scheme``."""
    for key, value in headers.pairs():
        if key[:1] == b":":
            if len(key) == 1 or BAD_NAME.search(key[1:]):  # ":", "::", ":x y"
                return f"invalid header name: {json.dumps(key.decode('latin-1'))[1:-1]}"
            if key != b":scheme" and BAD_VALUE.search(value):
                return f"invalid header value for: {key.decode('latin-1')}"
            continue
        if not key or BAD_NAME.search(key):
            return f"invalid header name: {json.dumps(key.decode('latin-1'))[1:-1]}"  # Envoy escapes it so
        if BAD_VALUE.search(value):
            return f"invalid header value for: {key.decode('latin-1')}"
    return None


def keeps_connection(headers: HeaderMap) -> bool:
    """Whether an upstream's answer leaves its connection open for the next request (HTTP/1.1:
    unless a ``connection`` header lists ``close``)."""
    tokens = (token.strip(b" \t").lower() for value in headers.get_all(b"connection") for token in value.split(b","))
    return b"close" not in tokens


class ConnectionPools:
    """The idle upstream HTTP/1 connections of one worker, per cluster (the route's included). A
    request takes an idle one, or has a new one opened (ready one event-loop turn later); a complete
    answer that keeps its connection gives it back; a timeout, a reset or a codec refusal closes it.
    What it decides: whether Envoy's codec refuses request headers at once (an idle connection was
    ready) or later (see :func:`refused_header`; checked in Envoy by the differential suite). gRPC
    clusters speak HTTP/2: one connection, opened by the first call, carries every later call."""

    def __init__(self) -> None:
        self.idle: dict[str, int] = {}
        self._h2_up: set[str] = set()  # gRPC clusters with an HTTP/2 connection up (it stays: multiplexed)
        self._h2_connecting: set[str] = set()

    def h2_ready(self, cluster: str) -> bool:
        """A gRPC call to ``cluster`` finds its HTTP/2 connection up (so Envoy's codec refuses bad
        metadata inside the call, as with an idle HTTP/1 connection)."""
        return cluster in self._h2_up

    def h2_open(self, cluster: str) -> None:
        """A gRPC call goes to ``cluster``: without a connection, one is opened; it is up once the
        event loop has turned (see :meth:`h2_connected`)."""
        if cluster not in self._h2_up:
            self._h2_connecting.add(cluster)

    def h2_connected(self) -> None:
        """The event loop turned: the connections being opened are up."""
        self._h2_up |= self._h2_connecting
        self._h2_connecting.clear()

    def take(self, cluster: str) -> bool:
        """A request goes to ``cluster``: whether an idle connection was ready for it at once."""
        count = self.idle.get(cluster, 0)
        if count:
            self.idle[cluster] = count - 1
        return count > 0

    def give_back(self, cluster: str, answer: HeaderMap) -> None:
        """The request's answer is complete: its connection goes back to the pool if it stays open."""
        if keeps_connection(answer):
            self.idle[cluster] = self.idle.get(cluster, 0) + 1


def refused_details(message: str) -> str:
    """The response code details of the router's 503 for :func:`refused_header`'s ``message``."""
    return "filter_removed_required_request_headers{" + message.replace(" ", "_") + "}"


def _as_client_reads(raw: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """The header lines the downstream codec writes, as an HTTP/1 client reads them back. Envoy
    writes names and values as they are; where a value carries a CR or LF or a name is not a token,
    what the client makes of the lines is up to its parser: here Python's ``http.client``'s (which
    stops reading headers at a line that is not one: e.g. a name with a space). Only the headers
    are read back: the body's framing stays what Envoy's map says."""
    if not any(b"\r" in v or b"\n" in v or BAD_NAME.search(k) for k, v in raw):
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
    block = b"".join(k + b": " + v + b"\r\n" for k, v in raw) + b"\r\n"
    return list(http.client.parse_headers(io.BytesIO(block)).items())


def as_parsed(headers: HeaderMap) -> list[tuple[bytes, bytes]]:
    """Header lines as Envoy's HTTP/1 codec parses them off the wire: the whitespace around a
    value (SP, HT) is not part of it."""
    return [(k, v.strip(b" \t")) for k, v in headers.pairs()]


#: The pseudo headers an HTTP/1 request carries upstream (the request line and host); the codec
#: drops any other a filter added (``:foo``: seen in Envoy 1.40, differential suite).
PSEUDO_SENT = frozenset((b":method", b":path", b":authority", b":scheme"))


def upstream_request_headers(headers: HeaderMap, body_forwarded: bool, route_timeout_ms: int) -> HeaderMap:
    """What the router's codec sends upstream: the router's timeout header after the filters, and
    chunking for a body without a length."""
    sent = HeaderMap([(k, v) for k, v in headers.pairs() if k[:1] != b":" or k in PSEUDO_SENT])
    sent.add(b"x-envoy-expected-rq-timeout-ms", str(route_timeout_ms))
    if body_forwarded and sent.get(b"content-length") is None:
        sent.add(b"transfer-encoding", b"chunked")
    return sent


def response_message(
    request_method: str, status: int, headers: HeaderMap, body: bytes, trailers: HeaderMap | None,
    service_time_ms: int,
) -> Message:  # fmt: skip
    """An upstream answer as the router's codec hands it to the filters (router headers added)."""
    resp = HeaderMap([(":status", str(status))])
    chunked = False
    for k, v in as_parsed(headers):
        if k == b"transfer-encoding":
            chunked = True
        if k != b":status":
            resp.add(k, v)
    no_body = request_method == "HEAD" or status in (204, 304) or 100 <= status < 200
    if no_body:
        body, chunked = b"", False
    elif not chunked and resp.get(b"content-length") is None and (body or trailers is not None):
        chunked = True  # the upstream framed its body by chunks
    resp.add(b"x-envoy-upstream-service-time", str(service_time_ms))
    # HTTP/1 upstream trailers are dropped unless the cluster enables them (it does not here).
    return Message(resp, _frames(body, chunked, None), None)


_DATE_CACHE: list[tuple[int, bytes]] = [(-1, b"")]


def http_date(time_ns: int) -> bytes:
    """The ``date`` header for a time (Envoy's date provider also formats it once per second)."""
    second = time_ns // 1_000_000_000
    cached = _DATE_CACHE[0]
    if cached[0] != second:
        cached = (second, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(second)).encode())
        _DATE_CACHE[0] = cached
    return cached[1]


@dataclass
class ClientResponse:
    """What the client reads: status, headers without pseudo headers, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def client_response(
    headers: HeaderMap, body: bytes, *, request_method: str, headers_only: bool, close_connection: bool,
    time_ns: int,
) -> ClientResponse:  # fmt: skip
    """The connection manager's last touches and the downstream codec's framing. ``headers_only``:
    the headers ended the stream (no body frame followed)."""
    final = HeaderMap(headers)
    if final.get(b"date") is None:
        final.add(b"date", http_date(time_ns))
    final.set_in_place("server", "envoy")
    bodiless = not has_body(final)
    status = response_status(final) or 0
    if close_connection:
        final.add(b"connection", b"close")
    # The codec writes its own framing header last, after everything the connection manager set (a
    # transfer-encoding in the map, e.g. the upstream's, goes: the codec decides the framing).
    final.remove(b"transfer-encoding")
    if final.get(b"content-length") is None and not bodiless:
        if not headers_only:
            final.add(b"transfer-encoding", b"chunked")
        elif request_method != "HEAD":
            final.add(b"content-length", b"0")
    body = b"" if (bodiless or request_method == "HEAD") else read_body(final, body)[0]
    return ClientResponse(status, _as_client_reads([(k, v) for k, v in final.pairs() if k[:1] != b":"]), body)


def has_body(headers: HeaderMap) -> bool:
    """Whether a response with this status carries a body on the wire at all (not 1xx, 204, 304)."""
    status = response_status(headers) or 0
    return not (status < 200 or status in (204, 304))


def read_body(headers: HeaderMap, body: bytes) -> tuple[bytes, int | None]:
    """What an HTTP/1 peer reads of ``body`` under these headers, and the ``content-length`` it falls
    short of (``None`` if it does not). The peer reads exactly ``content-length`` bytes: Envoy does
    not fix the header after a filter rewrote the body, so a longer body gets cut, and with a shorter
    one the peer waits for the rest forever."""
    raw = headers.get(b"content-length")
    if raw is None or not raw.isdigit():
        return body, None
    length = int(raw)
    return body[:length], (length if len(body) < length else None)
